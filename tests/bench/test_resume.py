"""The kill-and-resume check (counterarg.bench.resume): its train command, and one real kill on the demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from counterarg.bench.resume import _rows, _train_cmd, main


def test_train_command_and_rows_without_times(tmp_path):
    cmd = _train_cmd(None, tmp_path / "r", 3, ["schedule=fixed", "max_length=32"], resume=True)
    assert cmd[:4] == [sys.executable, "-m", "counterarg", "train"]
    assert cmd[cmd.index("--epochs") + 1] == "3" and cmd[-1] == "--resume" and "--corpus" not in cmd
    assert [cmd[i + 1] for i, c in enumerate(cmd) if c == "--set"] == ["schedule=fixed", "max_length=32"]
    assert "--corpus" in _train_cmd("c.zip", Path("o"), 1, [], resume=False)
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "time/epoch_s": 2.0, "train/loss": 0.5}\n\n')
    assert _rows(tmp_path) == [{"epoch": 1, "train/loss": 0.5}] and _rows(tmp_path / "none") == []


@pytest.mark.slow
@pytest.mark.timeout(1200)  # three runs of 60 epochs: 2 minutes idle, 8 s an epoch at load 10
def test_one_kill_and_resume_on_the_demo_gives_the_uninterrupted_rows(tiny_encoder, tmp_path):
    # The kill lands within the reference's start-up plus 1.5 epochs. Demo epochs take about 0.5 s (the
    # eight tasks and the ArguAna view on two splits each epoch; 0.1 s before the view) and start-up
    # varies by seconds with the load, so the run must outlast that window by far: 60 epochs (about
    # 30 s idle; 150 ran past the test's 10 minutes at load 10) and no early stop. With 20 epochs of
    # 0.1 s and the default patience a run once finished before its kill on an idle machine.
    assert (
        main(
            [
                "--out",
                str(tmp_path),
                "--epochs",
                "60",
                "--kills",
                "1",
                "--set",
                f"encoder={tiny_encoder}",
                "--set",
                "max_length=32",
                "--set",
                "patience=0",
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["kills"] == 1 and result["rows_identical"] and result["rows"] == 60
    assert result["leftovers"] == []  # best/ beside checkpoint/ is part of a run folder


def test_counterarg_bench_resume_reaches_the_check(capsys):
    """``counterarg bench resume`` runs this check (its --help says so), like the other benchmarks."""
    from counterarg.cli import main as cli_main

    with pytest.raises(SystemExit) as e:
        cli_main(["bench", "resume", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "usage: counterarg bench resume" in out and "--kills" in out
