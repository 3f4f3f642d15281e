"""The documentation where people look: a short README whose links resolve, no page that cites an issue
tracker the repository does not hold, one version, and a CLI reference that shows every flag.

The site itself is built with warnings as errors by ``.ci/run`` (``mkdocs build --strict``), which also
checks the links and anchors between the pages of ``docs/``.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

import pytest

import counterarg

REPO = Path(counterarg.__file__).resolve().parent.parent
ROOT_DOCS = ("README.md", "CONTRIBUTING.md", "CHANGELOG.md")
#: an issue or item of a tracker: "issue 22", "issue-22", "Issue 23.4", "item 6", "items 5 and 8"
ISSUE_CITATION = re.compile(r"\bissues?[ -]#?\d+|\bitems? \d+\b", re.IGNORECASE)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _gen_cli():
    spec = importlib.util.spec_from_file_location("_docs_gen_cli", REPO / "docs" / "gen_cli.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _anchors(markdown: str) -> set[str]:
    """The ids the toc extension gives the headings of a page (its default slugify, code fences skipped)."""
    text = re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)
    return {
        re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", h.replace("`", "")).strip().lower())
        for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.MULTILINE)
    }


def test_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 250, f"README.md has {lines} lines; move sections to docs/ (at most 250)"


@pytest.mark.parametrize("name", ROOT_DOCS)
def test_root_links_resolve(name):
    """Every relative link of a root document names a file of the repository, and its #anchor a heading."""
    text = (REPO / name).read_text(encoding="utf-8")
    text = re.sub(r"`[^`\n]*`", "", re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL))  # code
    bad = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (REPO / path) if path else (REPO / name)
        if not file.exists():
            bad.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text(encoding="utf-8")):
            bad.append(f"{target}: no heading #{anchor} in {path or name}")
    assert not bad, f"{name}: " + "; ".join(bad)


def test_no_doc_cites_an_issue_number():
    """Docs, and the comments and docstrings of the code and tests (this file's examples aside)."""
    code = [p for d in ("counterarg", "tests", "sweeps") for p in sorted((REPO / d).rglob("*.py"))]
    files = [REPO / n for n in ROOT_DOCS] + sorted((REPO / "docs").glob("*.md")) + [REPO / "mkdocs.yml"]
    files += [p for p in code if p.resolve() != Path(__file__).resolve()]
    found = [
        f"{f.relative_to(REPO)}:{i}: {m.group(0)!r}"
        for f in files
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
        for m in ISSUE_CITATION.finditer(line)
    ]
    assert not found, "say what and why instead of citing a tracker the repository does not hold: " + "; ".join(found)


def test_the_citation_pattern_catches_the_forms_used():
    for text in ("issue 22, item 1", "Issue 23.4: the README", "the issue-22 kill loop", "Item 8: each of these"):
        assert ISSUE_CITATION.search(text), text
    for text in ("ray-project/ray#57906", "the eight tasks", "an issue with the cache"):
        assert not ISSUE_CITATION.search(text), text


def test_one_version():
    """pyproject's version is the package's, and the changelog's newest section names its release."""
    declared = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"), re.MULTILINE)
    assert declared and declared.group(1) == counterarg.__version__
    release = re.match(r"\d+\.\d+\.\d+", counterarg.__version__).group(0)
    heading = re.search(r"^## \[(.+?)\](.*)$", (REPO / "CHANGELOG.md").read_text(encoding="utf-8"), re.MULTILINE)
    assert heading and release in heading.group(0), f"CHANGELOG.md's newest section {heading and heading.group(0)!r}"


def test_cli_reference_shows_every_flag():
    """The generated page holds every subcommand of ``counterarg`` and every flag of each, with its help."""
    from counterarg.cli import build_parser

    gen = _gen_cli()
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subs.choices) >= {"train", "evaluate", "rank", "embed", "export", "compare", "bench"}
    for name, sub in subs.choices.items():
        page = gen.render(f"counterarg {name}", sub)
        assert page.startswith(f"## `counterarg {name}`"), page[:80]
        for action in sub._actions:
            for flag in action.option_strings:
                assert f"`{flag}" in page or f", {flag}" in page, f"counterarg {name} {flag} missing from the reference"
            if action.help and action.help is not argparse.SUPPRESS and action.option_strings:
                first_word = re.sub(r"%\(\w+\)s", "", action.help).split()[0]
                assert gen._text(first_word) in page, f"counterarg {name} {action.option_strings}: help missing"


def test_cli_reference_text_shows_literally():
    """Help text with Markdown's special characters shows as written: no table break, tag or emphasis."""
    gen = _gen_cli()
    p = argparse.ArgumentParser(prog="x", description="Writes <storage>/<name>; ``code`` and :func:`f`.")
    p.add_argument("--strategies", help="NAME[:FIELD=V,...] split on '|' or a*b*c; default %(default)s", default="a_b")
    page = gen.render("x", p)
    assert "&lt;storage&gt;/&lt;name&gt;" in page and "`code`" in page and "`f`" in page
    row = next(line for line in page.splitlines() if line.startswith("| `--strategies"))
    assert row.count(" | ") == 1 and "\\|" in row and "a\\*b\\*c" in row and "a\\_b" in row
