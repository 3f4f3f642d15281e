"""Scoring of the eight retrieval tasks: each query's rank of its true counter, vectorised.

How candidates are scored (``retrieval``, ``rerank``, ``fused``, ...) is the
:class:`~counterarg.retrieval.scorers.Scorer` registry (retrieval/scorers.py); this module finds, for
every query of a split at once and every task's pool, the rank the scorer gives the true counter (no
Python loop over queries or pairs). Passing the raw pooled encoder outputs with ``metric="cosine"``
gives the zero-shot baseline.
:func:`evaluate_model` scores a model the way its config says (scorer, metric, ``rerank_k``, ``ks``,
its weight), so the scoring options are threaded through one call.

**Ties.** Candidates at equal distance are ordered by candidate index, lower first, except the
true counter, which is always placed *after* every candidate it ties with (in distance, and within
the reranked top ``k`` in probability): a degenerate model (e.g. all embeddings equal) gets the
worst rank, never a lucky acc@1. scorers.rank_candidates (one query, no true counter) orders equal distances
by index and equal scores by distance order.

**How the rank is found without sorting.** With that tie rule the distance rank of the true
counter is ``#{pool members with distance <= its distance}``, one comparison over the ``[B, 2Q]``
distance block. For rerank, only queries whose true counter is within the top ``k`` can move, and
its new rank is ``1 + #{other top-k members with probability >= its probability}``. The other
top-k members come from a ``topk`` over the masked distance block (rows with ties at the cut are
redone by a stable sort, so the lower index wins). The classifier runs once over the
deduplicated union of (query, candidate) pairs of all tasks, in chunks, so the eight tasks cost
little more than the largest one.

Metrics from the ranks (acc@k, MRR, the unseen view, the table): retrieval/metrics.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..retrieval.metrics import view_metrics
from ..retrieval.pools import Pools
from ..retrieval.scorers import Classify, as_tensor, check_options, pair_values, prepare, row_distances, work_dtype
from ..retrieval.tasks import REGISTRY, EvaluationError, check_tasks

__all__ = ["EvaluationError", "evaluate_model", "evaluate_split", "query_ranks"]

#: elements of one [B, 2Q] distance block (bounds memory: ~4M float64 = 32 MiB per tensor)
BLOCK_ELEMENTS = 1 << 22
#: pairs per classifier call
CLASSIFY_CHUNK = 8192


# --------------------------------------------------------------------------- helpers
def _classifier_values(classify: Classify, scorer, keys: torch.Tensor, n_cand: int, s_q, s_c, h_q, h_c) -> torch.Tensor:
    """scorers.pair_values in chunks of :data:`CLASSIFY_CHUNK` pairs."""
    return pair_values(classify, scorer, keys, n_cand, s_q, s_c, h_q, h_c, chunk=CLASSIFY_CHUNK)


# --------------------------------------------------------------------------- ranks
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
    scorer = check_options(mode, metric, rerank_k, (1,))
    q = pools.num_queries
    if q == 0:
        raise EvaluationError(f"split {split!r} has no queries (no (point, counter) pairs)")
    ps = as_tensor(point_sim, "point_sim", q, split)  # [Q, d]
    device = ps.device
    cs = as_tensor(counter_sim, "counter_sim", q, split, device)  # [Q, d]
    if cs.shape[1] != ps.shape[1]:
        raise EvaluationError(f"split {split!r}: point_sim has dim {ps.shape[1]} but counter_sim has dim {cs.shape[1]}")
    rerank = scorer.needs_classifier and rerank_k > 1  # reranking a single candidate changes nothing
    if scorer.needs_classifier:
        if classify is None:
            raise EvaluationError(f"split {split!r}: mode {mode!r} needs a classify function")
        ph = as_tensor(point_h, "point_h", q, split, device)  # [Q, H]
        ch = as_tensor(counter_h, "counter_h", q, split, device)  # [Q, H]
        if ch.shape[1] != ph.shape[1]:
            raise EvaluationError(f"split {split!r}: point_h has dim {ph.shape[1]} but counter_h has dim {ch.shape[1]}")

    n_cand = 2 * q
    wd = work_dtype(device)
    query = prepare(ps, metric, wd)  # [Q, d]
    cand = torch.cat([prepare(cs, metric, wd), query])  # [2Q, d]: counters, then points
    for t in tasks:  # empty pools cannot happen for true pairs; guard anyway (hand-made Pools)
        if (pools.pool_sizes(t) < 1).any():
            raise EvaluationError(f"split {split!r}, task {t!r}: a query has an empty candidate pool")

    cand_sq = (cand * cand).sum(1) if metric == "l2" else None  # [2Q]
    ranks = {t: torch.empty(q, dtype=torch.long, device=device) for t in tasks}
    # rerank: (query ids [n], top ids [n, k-1], valid [n, k-1], top distances [n, k-1], true distance [n])
    pending = {t: [] for t in tasks}
    block = max(1, BLOCK_ELEMENTS // n_cand)
    kk = min(rerank_k - 1, n_cand)  # other members of the top k besides the true counter
    inf = float("inf")
    dense = {t for t in tasks if REGISTRY[t].split_wide}  # whole-split pools: columns of the distance block
    if dense:
        # copies: only the first copy of a text counts (rep), and the candidates sharing a text
        # with the query or its true counter (peers) are never *other* pool members
        rep = {t: torch.as_tensor(pools.representatives(t), device=device) for t in dense}  # [2Q] each
        peers = torch.as_tensor(pools.peers(), device=device)  # [Q, m], padded with column 0
        first = torch.ones_like(peers, dtype=torch.bool)
        first[:, 1:] = peers[:, 1:] != peers[:, :1]  # the padding repeats column 0
    for start in range(0, q, block):
        rows = slice(start, min(q, start + block))
        qi = torch.arange(rows.start, rows.stop, device=device)  # [B]
        b = torch.arange(qi.shape[0], device=device)  # [B]
        dist = row_distances(query[rows], cand, cand_sq, metric)  # [B, 2Q]
        d_true = dist[b, qi]  # [B]
        if dense:
            # at or before the true counter (ties count before it)
            not_after = dist <= d_true[:, None]  # [B, 2Q]
            pr, pf = peers[rows], first[rows]  # [B, m], [B, m]
            peer_before = not_after.gather(1, pr) & pf  # [B, m]
        for t in tasks:
            if t in dense:
                cols = n_cand if REGISTRY[t].with_points else q  # counters only: the first Q columns
                in_pool = rep[t][pr] & (pr < cols)  # [B, m]: peers that are represented in the pool
                r_d = 1 + (not_after[:, :cols] & rep[t][None, :cols]).sum(1) - (peer_before & in_pool).sum(1)  # [B]
            else:
                ids, valid = pools.index(t, rows, device)  # [B, P], [B, P]; copies already left out
                text = pools.text_on(device)  # [2Q]
                other = valid & (text[ids] != text[qi][:, None])  # [B, P]; the true counter's text is the hit
                dc = dist.gather(1, ids).masked_fill_(~other, inf)  # [B, P]
                r_d = 1 + (dc <= d_true[:, None]).sum(1)  # [B]
            ranks[t][rows] = r_d
            if not rerank:
                continue
            need = torch.nonzero(r_d <= rerank_k).flatten()  # [n]: rows whose true counter can move
            if need.numel() == 0:
                continue
            if t in dense:
                dm = dist[need, :cols].masked_fill_(~rep[t][None, :cols], inf)  # [n, cols]; a copy
                pn = pr[need]  # [n, m]
                dm.scatter_(1, pn.clamp_max(cols - 1).where(pn < cols, pn[:, :1]), inf)  # peers out
                cols_ids = None
            else:
                dm = dc[need]  # [n, P]; the true counter's text is already out
                cols_ids = ids[need]  # [n, P]
            width = min(kk, dm.shape[1])
            vals, top = torch.topk(dm, width, dim=1, largest=False, sorted=True)  # [n, k-1]
            valid_top = torch.isfinite(vals)  # [n, k-1]; pools smaller than k are padded
            # topk picks arbitrarily among candidates tied at the cut; redo those rows by a stable
            # sort (columns are in candidate order, so the lower index wins). Needs exact ties.
            cut = vals[:, -1]  # [n]
            over = torch.nonzero(torch.isfinite(cut) & ((dm <= cut[:, None]).sum(1) > width)).flatten()
            if over.numel():
                top[over] = torch.sort(dm[over], dim=1, stable=True).indices[:, :width]
            top_ids = top if cols_ids is None else cols_ids.gather(1, top)  # [n, k-1] candidate ids
            pending[t].append((qi[need], top_ids, valid_top, dm.gather(1, top), d_true[need]))

    if rerank and any(pending.values()):
        parts = []
        for t in tasks:
            for qn, ids, valid, _, _ in pending[t]:
                parts.append(qn * n_cand + qn)  # the true pair
                parts.append((qn[:, None] * n_cand + ids)[valid])  # [n_valid]
        keys = torch.unique(torch.cat(parts))  # sorted; each pair classified once for all tasks
        probs = _classifier_values(classify, scorer, keys, n_cand, ps, torch.cat([cs, ps]), ph, torch.cat([ch, ph]))
        for t in tasks:
            for qn, ids, valid, d_top, d_qn in pending[t]:
                p_true = probs[torch.searchsorted(keys, qn * n_cand + qn)]  # [n]
                at = torch.searchsorted(keys, qn[:, None] * n_cand + ids).clamp_max(keys.shape[0] - 1)
                p_other = probs[at]  # [n, k-1]; padded slots are masked by ``valid``
                p_true = scorer.combine(p_true, d_qn, fused_w)  # [n]; distances up to a per-row constant
                p_other = scorer.combine(p_other, d_top.double().nan_to_num(posinf=0.0), fused_w)  # [n, k-1]
                ahead = (valid & (p_other >= p_true[:, None])).sum(1)  # [n]; ties go ahead
                ranks[t][qn] = 1 + ahead
    return ranks


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
    check_options(mode, metric, rerank_k, ks)
    if pools.num_queries == 0:
        raise EvaluationError(f"split {split_name!r} has no queries (no (point, counter) pairs)")
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

    from ..data.corpus import TextTable, load_corpus
    from ..model.biencoder import BiEncoder
    from ..nn.encoder import pick_device
    from ..retrieval.arguana import build_view
    from ..retrieval.pools import split_pools
    from .arguana import collection_embeddings, pair_embeddings, zero_shot_view_metrics

    cfg = config.replace(finetune="none")
    corpus = load_corpus(cfg.corpus)
    corpus.announce(progress)
    model = BiEncoder.build(cfg, TextTable.from_corpus(corpus), pick_device(cfg.device), progress=progress)
    out: dict[str, float] = {}
    ranks: dict[str, np.ndarray] = {}
    collection = None
    for split in [s for s in splits if s in corpus.splits]:
        pools = split_pools(corpus, split)
        if split != "training":  # the ArguAna view (retrieval/arguana.py): every text embedded once
            collection = collection if collection is not None else collection_embeddings(model)
            out.update(zero_shot_view_metrics(model, build_view(corpus, model.table, split), collection))
        emb = pair_embeddings(model, split, collection) if collection is not None else None
        metrics, by_task = zero_shot_split(model, split, pools, return_ranks=True, emb=emb)
        out.update(metrics)
        ranks.update({f"{split}/{t}": np.asarray(r) for t, r in by_task.items()})
        if pools.unseen is not None:
            ranks[f"{split}/unseen"] = np.asarray(pools.unseen)
    return (out, ranks) if with_ranks else out
