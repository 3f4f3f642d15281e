"""The generated reference pages of the documentation site: a mkdocs hook (``hooks:`` in mkdocs.yml).

- ``cli.md``: every command line, rendered from the argparse parsers themselves (``counterarg`` and its
  subcommands in counterarg/cli.py, each ``counterarg bench`` module, each ``sweeps/*.py`` script), so
  the reference cannot drift from ``--help``. The scripts build their parser inside ``main()``; it is
  captured at its ``parse_args`` call (nothing runs past it).
- ``contributing.md``, ``changelog.md``: CONTRIBUTING.md and CHANGELOG.md of the repository root (where
  GitHub and packagers look), their links to ``docs/X.md`` made site-relative.
- ``api/<package>.md``: one page per package of ``counterarg`` (and one for the top-level modules),
  each module rendered from its docstrings by mkdocstrings; the pages follow the package tree, so a
  module that moves moves in the reference too. The nav entry ``API reference: api/index.md`` is
  expanded to these pages.

``python docs/gen_cli.py`` prints the CLI reference (to read it without building the site).
"""

from __future__ import annotations

import argparse
import html
import importlib
import importlib.util
import os
import re
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "counterarg"
CLI_PAGE = "cli.md"
API_INDEX = "api/index.md"


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


@contextmanager
def _capturing_parsers() -> Iterator[None]:
    """While active, the first ``parse_args``/``parse_known_args`` of any parser raises ``_Captured``
    holding that parser, so a ``main(argv)`` that builds its parser inline gives it up unrun."""

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    saved = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
    argparse.ArgumentParser.parse_args = capture  # type: ignore[method-assign]
    argparse.ArgumentParser.parse_known_args = capture  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args = saved  # type: ignore[method-assign]


def parser_of(main, prog: str) -> argparse.ArgumentParser:
    """The parser ``main(argv)`` builds, captured before it parses anything."""
    with _capturing_parsers():
        try:
            main(["--help"])
        except _Captured as c:
            c.parser.prog = prog
            return c.parser
    raise RuntimeError(f"{prog}: main() returned without parsing its arguments")


