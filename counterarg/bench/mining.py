"""Benchmark of the neighbour-index backends used by hard-negative mining (``counterarg bench mining``).

For each database size N it measures build time and query-all time (queries = the database,
k=3, as the miner does) of ``balltree``, ``sharded-balltree`` (only up to ``--balltree-max``,
20k by default: a 128-d BallTree is close to brute force and takes ~9 minutes at 50k), ``exact``
and, as the outside peer, faiss ``IndexFlatL2`` (skipped with a note when faiss is missing).

Fairness: torch, faiss (OpenMP) and the BLAS behind numpy are all limited to the same number of
threads (``--threads``, default ``nproc``); competing backends are timed interleaved, repeat by
repeat, and the best of ``--repeat`` runs is reported, so that load from other processes hurts
both sides alike. The sharded backend's actors are started and built once, then re-built
(``rebuild``, what the miner does every epoch) and queried: its "build" column is the rebuild,
actor start-up is reported separately.

Data: ``--embeddings FILE.npy`` [N, d] replaces the real-size set; otherwise the real-size set is
Gaussian with the training set's shape (N = 4,065 pairs, d = 128). Hook for later: pass the
frozen-feature embeddings of the training corpus as that file. Other sizes are Gaussian, d=128.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..core.fieldvalues import ConfigError
from ..core.paths import portable_command
from ..data.inputs import int_at_least

REAL_N = 4065  # training pairs in ArguAna's training split
DIM = 128
DEFAULT_NS = (REAL_N, 20_000, 200_000)
DEFAULT_OUT = "results/bench/mining.md"


def _timeit(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def read_embeddings(path: str | Path) -> np.ndarray:
    """``--embeddings``: a .npy of a 2-D array of finite numbers (no pickled objects are loaded), as
    float32; anything else is a ConfigError naming the file (exit 2)."""
    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ConfigError(f"--embeddings {path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"--embeddings {path} is a folder; give a .npy file") from None
    except (OSError, ValueError, EOFError) as e:  # a pickled object array, not a .npy, cut short
        raise ConfigError(f"--embeddings {path} is not a .npy array of numbers: {e}") from None
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "biuf" or x.ndim != 2 or min(x.shape) < 1:
        what = f"a {x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else "no single array"
        raise ConfigError(f"--embeddings {path} holds {what}; expected [N, d] numbers (counterarg embed writes them)")
    if not np.isfinite(x).all():
        raise ConfigError(f"--embeddings {path} holds NaN or infinite values")
    return x.astype(np.float32)


def _data(n: int, embeddings: str | None, seed: int = 0) -> tuple[np.ndarray, str]:
    if embeddings and n == REAL_N:
        return read_embeddings(embeddings), f"file {Path(embeddings).name}"
    rng = np.random.default_rng(seed + n)
    x = rng.standard_normal((n, DIM), dtype=np.float32)  # [N, d]
    return x, "real-size synthetic" if n == REAL_N else "synthetic Gaussian"


def _faiss() -> Any | None:
    try:
        import faiss  # noqa: PLC0415 - optional peer
    except ImportError:
        return None
    return faiss


def run_bench(
    ns: tuple[int, ...] | list[int] = DEFAULT_NS,
    shards: int = 2,
    json_path: str | None = None,
    embeddings: str | None = None,
    out: str | None = DEFAULT_OUT,
    repeat: int = 1,
    k: int = 3,
    threads: int | None = None,
    balltree_max: int = 20_000,
    leaf_size: int = 2,
    block_size: int = 4096,
    command: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the benchmark; returns (and optionally writes as JSON / markdown) the results."""
    import torch
    from threadpoolctl import threadpool_limits

    from counterarg.retrieval.index import make_index

    threads = int(threads or os.cpu_count() or 1)
    torch.set_num_threads(threads)
    faiss = _faiss()
    if faiss is not None:
        faiss.omp_set_num_threads(threads)
    notes: list[str] = []
    if faiss is None:
        notes.append("faiss not installed (pip install faiss-cpu): peer column skipped")
    rows: list[dict[str, Any]] = []
    shard_actor_start_s = None
    warm = np.random.default_rng(1).standard_normal((64, DIM), dtype=np.float32)
    for b in ("balltree", "exact"):  # pay imports (sklearn, torch kernels) outside the timings
        make_index(b, warm).query(warm, k)

    with threadpool_limits(limits=threads):
        if embeddings:
            ns = sorted(set(ns) | {REAL_N})
        for n in ns:
            x, kind = _data(n, embeddings)
            n = len(x)
            log(f"N={n} ({kind}), d={x.shape[1]}")
            builders: dict[str, Callable[[], Any] | None] = {}  # None: built below, its actors timed apart
            if n <= balltree_max:
                builders["balltree"] = lambda: make_index("balltree", x, leaf_size=leaf_size, block_size=block_size)
                builders["sharded-balltree"] = None
            builders["exact"] = lambda: make_index("exact", x, block_size=block_size)
            if faiss is not None:

                def _flat() -> Any:
                    f = faiss.IndexFlatL2(x.shape[1])
                    f.add(x)
                    return f

                builders["faiss-flat"] = _flat
            built: dict[str, Any] = {}
            build_s: dict[str, float] = {}
            for name, make in builders.items():
                if make is None:  # the sharded index
                    t0, idx = _timeit(
                        lambda: make_index(
                            "sharded-balltree", x, shards=shards, leaf_size=leaf_size, block_size=block_size
                        )
                    )
                    tr, _ = _timeit(lambda: idx.rebuild(x))  # steady state: actors reused
                    shard_actor_start_s = t0 - tr
                    built[name], build_s[name] = idx, tr
                else:
                    build_s[name], built[name] = _timeit(make)
            query_s = {name: float("inf") for name in built}
            answers: dict[str, Any] = {}
            for r in range(repeat):
                for name, idx in built.items():  # interleaved, so load hits every backend alike
                    t, ans = _timeit(lambda: idx.search(x, k) if name == "faiss-flat" else idx.query(x, k))
                    query_s[name] = min(query_s[name], t)
                    answers[name] = ans
                    log(f"  {name:17s} build {build_s[name]:8.3f} s  query-all {t:8.3f} s  (repeat {r + 1}/{repeat})")
            ref_ids = answers["exact"][1]
            for name, idx in built.items():
                ids = np.asarray(answers[name][1])
                agree = float((ids == ref_ids).mean())
                rows.append(
                    {
                        "n": n,
                        "data": kind,
                        "backend": name,
                        "build_s": build_s[name],
                        "query_s": query_s[name],
                        "ids_agree_with_exact": agree,
                        "epoch_s": build_s[name] + query_s[name],
                    }
                )
                if hasattr(idx, "close"):
                    idx.close()

    def _row(n: int, b: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["n"] == n and r["backend"] == b), None)

    ratios: dict[str, float] = {}
    for n in sorted({r["n"] for r in rows}):
        bt, sh, ex, fa = (_row(n, b) for b in ("balltree", "sharded-balltree", "exact", "faiss-flat"))
        if bt and sh:
            ratios[f"balltree/sharded query speed-up @ {n}"] = bt["query_s"] / sh["query_s"]
            ratios[f"balltree/sharded build speed-up @ {n}"] = bt["build_s"] / sh["build_s"]
        if ex and fa:
            ratios[f"exact/faiss query time @ {n}"] = ex["query_s"] / fa["query_s"]
    result = {
        "rows": rows,
        "ratios": ratios,
        "notes": notes,
        "k": k,
        "shards": shards,
        "threads": threads,
        "repeat": repeat,
        "shard_actor_start_s": shard_actor_start_s,
        "machine": {
            "nproc": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "processor": _cpu_name(),
        },
        "command": command or "counterarg bench mining",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    table = format_table(result)
    log(table)
    if json_path:
        from counterarg.core.io import atomic_write_json

        atomic_write_json(Path(json_path), result)
    if out:
        from counterarg.core.io import atomic_write_text

        atomic_write_text(Path(out), to_markdown(result, table))
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def format_table(result: dict[str, Any]) -> str:
    """A markdown table of the rows plus the ratio lines."""
    lines = [
        f"| N | data | backend | build (s) | query-all k={result['k']:d} (s) | build+query (s) | ids = exact |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['n']:,} | {r['data']} | {r['backend']} | {r['build_s']:.3f} | "
            f"{r['query_s']:.3f} | {r['epoch_s']:.3f} | "
            f"{100 * r['ids_agree_with_exact']:.2f}% |"
        )
    lines.append("")
    for name, v in result["ratios"].items():
        lines.append(f"- {name}: **{v:.2f}x**" if "speed-up" in name else f"- {name}: **{v:.2f}**")
    return "\n".join(lines)


def to_markdown(result: dict[str, Any], table: str | None = None) -> str:
    m = result["machine"]
    la = result.get("load_avg")
    parts = [
        "# Mining index benchmark",
        "",
        f"Command: `{result['command']}`  ",
        f"Date: {result['date']}  ",
        f"Machine: nproc={m['nproc']}, torch threads={m['torch_threads']}, {m['processor']}, {m['platform']}  ",
        f"Threads for every backend (torch, faiss OpenMP, BLAS): {result['threads']}; "
        f"best of {result['repeat']} interleaved run(s); k={result['k']}, "
        f"shards={result['shards']}  ",
    ]
    if la:
        parts.append(f"Load average at the end (other processes on the machine): {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}  ")
    if result.get("shard_actor_start_s") is not None:
        parts.append(
            f"Sharded actor start-up (once per run, not per epoch): "
            f"{result['shard_actor_start_s']:.2f} s; its build column is the in-place "
            f"rebuild the miner does each epoch.  "
        )
    parts += ["", table or format_table(result), ""]
    parts += [f"- note: {n}" for n in result["notes"]]
    parts += [
        "",
        "Query-all = every database row queried against the database (what mining does "
        "each epoch). 'ids = exact' is the fraction of neighbour ids equal to the exact "
        "backend's (ties broken by id); faiss breaks ties its own way, so duplicate rows "
        "can lower its figure without any distance being wrong.",
        "",
    ]
    return "\n".join(parts)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The flags of ``counterarg bench mining`` (pass a subparser to add them to it)."""
    p = parser or argparse.ArgumentParser(prog="counterarg bench mining", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--n",
        type=int_at_least(1),
        nargs="+",
        default=list(DEFAULT_NS),
        metavar="N",
        help="database sizes (default: 4065 20000 200000)",
    )
    p.add_argument("--shards", type=int_at_least(1), default=2, help="sharded-balltree actors (default 2)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write results as JSON")
    p.add_argument(
        "--embeddings",
        default=None,
        metavar="FILE.npy",
        help="real embeddings [N, d] (a .npy, e.g. from counterarg embed) for the real size "
        "(default: the real-size synthetic set)",
    )
    p.add_argument("--out", default=DEFAULT_OUT, help=f"markdown report (default {DEFAULT_OUT})")
    p.add_argument("--repeat", type=int_at_least(1), default=1, help="timed runs per backend; best is kept")
    p.add_argument("--threads", type=int_at_least(1), default=None, help="threads per backend (default nproc)")
    p.add_argument(
        "--balltree-max",
        type=int_at_least(0),
        default=20_000,
        help="largest N for the BallTree backends (default 20000)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    a = build_parser().parse_args(argv)
    if a.embeddings:
        read_embeddings(a.embeddings)  # before any backend runs
    result = run_bench(
        ns=a.n,
        shards=a.shards,
        json_path=a.json,
        embeddings=a.embeddings,
        out=a.out,
        repeat=a.repeat,
        threads=a.threads,
        balltree_max=a.balltree_max,
        command="counterarg bench mining " + portable_command(argv),
    )  # no path of this machine
    # the project's backends must return exactly the exact index's ids (faiss breaks ties its own way)
    bad = [
        f"{r['backend']} at n={r['n']} ({r['ids_agree_with_exact']:.4f})"
        for r in result["rows"]
        if r["backend"] != "faiss-flat" and r["ids_agree_with_exact"] < 1.0
    ]
    if bad:
        print("bench mining: ids differ from the exact index for " + ", ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
