"""Scoring of the eight retrieval tasks: retrieval or classifier rerank, acc@k, MRR, the table.

Three modes, all vectorised (no Python loop over queries or pairs):

``retrieval``
    rank each query's pool by distance in the similarity space: squared L2 (the reference implementation's; same order
    as L2) or cosine distance ``1 - cos``. Passing the raw pooled encoder outputs with
    ``metric="cosine"`` gives the zero-shot baseline.
``rerank``
    the reference implementation's evaluator, with its query bug fixed (it fed counter ``i`` instead of point
    ``i``): take the ``rerank_k`` nearest candidates of the pool by distance, reorder those by the
    pair classifier's probability of the positive class (softmax column 1); candidates past
    ``rerank_k`` keep their distance order after them.
``fused``
    the same top ``rerank_k``, reordered by ``fused_w * logit - distance``, where ``logit`` is the
    classifier's log-odds of "is the counter": the classifier corrects the distance instead of
    replacing it (``fused_w = 0`` is retrieval). Training picks ``fused_w`` on validation each epoch.

**Ties.** Candidates at equal distance are ordered by candidate index, lower first, except the
true counter, which is always placed *after* every candidate it ties with (in distance, and within
the reranked top ``k`` in probability): a degenerate model (e.g. all embeddings equal) gets the
worst rank, never a lucky acc@1. :func:`rank_candidates` (no true counter) orders equal distances
by index and equal probabilities by distance order.

**How the rank is found without sorting.** With that tie rule the distance rank of the true
counter is ``#{pool members with distance <= its distance}``, one comparison over the ``[B, 2Q]``
distance block. For rerank, only queries whose true counter is within the top ``k`` can move, and
its new rank is ``1 + #{other top-k members with probability >= its probability}``. The other
top-k members come from a ``topk`` over the masked distance block (rows with ties at the cut are
redone by a stable sort, so the lower index wins). The classifier runs once over the
deduplicated union of (query, candidate) pairs of all tasks, in chunks, so the eight tasks cost
little more than the largest one.

Metrics from the ranks (acc@k, MRR, the unseen view, the table): metrics.py.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .metrics import view_metrics
from .pools import Pools
from .tasks import REGISTRY, EvaluationError, check_tasks

__all__ = ["EvaluationError", "evaluate_split", "query_ranks", "rank_candidates", "MODES", "METRICS"]

#: pair classifier: (s_p [M,d], s_c [M,d], h_p [M,H], h_c [M,H]) -> logits [M,2]
Classify = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

MODES = ("retrieval", "rerank", "fused")
METRICS = ("l2", "cosine")
#: elements of one [B, 2Q] distance block (bounds memory: ~4M float64 = 32 MiB per tensor)
BLOCK_ELEMENTS = 1 << 22
#: pairs per classifier call
CLASSIFY_CHUNK = 8192


# --------------------------------------------------------------------------- helpers
def _tensor(x, name: str, rows: int | None, split: str, device=None) -> torch.Tensor:
    """``x`` as a 2-D float tensor with ``rows`` rows, or an :class:`EvaluationError` saying why not."""
    if x is None:
        raise EvaluationError(f"split {split!r}: {name} is required")
    t = torch.as_tensor(x)
    if device is not None:
        t = t.to(device)
    if t.ndim != 2:
        raise EvaluationError(f"split {split!r}: {name} must be 2-D [rows, dim], got shape {tuple(t.shape)}")
    if rows is not None and t.shape[0] != rows:
        raise EvaluationError(
            f"split {split!r}: {name} has {t.shape[0]} rows but the pools have {rows} queries"
        )
    if not t.is_floating_point():
        t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise EvaluationError(f"split {split!r}: {name} contains NaN or infinite values")
    return t.detach()


def _work_dtype(device: torch.device) -> torch.dtype:
    """float64 for distances where available: fewer spurious ties/flips from rounding."""
    return torch.float32 if device.type == "mps" else torch.float64


def _row_distances(query: torch.Tensor, cand: torch.Tensor, cand_sq: torch.Tensor | None, metric: str) -> torch.Tensor:
    """``[B, C]`` distances up to a per-row constant (smaller = closer), for ranking within rows.

    L2: ``||c||^2 - 2 q.c`` (= squared L2 minus ``||q||^2``: same order as L2 in every row, and one
    fused ``addmm``); cosine: ``-cos`` (inputs pre-normalised). Inputs already in the work dtype.
    """
    if metric == "cosine":
        return torch.mm(query, cand.T).neg_()  # [B, C]
    return torch.addmm(cand_sq[None, :], query, cand.T, alpha=-2.0)  # [B, C]


def _prepare(x: torch.Tensor, metric: str, dtype: torch.dtype) -> torch.Tensor:
    x = x.to(dtype)
    return F.normalize(x, dim=1) if metric == "cosine" else x


def _check_options(mode: str, metric: str, rerank_k: int, ks: Sequence[int]) -> None:
    if mode not in MODES:
        raise EvaluationError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if metric not in METRICS:
        raise EvaluationError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    if int(rerank_k) < 1:
        raise EvaluationError(f"rerank_k must be >= 1, got {rerank_k!r}")
    if not ks or any(int(k) < 1 for k in ks):
        raise EvaluationError(f"ks must be a non-empty list of integers >= 1, got {ks!r}")


def _probabilities(classify: Classify, keys: torch.Tensor, n_cand: int, s_q, s_c, h_q, h_c,
                   log_odds: bool = False) -> torch.Tensor:
    """Positive-class probability ``[M]`` of each (query, candidate) pair coded ``q * n_cand + c``
    (with ``log_odds``: ``logit_1 - logit_0`` instead, which does not saturate)."""
    out = torch.empty(keys.shape[0], dtype=torch.float32, device=keys.device)
    with torch.no_grad():
        for start in range(0, keys.shape[0], CLASSIFY_CHUNK):
            k = keys[start:start + CLASSIFY_CHUNK]  # [m]
            qi, ci = k // n_cand, k % n_cand  # [m], [m]
            logits = classify(s_q[qi], s_c[ci], h_q[qi], h_c[ci])  # [m, 2]
            logits = torch.as_tensor(logits)
            if logits.ndim != 2 or logits.shape[0] != k.shape[0] or logits.shape[1] != 2:
                raise EvaluationError(
                    f"classify must return logits [M, 2]; got shape {tuple(logits.shape)} for M={k.shape[0]}"
                )
            lg = logits.float()
            val = lg[:, 1] - lg[:, 0] if log_odds else torch.softmax(lg, dim=1)[:, 1]  # [m]
            out[start:start + k.shape[0]] = val.to(out.device)
    return out


# --------------------------------------------------------------------------- ranks
def query_ranks(pools: Pools, point_sim, counter_sim, point_h=None, counter_h=None,
                classify: Classify | None = None, *, mode: str = "rerank", metric: str = "l2",
                rerank_k: int = 10, tasks: Sequence[str] | None = None,
                split_name: str | None = None, fused_w: float = 0.0) -> dict[str, torch.Tensor]:
    """1-based rank of every query's true counter in its pool, per task: ``{task: LongTensor [Q]}``.

    Arguments as in :func:`evaluate_split` (``split_name`` defaults to ``pools.split`` and only
    names the split in error messages). Runs on the device of ``point_sim``.
    """
    split = split_name or pools.split
    tasks = check_tasks(tasks)
    _check_options(mode, metric, rerank_k, (1,))
    q = pools.num_queries
    if q == 0:
        raise EvaluationError(f"split {split!r} has no queries (no (point, counter) pairs)")
    ps = _tensor(point_sim, "point_sim", q, split)  # [Q, d]
    device = ps.device
    cs = _tensor(counter_sim, "counter_sim", q, split, device)  # [Q, d]
    if cs.shape[1] != ps.shape[1]:
        raise EvaluationError(
            f"split {split!r}: point_sim has dim {ps.shape[1]} but counter_sim has dim {cs.shape[1]}"
        )
    rerank = mode in ("rerank", "fused") and rerank_k > 1  # reranking a single candidate changes nothing
    if mode in ("rerank", "fused"):
        if classify is None:
            raise EvaluationError(f"split {split!r}: mode {mode!r} needs a classify function")
        ph = _tensor(point_h, "point_h", q, split, device)  # [Q, H]
        ch = _tensor(counter_h, "counter_h", q, split, device)  # [Q, H]
        if ch.shape[1] != ph.shape[1]:
            raise EvaluationError(
                f"split {split!r}: point_h has dim {ph.shape[1]} but counter_h has dim {ch.shape[1]}"
            )

    n_cand = 2 * q
    wd = _work_dtype(device)
    query = _prepare(ps, metric, wd)  # [Q, d]
    cand = torch.cat([_prepare(cs, metric, wd), query])  # [2Q, d]: counters, then points
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
        dist = _row_distances(query[rows], cand, cand_sq, metric)  # [B, 2Q]
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
        fused = mode == "fused"
        probs = _probabilities(classify, keys, n_cand, ps, torch.cat([cs, ps]), ph, torch.cat([ch, ph]),
                               log_odds=fused)
        for t in tasks:
            for qn, ids, valid, d_top, d_qn in pending[t]:
                p_true = probs[torch.searchsorted(keys, qn * n_cand + qn)]  # [n]
                at = torch.searchsorted(keys, qn[:, None] * n_cand + ids).clamp_max(keys.shape[0] - 1)
                p_other = probs[at]  # [n, k-1]; padded slots are masked by ``valid``
                if fused:  # scores: fused_w * log-odds - distance (distances up to a per-row constant)
                    p_true = fused_w * p_true.double() - d_qn.double()  # [n]
                    p_other = fused_w * p_other.double() - d_top.double().nan_to_num(posinf=0.0)  # [n, k-1]
                ahead = (valid & (p_other >= p_true[:, None])).sum(1)  # [n]; ties go ahead
                ranks[t][qn] = 1 + ahead
    return ranks



def evaluate_split(split_name: str, pools: Pools, point_sim, counter_sim, point_h=None, counter_h=None,
                   classify: Classify | None = None, *, mode: str = "rerank", metric: str = "l2",
                   rerank_k: int = 10, ks: Sequence[int] = (1, 5, 10),
                   tasks: Sequence[str] | None = None, return_ranks: bool = False, fused_w: float = 0.0):
    """Evaluate one split on the given tasks; returns flat metrics of both views (see module doc).

    ``point_sim``/``counter_sim``: ``[Q, d]`` similarity-space embeddings in pair order (tensors or
    arrays, any device); ``point_h``/``counter_h``: ``[Q, H]`` raw pooled encoder outputs, needed
    for ``mode="rerank"`` together with ``classify(s_p, s_c, h_p, h_c) -> logits [M, 2]`` (put the
    model in eval mode first; it is called under ``torch.no_grad``). With ``return_ranks`` returns
    ``(metrics, ranks)``, ranks as from :func:`query_ranks` (kept for per-query significance tests).
    Raises :class:`EvaluationError` for an empty split or pool and for embeddings whose row count
    differs from ``pools.num_queries``.
    """
    _check_options(mode, metric, rerank_k, ks)
    if pools.num_queries == 0:
        raise EvaluationError(f"split {split_name!r} has no queries (no (point, counter) pairs)")
    ranks = query_ranks(pools, point_sim, counter_sim, point_h, counter_h, classify, mode=mode,
                        metric=metric, rerank_k=rerank_k, tasks=tasks, split_name=split_name, fused_w=fused_w)
    metrics = view_metrics(split_name, pools, ranks, ks)
    return (metrics, ranks) if return_ranks else metrics


# --------------------------------------------------------------------------- one query
def rank_candidates(query_sim, cand_sim, query_h=None, cand_h=None, classify: Classify | None = None,
                    mode: str = "retrieval", metric: str = "l2", rerank_k: int = 10,
                    k: int | None = None, fused_w: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Rank candidate counters for one argument (``counterarg rank``).

    ``query_sim [d]``, ``cand_sim [C, d]`` (``query_h [H]``, ``cand_h [C, H]`` and ``classify`` for
    rerank). Returns ``(ids, scores)`` of the best ``k`` (default all) candidates, best first:
    ``ids`` index ``cand_sim`` rows; ``scores`` are distances (L2, or ``1 - cos``) in retrieval mode
    and positive-class probabilities in rerank mode (``fused_w * log-odds - distance`` in fused
    mode), NaN for candidates past ``rerank_k`` (they keep distance order). Ties: lower index first.
    """
    _check_options(mode, metric, rerank_k, (1,))
    qs = torch.as_tensor(query_sim)
    qs = qs.reshape(1, -1) if qs.ndim == 1 else qs
    cs = _tensor(cand_sim, "cand_sim", None, "rank", qs.device)  # [C, d]
    qs = _tensor(qs, "query_sim", 1, "rank", qs.device)  # [1, d]
    if cs.shape[0] == 0:
        raise EvaluationError("rank: no candidates given")
    if cs.shape[1] != qs.shape[1]:
        raise EvaluationError(f"rank: query_sim has dim {qs.shape[1]} but cand_sim has dim {cs.shape[1]}")
    wd = _work_dtype(qs.device)
    qv, cv = _prepare(qs, metric, wd), _prepare(cs, metric, wd)  # [1, d], [C, d]
    if metric == "l2":
        dist = (cv - qv).pow(2).sum(1).sqrt()  # [C]; exact differences: C is small here
    else:
        dist = 1.0 - (cv @ qv[0])  # [C]
    order = torch.sort(dist, stable=True).indices  # [C]
    scores = dist[order].double()  # [C]
    if mode in ("rerank", "fused"):
        if classify is None:
            raise EvaluationError(f"rank: mode {mode!r} needs a classify function")
        qh = torch.as_tensor(query_h).reshape(1, -1) if query_h is not None else None
        qh = _tensor(qh, "query_h", 1, "rank", qs.device)  # [1, H]
        ch = _tensor(cand_h, "cand_h", cs.shape[0], "rank", qs.device)  # [C, H]
        top = order[:rerank_k]  # [k]
        n = top.shape[0]
        with torch.no_grad():
            logits = torch.as_tensor(classify(qs.expand(n, -1), cs[top], qh.expand(n, -1), ch[top]))  # [k, 2]
        if logits.shape != (n, 2):
            raise EvaluationError(f"classify must return logits [M, 2]; got shape {tuple(logits.shape)} for M={n}")
        prob = torch.softmax(logits.float(), dim=1)[:, 1].double()  # [k]
        if mode == "fused":
            lg = logits.double()
            prob = fused_w * (lg[:, 1] - lg[:, 0]) - dist[top].double()  # [k]
        re = torch.sort(-prob, stable=True).indices  # [k]; equal probabilities keep distance order
        order = torch.cat([top[re], order[n:]])
        scores = torch.cat([prob[re], torch.full((order.shape[0] - n,), float("nan"), dtype=torch.float64)])
    if k is not None:
        order, scores = order[:k], scores[:k]
    return order.cpu().numpy(), scores.cpu().numpy()