def _script(path: Path):
    spec = importlib.util.spec_from_file_location(f"_docs_sweeps_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """(title, parser) of every command line of the project, in the order the page shows them."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    cli = importlib.import_module("counterarg.cli")
    top = cli.build_parser()
    out = [("counterarg", top)]
    for action in top._subparsers._group_actions if top._subparsers else ():
        for name, sub in action.choices.items():
            sub.prog = f"counterarg {name}"
            out.append((f"counterarg {name}", sub))
    for name, (module, func) in cli.BENCHES.items():
        main = getattr(importlib.import_module(f"counterarg.{module}"), func)
        out.append((f"counterarg bench {name}", parser_of(main, f"counterarg bench {name}")))
    for path in sorted((ROOT / "sweeps").glob("*.py")):
        prog = f"python sweeps/{path.name}"
        out.append((prog, parser_of(_script(path).main, prog)))
    return out


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#])")
# ``code`` and :role:`target` (docstring markup) become code spans; everything else shows literally
_CODE = re.compile(r"``(.+?)``|:[a-z]+:`~?(.+?)`")


def _plain(s: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", html.escape(s, quote=False))


def _text(s: str) -> str:
    """Help text as Markdown that shows it literally (no emphasis, tags or table breaks), its docstring
    code spans as code; paths of the building machine shown relative to the repository."""
    s = s.replace(str(ROOT) + "/", "").replace(str(ROOT.parent) + "/", "../")
    out, at = [], 0
    for m in _CODE.finditer(s):
        code = (m.group(1) or m.group(2)).replace("|", "\\|")
        out += [_plain(s[at : m.start()]), f"`{code}`"]
        at = m.end()
    return "".join(out + [_plain(s[at:])])


def _paragraphs(s: str) -> str:
    """A description: its paragraphs as text, an indented paragraph (an example command) as a code block."""
    parts = []
    for p in re.split(r"\n\s*\n", s.strip("\n")):
        if not p.strip():
            continue
        if all(line.startswith("    ") for line in p.splitlines() if line.strip()):
            parts.append("```text\n" + textwrap.dedent(p).replace(str(ROOT.parent) + "/", "../") + "\n```")
        else:
            parts.append(_text(" ".join(p.split())))
    return "\n\n".join(parts)


def _option(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    if not action.option_strings:
        return formatter._format_args(action, action.metavar or action.dest)  # type: ignore[attr-defined]
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    args = formatter._format_args(action, formatter._get_default_metavar_for_optional(action))  # type: ignore[attr-defined]
    return ", ".join(f"{o} {args}" for o in action.option_strings)


def render(title: str, parser: argparse.ArgumentParser) -> str:
    """One parser as Markdown: usage, description, a table of arguments per group, epilog."""
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # the usage wraps as on a 100-column terminal, wherever the site is built
    try:
        formatter = parser._get_formatter()
        usage = parser.format_usage().strip()
    finally:
        os.environ.pop("COLUMNS") if columns is None else os.environ.__setitem__("COLUMNS", columns)
    lines = [f"## `{title}`", "", "```text", usage.replace(str(ROOT) + "/", ""), "```", ""]
    if parser.description:
        lines += [_paragraphs(parser.description), ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help is not argparse.SUPPRESS]
        if not actions:
            continue
        lines += [f"**{_text(group.title or 'arguments')}**", "", "| argument | description |", "|---|---|"]
        for action in actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    lines.append(
                        f"| `{choice.dest}` | {_text(' '.join((choice.help or '').split()))} "
                        f"([below](#{_anchor(parser.prog + ' ' + choice.dest)})) |"
                    )
                continue
            help_text = formatter._expand_help(action) if action.help else ""  # type: ignore[attr-defined]
            if (
                action.default not in (None, False, argparse.SUPPRESS, [])
                and "default" not in help_text
                and action.option_strings
            ):
                help_text += f" (default: {action.default})"
            if action.required and action.option_strings:
                help_text = f"required. {help_text}"
            if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
                help_text += f" (one of: {', '.join(map(str, action.choices))})"
            lines.append(f"| `{_option(action, formatter)}` | {_text(' '.join(help_text.split()))} |")
        lines.append("")
    if parser.epilog:
        raw = parser.formatter_class is argparse.RawDescriptionHelpFormatter
        lines += (["```text", parser.epilog.strip(), "```"] if raw else [_paragraphs(parser.epilog)]) + [""]
    return "\n".join(lines)


def _anchor(title: str) -> str:
    """The id the toc extension gives a heading ``## `title` `` (its default slugify)."""
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", title).strip().lower())


def cli_markdown() -> str:
    parts = [
        "# Command-line reference",
        "",
        "Generated from the argparse parsers when the site is built (`docs/gen_cli.py`), so it says what "
        "`--help` says. Every command that takes `--set FIELD=VALUE` takes any field of the one "
        "[configuration](configuration.md).",
        "",
    ]
    found = parsers()
    parts += [f"- [`{title}`](#{_anchor(title)})" for title, _ in found] + [""]
    parts += [render(title, parser) for title, parser in found]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------- API pages


def packages() -> dict[str, list[str]]:
    """Page name -> the dotted modules it documents: ``counterarg`` (the top-level modules) and one per
    subpackage, modules in file-name order (``__init__`` first)."""
    pages = {
        "counterarg": [
            f"counterarg.{p.stem}" for p in sorted(PACKAGE.glob("*.py")) if p.stem not in ("__init__", "__main__")
        ]
    }
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        pkg = init.parent
        mods = [f"counterarg.{pkg.name}"] + [
            f"counterarg.{pkg.name}.{p.stem}" for p in sorted(pkg.glob("*.py")) if p.stem != "__init__"
        ]
        pages[f"counterarg.{pkg.name}"] = mods
    return pages


def api_page(page: str, modules: list[str]) -> str:
    parts = [f"# `{page}`", ""]
    for module in modules:
        parts += [f"::: {module}", ""]
    return "\n".join(parts)


def api_index(pages: dict[str, list[str]]) -> str:
    parts = [
        "# API reference",
        "",
        "Rendered from the docstrings of the package (mkdocstrings), one page per package; "
        "[the architecture](../architecture.md) says which layer each package is and what each module "
        "holds.",
        "",
    ]
    for page, modules in pages.items():
        parts.append(
            f"- [`{page}`]({_api_file(page).removeprefix('api/')}): "
            + ", ".join(f"`{m.rsplit('.', 1)[-1]}`" for m in modules if m != page)
        )
    return "\n".join(parts) + "\n"


def _api_file(page: str) -> str:
    return f"api/{page.split('.')[-1]}.md"  # api/counterarg.md: the top-level modules


# ------------------------------------------------------------------------------------------- mkdocs hook

#: root file -> its page on the site
ROOT_PAGES = {"CONTRIBUTING.md": "contributing.md", "CHANGELOG.md": "changelog.md"}


def root_page(name: str) -> str:
    """A root Markdown file as a site page: links into docs/ and between the root files rewritten."""
    text = (ROOT / name).read_text(encoding="utf-8").replace("](docs/", "](")
    for other, page in {**ROOT_PAGES, "README.md": "index.md"}.items():
        text = text.replace(f"]({other}", f"]({page}")
    return text


def on_config(config, **kwargs):
    """Expand the nav entry ``API reference: api/index.md`` into the index and one page per package."""

    def expand(items):
        for i, item in enumerate(items):
            if isinstance(item, dict):
                for key, value in item.items():
                    if value == API_INDEX:
                        items[i] = {key: [{"Overview": API_INDEX}] + [{page: _api_file(page)} for page in packages()]}
                    elif isinstance(value, list):
                        expand(value)

    if config.nav:
        expand(config.nav)
    return config


def on_files(files, config, **kwargs):
    from mkdocs.structure.files import File

    files.append(File.generated(config, CLI_PAGE, content=cli_markdown()))
    for name, page in ROOT_PAGES.items():
        files.append(File.generated(config, page, content=root_page(name)))
    pages = packages()
    files.append(File.generated(config, API_INDEX, content=api_index(pages)))
    for page, modules in pages.items():
        files.append(File.generated(config, _api_file(page), content=api_page(page, modules)))
    return files


if __name__ == "__main__":
    print(cli_markdown())
