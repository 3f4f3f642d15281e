"""Benchmark of start-up: how long a person waits for ``counterarg --help``, ``counterarg rank --help`` and
the first ``counterarg rank`` of a new argument against a corpus split, each a fresh process as a user
starts it.

Each command runs ``--warmup`` times untimed (which also builds the candidate cache of a checkpoint whose
encoder trained, so every timed ``rank`` reads its candidates from a warm cache, as a frozen checkpoint's
first ``rank`` reads the feature cache training built), then ``--repeat`` times timed. Wall seconds are a
monotonic clock around the child; CPU seconds its user + system time as the operating system counted it
(os.wait4): on a shared machine wall time grows with the load and CPU time much less, so both are printed,
median (min-max), with the load average before and after. The targets are a ``--help`` under 1 s and the
first ``rank`` under 5 s; a command that exits non-zero fails the benchmark (exit 1, its error shown).

    counterarg bench startup [--checkpoint CKPT [--corpus ZIP] [--split test]] [--repeat 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ..data.inputs import DefaultsHelpFormatter, int_at_least

#: the argument ranked when none is given
DEFAULT_TEXT = (
    "Homework should be banned: it takes time from family and play, and there is little evidence "
    "that it improves learning in primary school."
)
#: what a person should wait at most, in seconds: every --help, and the first rank with a warm cache
TARGETS = {"help": 1.0, "rank": 5.0}


def run_once(cmd: list[str]) -> dict:
    """One run of ``cmd`` in a fresh process: wall and CPU seconds, exit status, its output."""
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own user and system time
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        return {
            "wall_s": wall,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "returncode": proc.returncode,
            "stdout": out.read().decode("utf-8", "replace"),
            "stderr": err.read().decode("utf-8", "replace")[-2000:],
        }


def commands(args) -> dict[str, list[str]]:
    """The timed commands, by name (``help ...`` or ``rank``); each starts ``python -m counterarg`` as a
    user's ``counterarg`` does."""
    base = [sys.executable, "-m", "counterarg"]
    out = {"help: counterarg --help": [*base, "--help"], "help: counterarg rank --help": [*base, "rank", "--help"]}
    if args.checkpoint:
        rank = [*base, "rank", "--checkpoint", args.checkpoint, "--split", args.split, "--text", args.text]
        if args.corpus:
            rank += ["--corpus", args.corpus]
        out["rank: first rank of a new argument"] = [*rank, "--k", "5", "--quiet"]
    return out


def summarise(runs: list[dict]) -> dict:
    """Median, min and max of wall and CPU seconds over timed runs."""
    return {
        f"{k}_{stat}": round(fn([r[k] for r in runs]), 3)
        for k in ("wall_s", "cpu_s")
        for stat, fn in (("median", statistics.median), ("min", min), ("max", max))
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="counterarg bench startup", description=__doc__, formatter_class=DefaultsHelpFormatter
    )
    ap.add_argument("--checkpoint", help="a checkpoint folder to time the first rank with (default: --help only)")
    ap.add_argument("--corpus", help="the corpus whose split's counters are the candidates (default: the checkpoint's)")
    ap.add_argument("--split", default="test", help="the split whose counters are ranked")
    ap.add_argument("--text", default=DEFAULT_TEXT, help="the new argument ranked (default: one about homework)")
    ap.add_argument("--repeat", type=int_at_least(1), default=3, help="timed runs of each command")
    ap.add_argument("--warmup", type=int_at_least(0), default=1, help="untimed runs of each command first")
    ap.add_argument("--json", help="write the figures here (default: printed only)")
    args = ap.parse_args(argv)

    if args.corpus and not args.checkpoint:
        ap.error("--corpus is the rank's: give --checkpoint too")
    load_before = os.getloadavg()
    print(f"[startup] load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; {sys.executable}")
    results = {}
    for name, cmd in commands(args).items():
        runs = []
        for i in range(args.warmup + args.repeat):
            run = run_once(cmd)
            if run["returncode"] != 0:
                print(f"[startup] {name}: exit {run['returncode']}\n{run['stderr']}", file=sys.stderr)
                return 1
            if i >= args.warmup:
                runs.append(run)
        kind = name.split(":", 1)[0]
        row = {"command": cmd, **summarise(runs), "runs": len(runs), "target_s": TARGETS[kind]}
        lines = runs[-1]["stdout"].splitlines()
        if kind == "rank" and lines:
            row["said"] = lines[0]  # "best 5 of N candidates (...; candidates from ...; ranking seconds)"
        results[name] = row
        met = {k: "under" if row[f"{k}_s_median"] < row["target_s"] else "OVER" for k in ("wall", "cpu")}
        print(
            f"{name:36s} wall {row['wall_s_median']:6.2f} s ({row['wall_s_min']:.2f}-{row['wall_s_max']:.2f}), "
            f"CPU {row['cpu_s_median']:6.2f} s ({row['cpu_s_min']:.2f}-{row['cpu_s_max']:.2f}): "
            f"wall {met['wall']}, CPU {met['cpu']} the {row['target_s']:g} s target"
            + (f"\n{'':36s} {row['said']}" if "said" in row else ""),
            flush=True,
        )
    load_after = os.getloadavg()
    print(f"[startup] load average {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if args.json:
        report = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_before": load_before,
            "load_after": load_after,
            "cpus": os.cpu_count(),
            "results": results,
        }
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"[startup] figures written to {Path(args.json).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
