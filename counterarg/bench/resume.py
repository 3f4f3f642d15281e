"""Kill-and-resume check on a real training run: SIGKILL at random moments, ``--resume``, compare.

Why: a run must survive being killed anywhere (an epoch, a checkpoint swap, a metrics append) and
end with the very rows an uninterrupted run writes. This runs ``python -m counterarg train`` once
straight through (the reference), then again with ``--kills`` SIGKILLs at random moments, each
followed by ``--resume``; it compares every ``metrics.jsonl`` row (``time/`` fields aside) and
checks that the run folder holds no leftover temp folder or file. Kill moments are drawn uniformly
over a window of start-up plus about 1.5 epochs (measured on the reference), so each restart loses
part of an epoch and the kills land in every phase of it.

    counterarg bench resume --corpus ../shared/data/arguana-counterargs-corpus.zip \\
        --out /tmp/kills --epochs 12 --kills 10

Exit status 0 when the rows are identical and the folder is clean; the summary is printed and
written to OUT/result.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..evaluation.selection import BEST_DIR
from ..training.machine import MACHINE_FILE

# machine.jsonl holds a row per start or resume (the killed run has more rows than the reference, by design)
EXPECTED = {"checkpoint", BEST_DIR, "config.json", MACHINE_FILE, "metrics.jsonl", ".lock"}


def _line_count(path: Path) -> int:
    """Rows in a JSON-lines file (0 where it is absent): the starts a run recorded."""
    return len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0


def _rows(folder: Path) -> list[dict]:
    f = folder / "metrics.jsonl"
    if not f.exists():
        return []
    return [
        {k: v for k, v in json.loads(ln).items() if not k.startswith("time/")}
        for ln in f.read_text(encoding="utf-8").splitlines()
        if ln.strip()
    ]


def _train_cmd(corpus: str | None, out: Path, epochs: int, sets: list[str], resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "counterarg", "train", "--out", str(out), "--epochs", str(epochs), "--quiet"]
    if corpus:
        cmd += ["--corpus", corpus]
    for s in sets:
        cmd += ["--set", s]
    return cmd + (["--resume"] if resume else [])


def _start(cmd: list[str], log) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the run and nothing else
    except ProcessLookupError:
        pass
    proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="counterarg bench resume", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--corpus", help="corpus zip or folder (default: the demo corpus)")
    ap.add_argument("--out", required=True, help="work folder (ref/ and killed/ are made in it)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="passed to train")
    args = ap.parse_args(argv)
    if args.kills < 1 or args.epochs < 1:
        ap.error("--kills and --epochs must be >= 1")
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    ref, killed = work / "ref", work / "killed"
    for d in (ref, killed):
        if d.exists():
            ap.error(f"{d} exists; give a fresh --out")
    rng = random.Random(args.seed)

    t0 = time.perf_counter()
    with open(work / "ref.log", "w") as log:
        rc = _start(_train_cmd(args.corpus, ref, args.epochs, args.set, False), log).wait()
    total = time.perf_counter() - t0
    if rc != 0:
        print(f"reference run failed (exit {rc}); see {work / 'ref.log'}", file=sys.stderr)
        return 1
    epoch_s = [json.loads(ln)["time/epoch_s"] for ln in (ref / "metrics.jsonl").read_text().splitlines()]
    startup = max(1.0, total - sum(epoch_s))
    window = startup + 1.5 * (sum(epoch_s) / len(epoch_s))
    print(
        f"[kills] reference: {args.epochs} epochs in {total:.0f} s (start-up {startup:.0f} s, "
        f"{sum(epoch_s) / len(epoch_s):.1f} s per epoch); kill window 0-{window:.0f} s",
        flush=True,
    )

    kills: list[dict[str, float]] = []
    log = open(work / "killed.log", "w")
    try:
        while len(kills) < args.kills:
            resume = bool(kills) or killed.exists()
            proc = _start(_train_cmd(args.corpus, killed, args.epochs, args.set, resume), log)
            delay = rng.uniform(0.2, window)
            try:
                rc = proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                _kill(proc)
                done = len(_rows(killed))
                kills.append({"after_s": round(delay, 2), "rows_on_disk": done})
                print(
                    f"[kills] kill {len(kills)}/{args.kills} after {delay:.1f} s; {done} epoch row(s) on disk",
                    flush=True,
                )
                continue
            if rc != 0:
                print(f"a run exited {rc} before its kill; see {work / 'killed.log'}", file=sys.stderr)
                return 1
            print(f"[kills] the run finished before kill {len(kills) + 1}; raise --epochs for more kills", flush=True)
            break
        rc = _start(_train_cmd(args.corpus, killed, args.epochs, args.set, True), log).wait()
    finally:
        log.close()
    if rc != 0:
        print(f"the final --resume failed (exit {rc}); see {work / 'killed.log'}", file=sys.stderr)
        return 1

    want, got = _rows(ref), _rows(killed)
    leftovers = sorted(p.name for p in killed.iterdir() if p.name not in EXPECTED)
    leftovers += sorted(
        str(p.relative_to(killed))
        for p in (killed / "checkpoint").iterdir()
        if p.name.startswith(".") or p.name.endswith(".tmp")
    )
    text = (work / "killed.log").read_text(encoding="utf-8", errors="replace")
    result = {
        "epochs": args.epochs,
        "kills": len(kills),
        "kill_moments": kills,
        "rows_identical": want == got,
        "rows": len(got),
        "leftovers": leftovers,
        "machine_rows": _line_count(killed / MACHINE_FILE),
        "swaps_completed": text.count("completed the swap"),
        "swaps_rolled_back": text.count("rolled back to"),
        "temp_removed": text.count("removed the"),
        "fresh_starts": text.count("starting fresh"),
    }
    (work / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = want == got and not leftovers and len(kills) == args.kills
    if want != got:
        diff = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
        print(f"rows differ from epoch {diff + 1} on (ref {len(want)} rows, killed {len(got)})", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
