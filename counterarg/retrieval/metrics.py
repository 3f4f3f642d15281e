"""From per-query ranks to numbers: acc@k and MRR per task, the unseen view, and the text table.

``acc@k`` = fraction of queries whose true counter ranks within the top ``k`` (acc@1 is the paper's
accuracy); ``mrr`` = mean of ``1 / rank``. Keys are flat: ``{split}/{task}/acc@{k}``,
``{split}/{task}/mrr``, and ``{split}/mean/...`` averaged over the evaluated tasks.

The unseen view (queries whose texts never occur in training, pools.py) carries the split name
``{split}_unseen``. Kept apart from pool_ranks.py and evaluation/evaluate.py, which find the ranks:
these functions are all a caller needs to report ranks it already has (per-query significance tests,
``counterarg evaluate``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .pools import Pools
from .tasks import EvaluationError, task_names

#: the split-name suffix of the unseen view: queries whose texts never occur in training
UNSEEN_SUFFIX = "_unseen"


def metric_key(split: str, task: str, measure: str) -> str:
    """The flat metric name, e.g. ``metric_key("validation", "mean", "acc@1")``."""
    return f"{split}/{task}/{measure}"


def check_ks(ks: Sequence[int]) -> Sequence[int]:
    """``ks`` (the cut-offs of acc@k) when a non-empty list of integers >= 1, else an EvaluationError."""
    if not ks or any(int(k) < 1 for k in ks):
        raise EvaluationError(f"ks must be a non-empty list of integers >= 1, got {ks!r}")
    return ks


def metrics_from_ranks(split: str, ranks: dict[str, torch.Tensor], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """acc@k and MRR per task and their mean over the tasks, as flat keys."""
    out: dict[str, float] = {}
    sums: dict[str, float] = {}
    for t, r in ranks.items():
        r = torch.as_tensor(r).double()
        vals = {f"acc@{k}": float((r <= k).double().mean()) for k in ks}
        vals["mrr"] = float((1.0 / r).mean())
        for name, v in vals.items():
            out[metric_key(split, t, name)] = v
            sums[name] = sums.get(name, 0.0) + v
    for name, v in sums.items():
        out[metric_key(split, "mean", name)] = v / len(ranks)
    return out


def unseen_split(split: str) -> str:
    """The split name of the unseen view of ``split``, e.g. ``test_unseen``."""
    return f"{split}{UNSEEN_SUFFIX}"


def view_metrics(
    split: str, pools: Pools, ranks: dict[str, torch.Tensor], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Metrics of both views from per-query ranks: all queries (``{split}/...``) and, where the
    pools carry an unseen mask with at least one query, the unseen queries (``{split}_unseen/...``)."""
    out = metrics_from_ranks(split, ranks, ks)
    if pools.unseen is not None and pools.unseen.any():
        keep = torch.as_tensor(pools.unseen)
        out.update(metrics_from_ranks(unseen_split(split), {t: r[keep.to(r.device)] for t, r in ranks.items()}, ks))
    return out


def format_table(
    metrics: dict[str, float], split: str, pools: Pools | None = None, ks: Sequence[int] = (1, 5, 10)
) -> str:
    """A text table: one row per evaluated task (plus ``mean``), columns acc@k, MRR, mean pool size
    (over the view's queries: ``split`` ``test_unseen`` averages over the unseen queries)."""
    names = [f"acc@{k}" for k in ks] + ["mrr"]
    rows = [t for t in (*task_names(), "mean") if metric_key(split, t, "mrr") in metrics]
    if not rows:
        raise EvaluationError(f"no metrics for split {split!r} (keys look like '{split}/TASK/mrr')")
    unseen = split.endswith(UNSEEN_SUFFIX)
    sizes = pools.sizes([t for t in rows if t != "mean"], unseen=unseen) if pools is not None else {}
    w = max(6, len(split))
    head = f"{split:<{w}}" + "".join(f"{n:>8}" for n in names) + (f"{'pool':>9}" if pools is not None else "")
    lines = [head, "-" * len(head)]
    for t in rows:
        line = f"{t:<{w}}" + "".join(
            f"{metrics[metric_key(split, t, n)]:>8.3f}" if metric_key(split, t, n) in metrics else f"{'-':>8}"
            for n in names
        )
        if pools is not None:
            line += f"{sizes[t]:>9.1f}" if t in sizes else f"{'':>9}"
        lines.append(line)
    return "\n".join(lines)
