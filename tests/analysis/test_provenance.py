"""What made a sweep (counterarg.analysis.provenance): commands, epochs, versions, commit, summed wall time."""

from __future__ import annotations

import re
from importlib import metadata

import pytest

from counterarg.analysis.provenance import read_sessions, record_session
from counterarg.analysis.summary import write_summary
from counterarg.core.paths import absolute_paths_in, portable_command

from .conftest import summary_records


def test_summary_names_command_epochs_versions_commit_and_sums_every_session(tmp_path, monkeypatch):
    """summary.md had no command line, epochs, versions or commit, and after a resume
    its wall time covered only the resumed part."""
    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "data" / "corpus.zip"
    corpus.parent.mkdir()
    corpus.write_bytes(b"")
    out = tmp_path / "results" / "s"
    record_session(out, 100.0, portable_command(["python", "sweeps/x.py", "--corpus", str(corpus), "--epochs", "3"]))
    record_session(
        out, 23.5, portable_command(["python", "sweeps/x.py", f"--corpus={corpus}", "--resume"]), resumed=True
    )
    recs = summary_records()
    for r in recs:
        r.config["epochs"] = 3
    md = write_summary(recs, out, title="t", sweep_wall_s=23.5)["markdown"]
    assert "Sweep wall time: 123.5 s." in md  # the run and its resume, not the resume alone
    assert "session 1 (run, 100.0 s" in md and "`python sweeps/x.py --corpus data/corpus.zip --epochs 3`" in md
    assert "session 2 (resume, 23.5 s" in md and "--corpus=data/corpus.zip --resume" in md
    assert "epochs per trial: 3 (trials ran 0 to 3 epochs)" in md
    assert f"torch {metadata.version('torch')}" in md and f"ray {metadata.version('ray')}" in md
    commit = re.search(r"git commit: (\S+)", md).group(1)
    assert re.fullmatch(r"[0-9a-f]{40}", commit) or commit == "unknown", md
    assert not absolute_paths_in(md), absolute_paths_in(md)


def test_without_recorded_sessions_the_wall_time_is_this_run(tmp_path):
    md = write_summary(summary_records(), tmp_path, title="t", sweep_wall_s=12.0)["markdown"]
    assert "Sweep wall time: 12.0 s." in md and read_sessions(tmp_path) == []


def test_a_session_says_whether_it_resumed_and_an_unrecorded_first_run_is_named(tmp_path):
    from counterarg.analysis.provenance import provenance_markdown

    record_session(tmp_path, 3.0, command="python sweeps/x.py --resume", resumed=True)
    record_session(tmp_path, 2.0, command="python sweeps/x.py --resume", resumed=True)
    lines = provenance_markdown(read_sessions(tmp_path), [{"epochs": 2}], [2])
    assert lines[2].startswith("- session 1 (resume, 3.0 s") and lines[3].startswith("- session 2 (resume")
    assert "first run is not recorded here" in lines[4]


def test_no_wall_time_is_claimed_when_the_first_run_is_not_recorded(tmp_path):
    from counterarg.analysis.provenance import sweep_provenance

    record_session(tmp_path, 0.4, command="python sweeps/x.py --resume", resumed=True)
    wall, text = sweep_provenance([], [], tmp_path, 0.4)
    assert wall is None and "first run is not recorded here" in text
    record_session(tmp_path / "b", 100.0, command="python sweeps/x.py")
    record_session(tmp_path / "b", 2.0, command="python sweeps/x.py --resume", resumed=True)
    assert sweep_provenance([], [], tmp_path / "b", 2.0)[0] == pytest.approx(102.0)
