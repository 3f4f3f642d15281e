"""Benchmark of the evaluator: the reference implementation's per-pair loop against the vectorised evaluator
(:mod:`counterarg.evaluation.evaluate`).

Reference style = what the original scripts did, per task: a Python loop over queries that computes
the query's distances to its pool, takes the ``rerank_k`` nearest and calls the pair classifier
once per (query, candidate) pair. It is timed on a subset of queries and extrapolated linearly to
the whole split (the output says so). "Ours" is :func:`evaluate.evaluate_split` over the full
split. Embeddings are random (timing does not depend on their values); the pools are the real
test split's when the corpus is found, else a synthetic split of the same size. The reference-style
ranks of the timed subset are checked against ours, so the comparison is like for like.

    python -m counterarg.bench.eval [--corpus ZIP | --synthetic] [--reference-queries 30] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.corpus import real_corpus_path
from ..data.inputs import int_at_least
from ..retrieval.tasks import task_names

if TYPE_CHECKING:
    from ..retrieval.pools import Pools

DEFAULT_CORPUS = real_corpus_path()  # $COUNTERARG_CORPUS or ../shared/data


def synthetic_pools(n_queries: int = 1401, n_themes: int = 15, n_debates: int = 189, seed: int = 0) -> Pools:
    """A split shaped like the ArguAna test split (queries spread over debates and themes)."""
    from ..retrieval.pools import pools_from_labels

    rng = np.random.default_rng(seed)
    theme_of = rng.integers(0, n_themes, n_debates)
    deb = np.sort(rng.integers(0, n_debates, n_queries))
    sides = rng.choice(["pro", "con"], n_queries)
    return pools_from_labels("synthetic", [f"t{theme_of[d]}/d{d}" for d in deb], list(sides))


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def reference_style_ranks(pool_lists, queries, ps, cs, ph, ch, classify, rerank_k, rerank=True, hits=None):
    """The reference implementation's loop for one task: per query numpy distances, top k, one
    classifier call per pair.

    ``pool_lists[i]``: candidate ids of query ``i`` (built beforehand, untimed); ``hits[i]``: the pool
    member that stands for the true counter (its first copy; default ``i``). Returns ranks.
    """
    import torch

    cand = np.concatenate([cs, ps])  # [2Q, d]
    cand_h = np.concatenate([ch, ph])  # [2Q, H]
    ranks = []
    with torch.no_grad():
        for i in queries:
            pool = pool_lists[i]
            hit = i if hits is None else hits[i]
            d = np.linalg.norm(cand[pool] - ps[i], axis=1)  # [P]
            # ties: lower index first, true counter after its ties (same rule as retrieval/pool_ranks.py)
            order = np.lexsort((pool, pool == hit, d))
            ranked = list(pool[order])
            if rerank:
                top = ranked[:rerank_k]
                probs = []
                for c in top:  # one classifier call per (query, candidate) pair
                    logits = classify(
                        torch.from_numpy(ps[i : i + 1]),
                        torch.from_numpy(cand[c : c + 1]),
                        torch.from_numpy(ph[i : i + 1]),
                        torch.from_numpy(cand_h[c : c + 1]),
                    )
                    probs.append(torch.softmax(logits, dim=1)[0, 1].item())
                top = [top[j] for j in sorted(range(len(top)), key=lambda j: (-probs[j], top[j] == hit, j))]
                ranked = top + ranked[rerank_k:]
            ranks.append(ranked.index(hit) + 1)
    return ranks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="counterarg bench eval", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--corpus",
        default=str(DEFAULT_CORPUS) if DEFAULT_CORPUS.exists() else None,
        help="corpus zip/folder whose split gives the pools (default: $COUNTERARG_CORPUS or the "
        "../shared zip, if present)",
    )
    ap.add_argument("--synthetic", action="store_true", help="use a synthetic split of the test split's size")
    ap.add_argument("--split", default="test")
    ap.add_argument("--sim-dim", type=int_at_least(1), default=128)
    ap.add_argument("--hidden", type=int_at_least(1), default=384)
    ap.add_argument("--rerank-k", type=int_at_least(1), default=10)
    ap.add_argument(
        "--reference-queries",
        type=int_at_least(1),
        default=30,
        help="queries per task timed in reference style (extrapolated to the split)",
    )
    ap.add_argument("--repeats", type=int_at_least(1), default=3, help="runs of ours; the best is reported")
    ap.add_argument(
        "--threads",
        type=int_at_least(0),
        default=0,
        help="torch threads for both styles (default 0 = torch's default, all cores, as training uses)",
    )
    ap.add_argument("--seed", type=int_at_least(0), default=0)
    ap.add_argument("--out", help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    import torch  # after parsing: --help loads none of it

    from ..evaluation.evaluate import evaluate_split, query_ranks
    from ..nn.heads import Heads
    from ..retrieval.pools import build_pools

    if args.threads:
        torch.set_num_threads(args.threads)

    if args.corpus and not args.synthetic:
        from ..data.corpus import load_corpus

        pools = build_pools(load_corpus(args.corpus, splits=(args.split,)).split(args.split))
        source = f"{args.corpus} [{args.split}]"
    else:
        pools = synthetic_pools(seed=args.seed)
        source = "synthetic split (corpus not found or --synthetic)"
    q = pools.num_queries
    g = torch.Generator().manual_seed(args.seed)
    # one random embedding per distinct TEXT: verbatim copies embed identically, as with any encoder
    n_text = int(pools.text.max()) + 1
    text = torch.as_tensor(pools.text)
    sim, hid = torch.randn(n_text, args.sim_dim, generator=g), torch.randn(n_text, args.hidden, generator=g)
    cs, ps = sim[text[:q]], sim[text[q:]]  # [Q, d] each
    ch, ph = hid[text[:q]], hid[text[q:]]  # [Q, H] each
    torch.manual_seed(args.seed)
    clf = Heads(args.hidden, args.sim_dim).eval().classify  # the model's own pair classifier
    k = args.rerank_k

    print(
        f"pools: {source}: {q} queries; random embeddings d={args.sim_dim}, H={args.hidden}; "
        f"rerank_k={k}; torch threads={torch.get_num_threads()}"
    )
    ours_all = {
        "retrieval": _best(lambda: evaluate_split("bench", pools, ps, cs, mode="retrieval"), args.repeats),
        "rerank": _best(
            lambda: evaluate_split("bench", pools, ps, cs, ph, ch, clf, mode="rerank", rerank_k=k), args.repeats
        ),
    }
    ours_ranks = query_ranks(pools, ps, cs, ph, ch, clf, mode="rerank", rerank_k=k)
    ps_n, cs_n, ph_n, ch_n = (x.numpy() for x in (ps, cs, ph, ch))
    n_sub = max(1, min(args.reference_queries, q))
    sub = np.unique(np.linspace(0, q - 1, n_sub).round().astype(int))
    rows, ref_total, agree = [], {"retrieval": 0.0, "rerank": 0.0}, 0
    sizes = pools.sizes()
    print(
        f"reference style: Python loop over queries, one classifier call per (query, candidate) pair; timed on "
        f"{len(sub)} of {q} queries per task and extrapolated x{q / len(sub):.1f}"
    )
    print(
        f"{'task':<6}{'pool':>8}{'ours ret ms':>13}{'ours rr ms':>12}"
        f"{'ref ret ms':>13}{'ref rr ms':>12}{'rr speed-up':>13}"
    )
    for task in task_names():
        mask = pools.mask(task).numpy()
        pool_lists = {int(i): np.nonzero(mask[i])[0] for i in sub}  # untimed, as if precomputed
        hits = {i: next(int(c) for c in pool_lists[i] if pools.text[c] == pools.text[i]) for i in pool_lists}
        o_ret = _best(lambda: evaluate_split("bench", pools, ps, cs, mode="retrieval", tasks=(task,)), args.repeats)
        o_rr = _best(
            lambda: evaluate_split("bench", pools, ps, cs, ph, ch, clf, mode="rerank", rerank_k=k, tasks=(task,)),
            args.repeats,
        )
        t = time.perf_counter()
        reference_style_ranks(pool_lists, sub, ps_n, cs_n, ph_n, ch_n, clf, k, rerank=False, hits=hits)
        s_ret = (time.perf_counter() - t) * q / len(sub)
        t = time.perf_counter()
        s_ranks = reference_style_ranks(pool_lists, sub, ps_n, cs_n, ph_n, ch_n, clf, k, hits=hits)
        s_rr = (time.perf_counter() - t) * q / len(sub)
        agree += int(s_ranks == ours_ranks[task][torch.as_tensor(sub)].tolist())
        ref_total["retrieval"] += s_ret
        ref_total["rerank"] += s_rr
        rows.append(
            {
                "task": task,
                "pool": sizes[task],
                "ours_retrieval_s": o_ret,
                "ours_rerank_s": o_rr,
                "reference_retrieval_s": s_ret,
                "reference_rerank_s": s_rr,
            }
        )
        print(
            f"{task:<6}{sizes[task]:>8.1f}{o_ret * 1e3:>13.1f}{o_rr * 1e3:>12.1f}{s_ret * 1e3:>13.0f}"
            f"{s_rr * 1e3:>12.0f}{s_rr / o_rr:>12.0f}x"
        )
    ratio = {m: ref_total[m] / ours_all[m] for m in ours_all}
    print(
        f"all eight tasks, ours (one call): retrieval {ours_all['retrieval']:.3f} s, rerank {ours_all['rerank']:.3f} s"
    )
    print(
        f"all eight tasks, reference style (extrapolated): retrieval {ref_total['retrieval']:.2f} s, "
        f"rerank {ref_total['rerank']:.2f} s"
    )
    print(
        f"speed-up: retrieval {ratio['retrieval']:.0f}x, rerank {ratio['rerank']:.0f}x "
        f"(target >= 50x); reference-style ranks equal ours on the timed queries for {agree}/{len(task_names())} tasks"
    )
    if args.out:
        from ..core.io import atomic_write_json

        atomic_write_json(
            Path(args.out),
            {
                "pools": source,
                "queries": q,
                "sim_dim": args.sim_dim,
                "hidden": args.hidden,
                "rerank_k": k,
                "threads": torch.get_num_threads(),
                "reference_queries": int(len(sub)),
                "tasks": rows,
                "ours_all_s": ours_all,
                "reference_all_s": ref_total,
                "speedup": ratio,
                "ranks_agree_tasks": agree,
            },
        )
    return 0 if agree == len(task_names()) else 1


if __name__ == "__main__":
    sys.exit(main())
