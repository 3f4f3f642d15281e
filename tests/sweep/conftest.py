"""Fixtures and helpers the sweep tests share: a tiny random BERT with its feature cache, sweep
configs over it, the sweep-driver helpers (start a sweep script, SIGKILL it at a chosen point,
``--resume`` it to the end). The helpers are
plain functions: import them with ``from .conftest import ...``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


def unique_name(stem: str) -> str:
    """A sweep name no other test run (here or another checkout's) uses at the same time."""
    import uuid

    return f"{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny random BERT and a feature-cache folder shared by the sweep tests."""
    from counterarg.nn.testing import make_tiny_encoder

    root = tmp_path_factory.mktemp("tiny")
    return {"encoder": make_tiny_encoder(root / "bert"), "cache_dir": str(root / "cache")}


def sweep_base(tiny, **kw):
    return {
        "encoder": tiny["encoder"],
        "cache_dir": tiny["cache_dir"],
        "corpus": None,
        "device": "cpu",
        "max_length": 32,
        **kw,
    }


def tiny_sweep_args(
    tiny,
    storage: str | Path,
    name: str,
    epochs: int,
    *,
    strategies: str = "fixed;random",
    seeds: str = "0",
    num_cpus: int | None = 1,
    address: str | None = None,
    cache: bool = True,
    sets: tuple[str, ...] = (),
) -> list[str]:
    """A sweep script's command line over the tiny BERT (the ``reference`` method, CPU, 32 tokens):
    the form every driver test starts from. ``cache=False`` leaves the feature cache to each node's
    ``$COUNTERARG_CACHE`` (a cluster's nodes); ``sets`` adds ``--set FIELD=V`` items."""
    args = [*(("--address", address) if address else ()), "--storage", str(storage), "--name", name]
    args += ["--methods", "reference", "--strategies", strategies, "--seeds", seeds]
    args += ["--num-cpus", str(num_cpus)] if num_cpus is not None else []
    args += ["--encoder", tiny["encoder"], "--epochs", str(epochs)]
    fields = ([f"cache_dir={tiny['cache_dir']}"] if cache else []) + ["device=cpu", "max_length=32", *sets]
    return args + [x for field in fields for x in ("--set", field)]


def trial_dirs(exp: Path) -> list[Path]:
    return sorted(p for p in exp.glob("trial_*") if p.is_dir())


def remote_rows(s3_server, bucket: str, prefix: str) -> dict[str, list[dict]]:
    """Trial folder -> the rows of its result.json in the bucket under ``prefix`` (a torn line skipped)."""
    client = s3_server.client()
    out: dict[str, list[dict]] = {}
    for key in s3_server.keys(bucket, prefix):
        if key.endswith("/result.json"):
            rows = []
            for line in client.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass  # a line cut by a kill
            out[key[len(prefix) :].split("/")[0]] = [r for r in rows if "epoch" in r]
    return out


def reported_epochs(trial_dir: Path) -> list[int]:
    """Epochs reported to Tune, in order (result.json gets one line per report, resumes append)."""
    f = trial_dir / "result.json"
    if not f.exists():
        return []
    out = []
    for line in f.read_text().splitlines():
        try:
            out.append(int(json.loads(line)["epoch"]))
        except (ValueError, KeyError):
            pass  # a line cut by the kill
    return out


def start_driver(args, env, log, script: str = "compare_strategies.py", cwd: Path = REPO):
    """A sweep script (``sweeps/<script>``) as its own process group, run in ``cwd``, output into ``log``."""
    return subprocess.Popen(
        [PY, str(REPO / "sweeps" / script), *args],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_process_group(proc):
    """SIGKILL the driver's process group: Ray processes a killed local driver left behind."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_when(
    ready: Callable[[], bool],
    args,
    env: dict,
    log_path: Path,
    timeout: float = 240,
    poll_s: float = 0.05,
    kill_group: bool = False,
    script: str = "compare_strategies.py",
    cwd: Path = REPO,
) -> subprocess.Popen:
    """Start a driver and SIGKILL it (the driver only, unless ``kill_group``) once ``ready()``."""
    with open(log_path, "w") as log:
        proc = start_driver(args, env, log, script, cwd)
        try:
            t0 = time.time()
            while not ready():
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.time() - t0 < timeout, "driver never reached the kill point"
                time.sleep(poll_s)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            if kill_group or proc.poll() is None:
                kill_process_group(proc)
    return proc


def resume_to_end(
    args,
    env: dict,
    log_path: Path,
    killed: subprocess.Popen,
    timeout: float = 240,
    script: str = "compare_strategies.py",
    cwd: Path = REPO,
) -> None:
    """``--resume`` to the end, then clear what both drivers' process groups left behind."""
    with open(log_path, "a") as log:
        proc = start_driver([*args, "--resume"], env, log, script, cwd)
        try:
            assert proc.wait(timeout=timeout) == 0, log_path.read_text()[-5000:]
        finally:
            kill_process_group(proc)
            kill_process_group(killed)


def kill_and_resume(
    args,
    exp: Path,
    epochs: int,
    env: dict,
    log_path: Path,
    n_trials: int,
    kill_group_before_resume: bool = False,
    timeout: float = 240,
):
    """Start a driver, SIGKILL it once one trial finished and another is mid-way, resume to the
    end; check no finished trial reran and each unfinished trial lost at most one epoch."""

    def ready() -> bool:
        eps = [reported_epochs(d) for d in trial_dirs(exp)]
        return any(e and max(e) == epochs for e in eps) and any(e and 2 <= max(e) < epochs - 2 for e in eps)

    killed = kill_when(ready, args, env, log_path, timeout, kill_group=kill_group_before_resume)
    at_kill = {d.name: reported_epochs(d) for d in trial_dirs(exp)}
    resume_to_end(args, env, log_path, killed, timeout)
    after = {d.name: reported_epochs(d) for d in trial_dirs(exp)}
    assert len(after) == n_trials
    for name, eps in after.items():
        before = at_kill.get(name, [])
        assert max(eps) == epochs, (name, eps)
        if before and max(before) == epochs:
            assert eps == before, f"finished trial {name} reran: {before} -> {eps}"
        elif before:
            # rows after the kill restart at the epoch after the last checkpoint Tune kept:
            # at most one epoch is trained twice.
            resumed_from = eps[len(before)]
            assert resumed_from >= max(before), (name, before, eps)
            assert resumed_from > 1, f"{name} restarted from scratch: {eps}"
    summary = (exp / "summary.md").read_text()
    assert f"Trials: {n_trials} (0 errored, 0 unfinished)" in summary
    return at_kill, after


def run_smoke_test(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``sweeps/<script> --smoke-test --num-cpus 2 ARGS`` run to its end in the repository; fails the
    test with the tail of its output when it exits non-zero."""
    proc = subprocess.run(
        [PY, str(REPO / "sweeps" / script), "--smoke-test", "--num-cpus", "2", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def sweep_script(name: str):
    """A sweep script's ``main`` (sweeps/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"sweep_{name}", REPO / "sweeps" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


# ----------------------------------------------------------------------------- races without Ray
def race_metric() -> str:
    from counterarg.config import Config

    return Config().select_metric


def drive_race(searcher, value_of, error=lambda cfg: False) -> list[dict]:
    """Play Tune's part: ask for trials until FINISHED, complete each round's trials with ``value_of``."""
    emitted, n = [], 0
    while True:
        running = []
        while True:
            cfg = searcher.suggest(f"t{n}")
            if cfg in (None, searcher.FINISHED):
                break
            running.append((f"t{n}", cfg))
            emitted.append(cfg)
            n += 1
        if cfg == searcher.FINISHED:
            return emitted
        assert running, "suggest returned None with no trial running"
        for tid, c in running:
            searcher.on_trial_result(tid, {race_metric(): value_of(c) - 0.1, "epoch": 1})
            if error(c):
                searcher.on_trial_complete(tid, error=True)
            else:
                searcher.on_trial_complete(tid, {race_metric(): value_of(c), "epoch": 2})


def _recipe(fields: dict) -> dict:
    """A strategy under the recipe, named as the sweep's builders name it (recipe: fixed 0.2, ...)."""
    from counterarg.analysis.methods import labelled

    return labelled(fields, "recipe")


RACE_STRATEGIES = [_recipe({"schedule": "fixed", "rate": r}) for r in (0.2, 0.5, 0.8)]  # recipe: fixed 0.2 / 0.5 / 0.8


def race_value(cfg):  # fixed 0.8 is far behind; 0.2 and 0.5 cannot be told apart
    return {0.2: 0.6, 0.5: 0.6, 0.8: 0.3}[cfg["rate"]] + 0.01 * ((cfg["seed"] * 7) % 3)


def race_searcher(seeds, first_seeds: int = 3, max_seeds: int = 5):
    """A quiet RaceSearcher over :data:`RACE_STRATEGIES` on the sweep metric (maximised)."""
    from counterarg.sweep.race import RaceOptions, RaceSearcher

    opts = RaceOptions(seeds=tuple(seeds), first_seeds=first_seeds, max_seeds=max_seeds)
    return RaceSearcher(RACE_STRATEGIES, opts, metric=race_metric(), mode="max", verbose=False)
