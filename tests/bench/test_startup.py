"""The start-up benchmark (counterarg.bench.startup): each command timed in a fresh process, a failing
command named, and the JSON report."""

from __future__ import annotations

import json
import sys

import pytest

from counterarg.bench.startup import commands, main, run_once


def test_run_once_times_a_child_process_by_its_own_cpu_time():
    spin = run_once(
        [sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"]
    )
    assert spin["returncode"] == 0 and spin["cpu_s"] >= 0.3 and spin["wall_s"] >= spin["cpu_s"] * 0.5
    sleep = run_once([sys.executable, "-c", "import sys, time; time.sleep(0.5); print('out'); sys.exit(3)"])
    assert sleep["returncode"] == 3 and sleep["wall_s"] >= 0.5 and sleep["cpu_s"] < 0.5
    assert sleep["stdout"] == "out\n"


def test_commands_time_help_and_only_with_a_checkpoint_rank():
    import argparse

    args = argparse.Namespace(checkpoint=None, corpus=None, split="test", text="t")
    assert [c[3:] for c in commands(args).values()] == [["--help"], ["rank", "--help"]]
    args.checkpoint, args.corpus = "ck", "c.zip"
    rank = commands(args)["rank: first rank of a new argument"]
    assert rank[:4] == [sys.executable, "-m", "counterarg", "rank"]
    assert rank[rank.index("--checkpoint") + 1] == "ck" and rank[rank.index("--corpus") + 1] == "c.zip"


@pytest.mark.slow
def test_startup_bench_times_help_and_the_first_rank(top1_checkpoint, tmp_path, capsys):
    """One warm-up (it builds the candidate cache of this top:1 checkpoint) and one timed run each: the
    JSON holds each command's wall and CPU seconds and the rank's own line."""
    out = tmp_path / "startup.json"
    assert main(["--checkpoint", str(top1_checkpoint), "--repeat", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "load average" in printed and "first rank" in printed
    report = json.loads(out.read_text())
    rows = report["results"]
    assert list(rows) == [
        "help: counterarg --help",
        "help: counterarg rank --help",
        "rank: first rank of a new argument",
    ]
    for row in rows.values():
        assert 0 < row["cpu_s_median"] and 0 < row["wall_s_median"] and row["runs"] == 1
    assert "candidates from cache" in rows["rank: first rank of a new argument"]["said"]  # warmed up
    assert len(report["load_before"]) == 3 and report["cpus"] >= 1


def test_a_failing_command_fails_the_bench_and_says_why(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "missing"), "--repeat", "1", "--warmup", "0"]) == 1
    err = capsys.readouterr().err
    assert "first rank" in err and "exit 2" in err and "missing" in err
