"""Paths as outputs show them (counterarg.core.paths), and the committed results hold no machine path."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from counterarg.core.paths import absolute_paths_in, portable_command, portable_path

ROOT = Path(__file__).resolve().parents[2]


def test_portable_path_is_relative_to_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "results" / "s"
    assert portable_path(sweep / "trial_1" / "best", sweep) == "trial_1/best"
    assert portable_path(tmp_path / "data" / "c.zip", sweep) == "../../data/c.zip"  # inside the current folder
    assert portable_path(tmp_path / "data" / "c.zip") == "data/c.zip"
    assert portable_path("s3://bucket/x/y") == "s3://bucket/x/y"
    assert portable_path("/opt/elsewhere/models/m.bin", sweep) == ".../models/m.bin"  # marked as shortened
    assert portable_path("../shared/data/c.zip") == "../shared/data/c.zip"  # relative, as the user gave it
    assert portable_path(Path.home() / ".cache" / "x", "/opt/elsewhere").startswith("~/") or Path.home().is_relative_to(
        tmp_path
    )


def test_temp_files_are_shown_from_tmpdir(monkeypatch, tmp_path):
    import tempfile

    (tmp_path / "t").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "t"))
    monkeypatch.chdir(tmp_path / "cwd")
    assert portable_path(tmp_path / "t" / "bench" / "x.npy", "/opt") == "$TMPDIR/bench/x.npy"
    monkeypatch.chdir("/")  # a command run from / still shows no machine path
    assert portable_path(tmp_path / "t" / "bench" / "x.npy", "/opt") == "$TMPDIR/bench/x.npy"


def test_paths_in_a_command_are_shown_without_this_machine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.zip").write_bytes(b"")
    cmd = portable_command(
        [
            "python",
            "/opt/x/sweeps/run.py",
            "--corpus",
            str(tmp_path / "c.zip"),
            "--storage",
            "s3://bucket/results",
            "--seeds",
            "0,1",
            "--name",
            "a b",
            f"--json={tmp_path / 'out.json'}",
        ]
    )
    script = os.path.relpath("/opt/x/sweeps/run.py")  # runnable from here: no placeholder such as .../ or $TMPDIR
    assert cmd == (
        f"python {script} --corpus c.zip --storage s3://bucket/results --seeds 0,1 --name 'a b' --json=out.json"
    )
    assert not absolute_paths_in(cmd)
    relative = portable_command(["python", "sweeps/run.py", "--corpus", "../data/c.zip", "--json=./o.json"])
    assert relative == "python sweeps/run.py --corpus ../data/c.zip --json=./o.json"  # relative: as given


def test_absolute_path_pattern():
    text = (
        "`/work/main/results/x/best` validation/mean/acc@1 https://github.com/ray-project/ray "
        "$TMPDIR/bench/x.npy ~/.cache/counterarg 0.4/0.5/0.6 (/tmp/bench/x.npy)"
    )
    assert absolute_paths_in(text) == ["/work/main/results/x/best", "/tmp/bench/x.npy"]


def _committed_results() -> list[Path]:
    try:
        done = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / f for f in done.stdout.split() if f.endswith((".md", ".csv", ".json", ".txt"))]


def test_no_committed_result_file_holds_an_absolute_path():
    """Committed summaries named the folders of the machine (and the temp files) they
    were made on; outputs write paths relative to their own folder."""
    files = _committed_results()
    assert any(f.name == "summary.md" for f in files)
    found = {str(f.relative_to(ROOT)): absolute_paths_in(f.read_text(encoding="utf-8")) for f in files}
    assert not {f: p for f, p in found.items() if p}, found


def test_a_printed_command_path_runs_from_here_and_is_not_absolute(tmp_path, monkeypatch):
    """A printed command must run as printed: '$TMPDIR/...' in single quotes does not expand and
    '.../x' names nothing, so commands get a relative path that resolves to the same file."""
    import os
    import shlex

    from counterarg.core.paths import runnable_path, shell_path

    (tmp_path / "here").mkdir()
    target = tmp_path / "sweeps" / "s 1" / "trial_1" / "best"
    monkeypatch.chdir(tmp_path / "here")
    shown = runnable_path(target)
    assert not os.path.isabs(shown) and (Path.cwd() / shown).resolve() == target.resolve()
    assert shlex.split(shell_path(target)) == [shown]  # quoted once, a space and all
    assert runnable_path("s3://bucket/x") == "s3://bucket/x"
