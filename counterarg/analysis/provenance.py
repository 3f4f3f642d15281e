"""What made a sweep's results: command lines, epochs, package versions, git commit, wall time.

summary.md is quoted long after the sweep ran; without the command, the package versions and the
commit its numbers cannot be reproduced, and after a ``--resume`` the driver's own clock covers
only the resumed part. Every driver session that writes the summary is therefore recorded in
``<sweep>/sessions.jsonl`` (its command line and wall seconds), and the summary shows all of them
and their sum. Paths in the command are shown as :func:`counterarg.core.paths.portable_path` does
(relative to the folder the sweep ran from), never as this machine's absolute paths. No Ray here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from ..config import Config
from ..core.io import append_jsonl
from ..core.paths import portable_command

SESSIONS_FILE = "sessions.jsonl"
#: The packages whose versions change what a sweep computes (or how it runs).
PACKAGES = ("counterarg", "torch", "transformers", "sentence-transformers", "ray", "scikit-learn", "numpy", "scipy")


def sweep_provenance(
    records: Sequence[Any], rows: Sequence[dict[str, Any]], out_dir: Path, wall_s: float | None
) -> tuple[float | None, str]:
    """The sweep's wall time (summed over every recorded session; ``wall_s`` when none is recorded;
    None when the first run is not among them) and the summary's provenance section."""
    sessions = read_sessions(out_dir)
    lines = provenance_markdown(sessions, [r.config for r in records], [int(r["epochs_done"]) for r in rows])
    if sessions and sessions[0].get("kind") == "resume":  # the first run is not recorded: no total to give
        return None, "\n".join(lines)
    return (total_wall_s(sessions) if sessions else wall_s), "\n".join(lines)


def driver_command() -> str:
    """The command line of this process, as :func:`portable_command` shows it."""
    return portable_command(["python", *sys.argv] if sys.argv and sys.argv[0].endswith(".py") else sys.argv)


def package_versions() -> dict[str, str]:
    """The installed version of each of :data:`PACKAGES` ("not installed" where absent)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(folder: Path | None = None) -> str:
    """The commit of the checkout holding the package (``+ uncommitted changes`` when dirty), or
    why there is none."""
    folder = folder or Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def record_session(out_dir: Path, wall_s: float, command: str | None = None, resumed: bool = False) -> None:
    """Append one driver session (its command, run or resume, wall seconds, end time) to
    ``<out_dir>/sessions.jsonl``; the sweep runner calls it once per run or resume."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    append_jsonl(
        Path(out_dir) / SESSIONS_FILE,
        {
            "command": command if command is not None else driver_command(),
            "kind": "resume" if resumed else "run",
            "wall_s": round(float(wall_s), 1),
            "ended": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )


def read_sessions(out_dir: Path) -> list[dict[str, Any]]:
    """Every session recorded in ``<out_dir>/sessions.jsonl``, oldest first (an unreadable line is skipped)."""
    path = Path(out_dir) / SESSIONS_FILE
    sessions = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("wall_s"), (int, float)):
                sessions.append(row)
    return sessions


def _epochs(configs: Sequence[dict[str, Any]], done: Sequence[int]) -> str:
    planned = sorted({int(c.get("epochs", Config().epochs)) for c in configs})
    text = "epochs per trial: " + ", ".join(map(str, planned)) if planned else "epochs per trial: –"
    if done:
        lo, hi = min(done), max(done)
        text += f" (trials ran {lo}" + (f" to {hi}" if hi != lo else "") + " epochs)"
    return text


def provenance_markdown(
    sessions: Sequence[dict[str, Any]], configs: Sequence[dict[str, Any]], epochs_done: Sequence[int]
) -> list[str]:
    """The summary's provenance section: the command of every session, epochs, versions, commit."""
    lines = ["## Provenance", ""]
    for i, s in enumerate(sessions, 1):
        what = s.get("kind") or ("run" if i == 1 else "resume")
        lines.append(
            f"- session {i} ({what}, {s['wall_s']:.1f} s, ended {s.get('ended', '?')}): `{s.get('command', '?')}`"
        )
    if sessions and sessions[0].get("kind") == "resume":
        lines.append(
            "- the sweep's first run is not recorded here (it predates the session record): its wall "
            "time covers the recorded sessions only"
        )
    lines.append(f"- {_epochs(configs, epochs_done)}")
    lines.append("- packages: " + ", ".join(f"{k} {v}" for k, v in package_versions().items()))
    lines.append(f"- git commit: {git_commit()}")
    lines.append("")
    return lines


def total_wall_s(sessions: Sequence[dict[str, Any]]) -> float | None:
    """The sweep's wall time: the sum over every recorded session (None when none is recorded)."""
    return sum(float(s["wall_s"]) for s in sessions) if sessions else None
