"""TensorBoard's own server and Debian's Chromium for the dashboard tests: start ``tensorboard`` on
127.0.0.1 over a folder, ask its HTTP endpoints what the page renders, drive the page headless and
save screenshots (``$COUNTERARG_ARTIFACTS`` or ``test-artifacts/`` under the repository)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("COUNTERARG_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("COUNTERARG_CHROMEDRIVER", "/usr/bin/chromedriver")


def artifacts_dir() -> Path:
    """Where screenshots go: ``$COUNTERARG_ARTIFACTS`` or ``<repo>/test-artifacts`` (git-ignored)."""
    out = Path(os.environ.get("COUNTERARG_ARTIFACTS") or REPO / "test-artifacts") / "tensorboard"
    out.mkdir(parents=True, exist_ok=True)
    return out


def no_browser_reason() -> str | None:
    """Why the browser part cannot run here (None: it can): Chromium, chromedriver or selenium missing."""
    for what, path in (("Chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not (Path(path).is_file() or shutil.which(path)):
            return f"no {what} at {path} (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, body: dict | None = None, timeout: float = 30) -> Any:
    """GET (or POST ``body`` as JSON) ``url``; the JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode())


def wait_for(check: Callable[[], Any], what: str, timeout: float = 120, poll: float = 1.0) -> Any:
    """``check()``'s first truthy answer (errors count as not yet); fails naming ``what`` after ``timeout``."""
    t0, last = time.time(), None
    while time.time() - t0 < timeout:
        try:
            got = check()
            if got:
                return got
        except Exception as e:  # the server still starting, a page still loading
            last = e
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last!r})")


@contextmanager
def tensorboard(logdir: Path, log: Path):
    """``tensorboard --logdir logdir --host 127.0.0.1 --port <free>`` for the block; yields its URL
    once every run is loaded (the server reads the folder in the background)."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tensorboard.main",
                "--logdir",
                str(logdir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--reload_interval",
                "2",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: proc.poll() is None and get(f"{url}/data/runs") is not None, f"TensorBoard at {url}", timeout=180
        )
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def hparams_experiment(url: str) -> dict:
    """What the HParams tab renders: the server's answer to the page's own request."""
    return get(f"{url}/data/plugin/hparams/experiment", {"experimentName": "", "hparamsLimit": 1000})


@contextmanager
def chromium(width: int = 1920, height: int = 1080):
    """Debian's headless Chromium through its chromedriver (nothing downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


#: The text of the elements matching a CSS selector, each with the text of its shadow roots: TensorBoard's
#: Polymer dashboards keep their tables and charts inside shadow DOM, out of reach of find_element and
#: of innerText (styles and scripts left out).
DEEP_TEXT = """
const [selector] = arguments, found = [];
function text(node) {
  if (node.nodeType === Node.TEXT_NODE) return node.textContent;
  if (node.nodeType !== Node.ELEMENT_NODE && node.nodeType !== Node.DOCUMENT_FRAGMENT_NODE) return '';
  if (node.tagName === 'STYLE' || node.tagName === 'SCRIPT') return '';
  let out = node.shadowRoot ? text(node.shadowRoot) : '';
  node.childNodes.forEach(c => { out += ' ' + text(c); });
  return out;
}
function walk(root) {
  root.querySelectorAll(selector).forEach(e => found.push(text(e).replace(/\\s+/g, ' ').trim()));
  root.querySelectorAll('*').forEach(e => { if (e.shadowRoot) walk(e.shadowRoot); });
}
walk(document);
return found;
"""


def deep_text(driver, selector: str) -> list[str]:
    """The trimmed texts of every element matching ``selector``, shadow roots included."""
    return driver.execute_script(DEEP_TEXT, selector)
