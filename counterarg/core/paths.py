"""Paths as outputs show them: never an absolute path of the machine that wrote them.

Summaries, reports, model cards and printed commands are read on other machines (committed results,
shared exports), where this machine's folders mean nothing and only leak its layout. A path is
therefore shown relative to the folder it is read from (a sweep folder, a report's folder, the
current folder for a printed command); a path outside that folder is shown from a place every
machine has (``$TMPDIR/...``, ``~/...``) or, failing that, by its last parts only. A path the user
typed (a flag's value in a recorded command, a file a command says it wrote) is shown as given when
relative, else relative to the current folder (:func:`given_path`): runnable, never a placeholder.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
from collections.abc import Sequence
from pathlib import Path

#: An absolute path of at least two parts inside text (``/tmp/x``, ``/work/main/results``), not
#: ``validation/mean/acc@1`` (it starts with a word) nor a URL's ``https://host/...``.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~$-])/[\w.-]+(?:/[\w.@=-]+)+")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def portable_path(path: str | Path, base: str | Path | None = None) -> str:
    """``path`` as an output shows it: relative to ``base`` (default: the current folder) when
    it lies inside ``base`` or inside the current folder (then with ``..`` where needed), else
    ``$TMPDIR/...`` or ``~/...``, else ``.../`` and its last two parts. A URI (``s3://...``) and a
    relative path as given (``../data/corpus.zip``: it names no folder of this machine) are kept."""
    text = str(path)
    if "://" in text or not text:
        return text
    if base is None and not os.path.isabs(text) and not text.startswith("~"):
        return os.path.normpath(text)
    p = Path(os.path.abspath(Path(text).expanduser()))
    here = Path(os.path.abspath(Path.cwd()))
    b = Path(os.path.abspath(Path(base).expanduser())) if base is not None else here
    if _inside(p, b) or (_inside(p, here) and here != Path(here.anchor)):
        return os.path.relpath(p, b)
    for root, shown in ((Path(tempfile.gettempdir()), "$TMPDIR"), (Path.home(), "~")):
        root = Path(os.path.abspath(root))
        if _inside(p, root):
            return f"{shown}/{p.relative_to(root).as_posix()}"
    return ".../" + "/".join(p.parts[-2:]) if len(p.parts) > 2 else p.name


def runnable_path(path: str | Path) -> str:
    """``path`` for a command or snippet printed to be run here: never absolute, always valid from
    the current folder (relative, with ``..`` where needed; :func:`portable_path`'s ``$TMPDIR`` and
    ``.../`` forms are for reading, not running). A URI is kept."""
    text = str(path)
    if "://" in text or not text:
        return text
    return os.path.relpath(os.path.abspath(Path(text).expanduser()))


def given_path(path: str | Path) -> str:
    """A path the user gave, as outputs show it: as given when relative (``../data/c.zip``) or a URI,
    else :func:`runnable_path` (relative to the current folder): it names the same file when run from
    there, with neither a placeholder such as ``$TMPDIR`` nor this machine's absolute layout."""
    text = str(path)
    if "://" in text or not text or not (os.path.isabs(text) or text.startswith("~")):
        return text
    return runnable_path(text)


def shell_path(path: str | Path) -> str:
    """:func:`runnable_path`, quoted for a shell command line."""
    return shlex.quote(runnable_path(path))


def absolute_paths_in(text: str) -> list[str]:
    """The absolute paths written in ``text`` (what :data:`ABSOLUTE_PATH` matches), in order."""
    return ABSOLUTE_PATH.findall(text)


def portable_command(argv: Sequence[str]) -> str:
    """``argv`` as a shell command with every path argument (``PATH`` or ``--flag=PATH``) shown
    by :func:`given_path`."""
    out = []
    for a in argv:
        flag, eq, value = a.partition("=") if a.startswith("--") else ("", "", a)
        if value and "://" not in value and (os.path.isabs(value) or os.path.exists(value)):
            value = given_path(value)
        out.append(shlex.quote(flag + eq + value))
    return " ".join(out)


#: The URI schemes of object storage (pyarrow's filesystems); ``file://`` is a local path.
REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "abfs://", "abfss://")


def is_remote(location: str | Path | None) -> bool:
    """Whether ``location`` is an object-storage URI (not a local path or ``file://``)."""
    return isinstance(location, str) and location.startswith(REMOTE_SCHEMES)
