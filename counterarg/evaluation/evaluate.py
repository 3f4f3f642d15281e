"""The eight retrieval tasks scored: each query's rank of its true counter, then acc@k and MRR.

:func:`query_ranks` ranks every query of a split at once under a scorer: its options checked once
(scorers.check_options), its inputs once (pool_ranks.split_embeddings), then the scorer's entry
ranks the pools (scorers.Scorer.rank_pools; how, and the tie rule: retrieval/pool_ranks.py).
:func:`evaluate_split` turns the ranks into flat metrics of both views (retrieval/metrics.py), and
:func:`evaluate_model` scores a model the way its config says (scorer, metric, ``rerank_k``, ``ks``,
its weight), so the scoring options are threaded through one call. Passing the raw pooled encoder
outputs with ``metric="cosine"`` gives the zero-shot baseline (:func:`zero_shot_split`,
:func:`zero_shot_metrics`). :func:`evaluate_corpus_split` is ``counterarg evaluate``'s work: a corpus
split scored by a checkpoint or zero-shot, on the tasks and the ArguAna view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..retrieval.metrics import check_ks, view_metrics
from ..retrieval.pool_ranks import split_embeddings
from ..retrieval.pools import Pools
from ..retrieval.scorers import Classify, check_options
from ..retrieval.tasks import EvaluationError, check_tasks

if TYPE_CHECKING:
    from ..data.corpus import Corpus
    from ..retrieval.arguana import ArguAnaView

__all__ = ["EvaluationError", "evaluate_model", "evaluate_split", "query_ranks"]


def query_ranks(
    pools: Pools,
    point_sim,
    counter_sim,
    point_h=None,
    counter_h=None,
    classify: Classify | None = None,
    *,
    mode: str = "rerank",
    metric: str = "l2",
    rerank_k: int = 10,
    tasks: Sequence[str] | None = None,
    split_name: str | None = None,
    fused_w: float = 0.0,
) -> dict[str, torch.Tensor]:
    """1-based rank of every query's true counter in its pool, per task: ``{task: LongTensor [Q]}``.

    Arguments as in :func:`evaluate_split` (``split_name`` defaults to ``pools.split`` and only
    names the split in error messages). Runs on the device of ``point_sim``.
    """
    split = split_name or pools.split
    tasks = check_tasks(tasks)
    scorer = check_options(mode, metric, rerank_k)
    emb = split_embeddings(
        pools,
        point_sim,
        counter_sim,
        point_h,
        counter_h,
        metric=metric,
        tasks=tasks,
        split=split,
        scorer=scorer,
        classify=classify,
    )
    return scorer.rank_pools(pools, emb, tasks, classify, rerank_k=rerank_k, fused_w=fused_w)


def evaluate_split(
    split_name: str,
    pools: Pools,
    point_sim,
    counter_sim,
    point_h=None,
    counter_h=None,
    classify: Classify | None = None,
    *,
    mode: str = "rerank",
    metric: str = "l2",
    rerank_k: int = 10,
    ks: Sequence[int] = (1, 5, 10),
    tasks: Sequence[str] | None = None,
    return_ranks: bool = False,
    fused_w: float = 0.0,
):
    """Evaluate one split on the given tasks; returns flat metrics of both views (see module doc).

    ``point_sim``/``counter_sim``: ``[Q, d]`` similarity-space embeddings in pair order (tensors or
    arrays, any device); ``point_h``/``counter_h``: ``[Q, H]`` raw pooled encoder outputs, needed
    when ``mode``'s scorer (scorers.SCORERS) needs the classifier, together with
    ``classify(s_p, s_c, h_p, h_c) -> logits [M, 2]`` (put the model in eval mode first; it is
    called under ``torch.no_grad``). With ``return_ranks`` returns ``(metrics, ranks)``, ranks as
    from :func:`query_ranks` (kept for per-query significance tests).
    Raises :class:`EvaluationError` for an empty split or pool and for embeddings whose row count
    differs from ``pools.num_queries``.
    """
    check_ks(ks)
    ranks = query_ranks(
        pools,
        point_sim,
        counter_sim,
        point_h,
        counter_h,
        classify,
        mode=mode,
        metric=metric,
        rerank_k=rerank_k,
        tasks=tasks,
        split_name=split_name,
        fused_w=fused_w,
    )
    metrics = view_metrics(split_name, pools, ranks, ks)
    return (metrics, ranks) if return_ranks else metrics


def evaluate_model(
    model,
    split: str,
    pools: Pools,
    emb: dict | None = None,
    *,
    fused_w: float | None = None,
    return_ranks: bool = False,
):
    """:func:`evaluate_split` of ``model`` (a biencoder.BiEncoder) on one split, scored as its config
    says (``eval_mode``'s scorer, ``eval_metric``, ``rerank_k``, ``ks``) with its weight
    (``model.scoring_weight()``, or ``fused_w``); ``emb`` = ``model.embed_pairs(split)`` when given."""
    c = model.config
    emb = emb if emb is not None else model.embed_pairs(split)
    with torch.no_grad():
        return evaluate_split(
            split,
            pools,
            emb["s_p"],
            emb["s_c"],
            emb["h_p"],
            emb["h_c"],
            model.heads.classify,
            mode=c.eval_mode,
            metric=c.eval_metric,
            rerank_k=c.rerank_k,
            ks=c.ks,
            return_ranks=return_ranks,
            fused_w=model.scoring_weight() if fused_w is None else fused_w,
        )


def zero_shot_split(model, split: str, pools: Pools, return_ranks: bool = False, emb: dict | None = None):
    """The untrained encoder on one split: ``model``'s pooled output (its heads unused) ranked by
    cosine retrieval (both views); with ``return_ranks`` also its per-query ranks (``{task: [Q]}``);
    ``emb`` = ``model.embed_pairs(split)`` when given."""
    emb = emb if emb is not None else model.embed_pairs(split)
    with torch.no_grad():
        return evaluate_split(
            split,
            pools,
            emb["h_p"],
            emb["h_c"],
            mode="retrieval",
            metric="cosine",
            ks=model.config.ks,
            return_ranks=return_ranks,
        )


def zero_shot_metrics(
    config, splits: tuple[str, ...] = ("validation", "test"), progress: bool = False, with_ranks: bool = False
):
    """The baseline every trained model is compared with: the frozen encoder's pooled output with
    cosine retrieval, on ``splits`` of ``config``'s corpus, from the (pooled) feature cache; the
    eight tasks and, for splits other than training, the ArguAna view (evaluation/arguana.py).

    With ``with_ranks`` returns ``(metrics, ranks)``, ranks keyed as a checkpoint's best ranks
    (``{split}/{task}`` ``[Q]`` and ``{split}/unseen`` ``[Q]`` bool) for the sweep's tests against it.
    """
    import numpy as np

    from ..model.over_corpus import over_corpus
    from ..retrieval.arguana import build_view
    from ..retrieval.pools import split_pools
    from .arguana import collection_embeddings, pair_embeddings, zero_shot_view_metrics

    cfg = config.replace(finetune="none")
    base = over_corpus(cfg, progress=progress)
    corpus, model = base.corpus, base.build(cfg, progress=progress)
    out: dict[str, float] = {}
    ranks: dict[str, np.ndarray] = {}
    collection = None
    for split in [s for s in splits if s in corpus.splits]:
        pools = split_pools(corpus, split)
        if split != "training":  # the ArguAna view (retrieval/arguana.py): every text embedded once
            collection = collection if collection is not None else collection_embeddings(model)
            out.update(zero_shot_view_metrics(model, build_view(corpus, base.table, split), collection))
        emb = pair_embeddings(model, split, collection) if collection is not None else None
        metrics, by_task = zero_shot_split(model, split, pools, return_ranks=True, emb=emb)
        out.update(metrics)
        ranks.update({f"{split}/{t}": np.asarray(r) for t, r in by_task.items()})
        if pools.unseen is not None:
            ranks[f"{split}/unseen"] = np.asarray(pools.unseen)
    return (out, ranks) if with_ranks else out


@dataclass(frozen=True)
class SplitReport:
    """One split of a corpus scored (:func:`evaluate_corpus_split`): flat ``metrics`` (the eight tasks,
    their unseen view, the ArguAna view), the split's ``pools`` and ArguAna ``view``, the ``corpus``."""

    metrics: dict[str, float]
    pools: Pools
    view: ArguAnaView
    corpus: Corpus


def evaluate_corpus_split(
    config, split: str, state: dict | None = None, *, source: Path | None = None, progress: bool = True
) -> SplitReport:
    """``counterarg evaluate``'s work: ``split`` of ``config``'s corpus scored on the eight tasks and the
    ArguAna view, every text embedded once, by the checkpoint ``state`` (model.checkpoint.read_checkpoint,
    read from ``source``) as ``config`` says with its weight, or without ``state`` the zero-shot
    baseline (the untrained encoder's pooled output, cosine). A missing split is an error before the
    model is built."""
    from ..model.over_corpus import over_corpus
    from ..retrieval.arguana import build_view
    from ..retrieval.pools import split_pools
    from .arguana import collection_embeddings, model_view_metrics, pair_embeddings, zero_shot_view_metrics

    base = over_corpus(config, progress=progress)
    pools = split_pools(base.corpus, split)  # clear error when the split is missing
    if progress:
        print(f"[counterarg] {pools.describe()}", flush=True)
    view = build_view(base.corpus, base.table, split)  # the ArguAna view (retrieval/arguana.py)
    if state is None:  # zero-shot: raw pooled encoder output, cosine retrieval
        model = base.build(config, progress=progress)
        every = collection_embeddings(model)  # each text once, for the tasks and the view
        metrics = zero_shot_split(model, split, pools, emb=pair_embeddings(model, split, every))
        metrics.update(zero_shot_view_metrics(model, view, every))
    else:
        model = base.load(state, config, source=source, progress=progress)
        every, w = collection_embeddings(model), model.scoring_weight(strict=True)
        metrics = evaluate_model(model, split, pools, pair_embeddings(model, split, every), fused_w=w)
        metrics.update(model_view_metrics(model, view, every, fused_w=w))
    return SplitReport(metrics, pools, view, base.corpus)
