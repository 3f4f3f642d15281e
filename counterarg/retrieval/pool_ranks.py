"""Each query's rank of its true counter in its pool, for every query of a split at once, vectorised.

A scorer (scorers.Scorer.rank_pools) ranks a split's pools in one or two steps, both here:
:func:`distance_ranks` orders every pool by distance, and a scorer that reorders by the pair
classifier (``rerank``, ``fused``) then reorders each query's nearest ``rerank_k`` with :func:`rerank`.
:func:`split_embeddings` checks the inputs once before either. No Python loop over queries or pairs.

**Two kinds of pool**, by the task (tasks.Task.split_wide). A split-wide pool (``epc``, ``epa``) is
whole columns of the distance block: the counters, or counters and points; copies of a text count
once (``Pools.representatives``) and a candidate sharing a text with the query or its true counter
(``Pools.peers``) is never an *other* member. Any other pool is the query's own members, a compact
index (``Pools.index``, copies already left out) gathered from the block.

**Ties.** Candidates at equal distance are ordered by candidate index, lower first, except the
true counter, which is always placed *after* every candidate it ties with (in distance, and within
the reranked top ``k`` in the scorer's score): a degenerate model (e.g. all embeddings equal) gets
the worst rank, never a lucky acc@1. scorers.rank_candidates (one query, no true counter) orders
equal distances by index and equal scores by distance order.

**How the rank is found without sorting.** With that tie rule the distance rank of the true
counter is ``#{pool members with distance <= its distance}``, one comparison over the ``[B, 2Q]``
distance block. For a reranking scorer, only queries whose true counter is within the top ``k`` can
move, and its new rank is ``1 + #{other top-k members scoring >= it}``. The other top-k members come
from a ``topk`` over the masked distance block (rows with ties at the cut are redone by a stable
sort, so the lower index wins). The classifier runs once over the deduplicated union of (query,
candidate) pairs of all tasks, in chunks, so the eight tasks cost little more than the largest one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch

from .distances import as_tensor, prepare, row_distances, work_dtype
from .pools import Pools
from .tasks import REGISTRY, EvaluationError

if TYPE_CHECKING:
    from .scorers import Classify, Scorer

#: elements of one [B, 2Q] distance block (bounds memory: ~4M float64 = 32 MiB per tensor)
BLOCK_ELEMENTS = 1 << 22
#: pairs per classifier call
CLASSIFY_CHUNK = 8192


@dataclass(frozen=True)
class SplitEmbeddings:
    """A split's pair embeddings, checked against its pools and on one device (:func:`split_embeddings`).

    ``point_sim``, ``counter_sim`` ``[Q, d]`` and ``point_h``, ``counter_h`` ``[Q, H]`` (None for a
    scorer without the classifier) as given, for the classifier; ``query`` ``[Q, d]`` and ``cand``
    ``[2Q, d]`` (counters, then points) in the work dtype, prepared for ``metric``; ``cand_sq``
    ``[2Q]`` their squared norms for L2 (None for cosine).
    """

    split: str
    metric: str
    point_sim: torch.Tensor
    counter_sim: torch.Tensor
    point_h: torch.Tensor | None
    counter_h: torch.Tensor | None
    query: torch.Tensor
    cand: torch.Tensor
    cand_sq: torch.Tensor | None

    @property
    def num_queries(self) -> int:
        return int(self.query.shape[0])

    @property
    def device(self) -> torch.device:
        return self.query.device


def split_embeddings(
    pools: Pools,
    point_sim,
    counter_sim,
    point_h=None,
    counter_h=None,
    *,
    metric: str,
    tasks: Sequence[str],
    split: str,
    scorer: Scorer,
    classify: Classify | None = None,
) -> SplitEmbeddings:
    """The inputs of ``scorer``'s ranking of a split, checked once: an :class:`EvaluationError` for a
    split without queries, an embedding missing, misshapen or not finite, a scorer that needs the
    classifier without ``classify`` or pooled outputs, and an empty pool of ``tasks``. Runs on
    ``point_sim``'s device."""
    q = pools.num_queries
    if q == 0:
        raise EvaluationError(f"split {split!r} has no queries (no (point, counter) pairs)")
    ps = as_tensor(point_sim, "point_sim", q, split)  # [Q, d]
    device = ps.device
    cs = as_tensor(counter_sim, "counter_sim", q, split, device)  # [Q, d]
    if cs.shape[1] != ps.shape[1]:
        raise EvaluationError(f"split {split!r}: point_sim has dim {ps.shape[1]} but counter_sim has dim {cs.shape[1]}")
    ph = ch = None
    if scorer.needs_classifier:
        if classify is None:
            raise EvaluationError(f"split {split!r}: mode {scorer.name!r} needs a classify function")
        ph = as_tensor(point_h, "point_h", q, split, device)  # [Q, H]
        ch = as_tensor(counter_h, "counter_h", q, split, device)  # [Q, H]
        if ch.shape[1] != ph.shape[1]:
            raise EvaluationError(f"split {split!r}: point_h has dim {ph.shape[1]} but counter_h has dim {ch.shape[1]}")
    for t in tasks:  # empty pools cannot happen for true pairs; guard anyway (hand-made Pools)
        if (pools.pool_sizes(t) < 1).any():
            raise EvaluationError(f"split {split!r}, task {t!r}: a query has an empty candidate pool")
    wd = work_dtype(device)
    query = prepare(ps, metric, wd)  # [Q, d]
    cand = torch.cat([prepare(cs, metric, wd), query])  # [2Q, d]: counters, then points
    cand_sq = (cand * cand).sum(1) if metric == "l2" else None  # [2Q]
    return SplitEmbeddings(split, metric, ps, cs, ph, ch, query, cand, cand_sq)


class Top(NamedTuple):
    """A block's queries whose true counter is within the top ``k`` by distance, and the ``k - 1``
    other nearest members of each one's pool: what a reranking scorer reorders."""

    query: torch.Tensor  # [n] query ids
    ids: torch.Tensor  # [n, k-1] candidate ids, nearest first
    valid: torch.Tensor  # [n, k-1] False where the pool has fewer members
    dist: torch.Tensor  # [n, k-1] their distances (inf where not valid)
    true_dist: torch.Tensor  # [n] the true counter's distance
    truth: torch.Tensor  # [n] the true counter's candidate id (the query's own id in a split's pools)

    def keys(self, n_cand: int) -> torch.Tensor:
        """``[n + n_valid]`` the (query, candidate) pairs to classify, coded ``q * n_cand + c``: the
        true pairs, then every valid member's."""
        return torch.cat([self.query * n_cand + self.truth, (self.query[:, None] * n_cand + self.ids)[self.valid]])

    def reranked(
        self, keys: torch.Tensor, values: torch.Tensor, n_cand: int, scorer: Scorer, fused_w: float = 0.0
    ) -> torch.Tensor:
        """``[n]`` the true counter's 1-based rank among its top members by ``scorer``'s score
        (``scorer.combine`` of the classifier's ``values`` of the sorted ``keys`` and the distance,
        weight ``fused_w``); ties go ahead of the true counter."""
        assert scorer.combine is not None  # register_scorer: a classifier scorer has combine
        v_true = values[torch.searchsorted(keys, self.query * n_cand + self.truth)]  # [n]
        at = torch.searchsorted(keys, self.query[:, None] * n_cand + self.ids).clamp_max(keys.shape[0] - 1)
        v_other = values[at]  # [n, k-1]; padded slots are masked by ``valid``
        p_true = scorer.combine(v_true, self.true_dist, fused_w)  # [n]; distances up to a per-row constant
        p_other = scorer.combine(v_other, self.dist.double().nan_to_num(posinf=0.0), fused_w)  # [n, k-1]
        return 1 + (self.valid & (p_other >= p_true[:, None])).sum(1)  # [n]


@dataclass(frozen=True)
class _Wide:
    """The split-wide pools' copy rule on a device: ``rep`` ``{task: [2Q] bool}``, the first copy of
    each text; ``peers`` ``[Q, m]``, the candidates sharing a text with the query or its true counter
    (padded with column 0); ``first`` ``[Q, m]``, False on the padding."""

    rep: dict[str, torch.Tensor]
    peers: torch.Tensor
    first: torch.Tensor

    @classmethod
    def of(cls, pools: Pools, tasks: list[str], device: torch.device) -> _Wide:
        rep = {t: torch.as_tensor(pools.representatives(t), device=device) for t in tasks}  # [2Q] each
        peers = torch.as_tensor(pools.peers(), device=device)  # [Q, m], padded with column 0
        first = torch.ones_like(peers, dtype=torch.bool)
        first[:, 1:] = peers[:, 1:] != peers[:, :1]  # the padding repeats column 0
        return cls(rep, peers, first)


def distance_ranks(
    pools: Pools, emb: SplitEmbeddings, tasks: Sequence[str], top_k: int = 0
) -> tuple[dict[str, torch.Tensor], dict[str, list[Top]]]:
    """``({task: LongTensor [Q]}, tops)``: the 1-based distance rank of every query's true counter in
    its pool; with ``top_k`` > 0 also, per task, a :class:`Top` per block of rows for the queries whose
    true counter is within the first ``top_k`` (empty lists without)."""
    q, device = emb.num_queries, emb.device
    n_cand = 2 * q
    ranks = {t: torch.empty(q, dtype=torch.long, device=device) for t in tasks}
    tops: dict[str, list[Top]] = {t: [] for t in tasks}
    wide_tasks = [t for t in tasks if REGISTRY[t].split_wide]  # whole-split pools: columns of the block
    wide = _Wide.of(pools, wide_tasks, device) if wide_tasks else None
    block = max(1, BLOCK_ELEMENTS // n_cand)
    for start in range(0, q, block):
        rows = slice(start, min(q, start + block))
        qi = torch.arange(rows.start, rows.stop, device=device)  # [B]
        b = torch.arange(qi.shape[0], device=device)  # [B]
        dist = row_distances(emb.query[rows], emb.cand, emb.cand_sq, emb.metric)  # [B, 2Q]
        d_true = dist[b, qi]  # [B]
        if wide is not None:
            not_after = dist <= d_true[:, None]  # [B, 2Q]: at or before the true counter (ties count before it)
            pr, pf = wide.peers[rows], wide.first[rows]  # [B, m], [B, m]
            peer_before = not_after.gather(1, pr) & pf  # [B, m]
        for t in tasks:
            if t in wide_tasks:
                assert wide is not None
                cols = n_cand if REGISTRY[t].with_points else q  # counters only: the first Q columns
                rep = wide.rep[t]  # [2Q]
                in_pool = rep[pr] & (pr < cols)  # [B, m]: peers that are represented in the pool
                r_d = 1 + (not_after[:, :cols] & rep[None, :cols]).sum(1) - (peer_before & in_pool).sum(1)  # [B]
            else:
                ids, valid = pools.index(t, rows, device)  # [B, P], [B, P]; copies already left out
                text = pools.text_on(device)  # [2Q]
                other = valid & (text[ids] != text[qi][:, None])  # [B, P]; the true counter's text is the hit
                dc = dist.gather(1, ids).masked_fill_(~other, float("inf"))  # [B, P]
                r_d = 1 + (dc <= d_true[:, None]).sum(1)  # [B]
            ranks[t][rows] = r_d
            if top_k < 1:
                continue
            need = torch.nonzero(r_d <= top_k).flatten()  # [n]: rows whose true counter can move
            if need.numel() == 0:
                continue
            if t in wide_tasks:
                dm = dist[need, :cols].masked_fill_(~rep[None, :cols], float("inf"))  # [n, cols]; a copy
                pn = pr[need]  # [n, m]
                dm.scatter_(1, pn.clamp_max(cols - 1).where(pn < cols, pn[:, :1]), float("inf"))  # peers out
                col_ids = None
            else:
                dm = dc[need]  # [n, P]; the true counter's text is already out
                col_ids = ids[need]  # [n, P]
            tops[t].append(nearest(dm, col_ids, min(top_k - 1, n_cand), qi[need], qi[need], d_true[need]))
    return ranks, tops


def nearest(
    dm: torch.Tensor, col_ids: torch.Tensor | None, kk: int, qn: torch.Tensor, truth: torch.Tensor, d_true: torch.Tensor
) -> Top:
    """The ``kk`` nearest columns of each row of ``dm`` ``[n, C]`` (inf = not a member; the true
    counter ``truth`` ``[n]`` is not one), ties by lower column; ``col_ids`` ``[n, C]`` name the
    columns' candidates (None: the column is the candidate)."""
    width = min(kk, dm.shape[1])
    vals, top = torch.topk(dm, width, dim=1, largest=False, sorted=True)  # [n, k-1]
    valid = torch.isfinite(vals)  # [n, k-1]; pools smaller than k are padded
    # topk picks arbitrarily among candidates tied at the cut; redo those rows by a stable
    # sort (columns are in candidate order, so the lower index wins). Needs exact ties.
    cut = vals[:, -1]  # [n]
    over = torch.nonzero(torch.isfinite(cut) & ((dm <= cut[:, None]).sum(1) > width)).flatten()
    if over.numel():
        top[over] = torch.sort(dm[over], dim=1, stable=True).indices[:, :width]
    ids = top if col_ids is None else col_ids.gather(1, top)  # [n, k-1] candidate ids
    return Top(qn, ids, valid, dm.gather(1, top), d_true, truth)


def rerank(
    ranks: dict[str, torch.Tensor],
    tops: dict[str, list[Top]],
    emb: SplitEmbeddings,
    classify: Classify,
    scorer: Scorer,
    fused_w: float = 0.0,
) -> dict[str, torch.Tensor]:
    """``ranks`` with each :class:`Top` query's true counter reordered among its top members by
    ``scorer``'s score (``scorer.combine`` of the classifier's value and the distance, weight
    ``fused_w``; ties go ahead of the true counter). The classifier scores each distinct (query,
    candidate) pair of all tasks once. Changes and returns ``ranks``."""
    if not any(tops.values()):
        return ranks
    n_cand = 2 * emb.num_queries
    keys = torch.unique(torch.cat([top.keys(n_cand) for found in tops.values() for top in found]))  # sorted
    assert emb.point_h is not None and emb.counter_h is not None  # split_embeddings of a classifier scorer
    s_c = torch.cat([emb.counter_sim, emb.point_sim])  # [2Q, d]
    h_c = torch.cat([emb.counter_h, emb.point_h])  # [2Q, H]
    values = pair_values(classify, scorer, keys, n_cand, emb.point_sim, s_c, emb.point_h, h_c, chunk=CLASSIFY_CHUNK)
    for t, found in tops.items():
        for top in found:  # each pair classified once for all tasks
            ranks[t][top.query] = top.reranked(keys, values, n_cand, scorer, fused_w)
    return ranks


def pair_values(
    classify: Classify, scorer: Scorer, keys: torch.Tensor, n_cand: int, s_q, s_c, h_q, h_c, chunk: int = 8192
) -> torch.Tensor:
    """The scorer's classifier value ``[M]`` (probability or log-odds, scorers.Scorer.values) of
    each (query, candidate) pair coded ``q * n_cand + c``, ``chunk`` pairs per classifier call."""
    out = torch.empty(keys.shape[0], dtype=torch.float32, device=keys.device)
    with torch.no_grad():
        for start in range(0, keys.shape[0], chunk):
            k = keys[start : start + chunk]  # [m]
            qi, ci = k // n_cand, k % n_cand  # [m], [m]
            logits = torch.as_tensor(classify(s_q[qi], s_c[ci], h_q[qi], h_c[ci]))  # [m, 2]
            if logits.ndim != 2 or logits.shape[0] != k.shape[0] or logits.shape[1] != 2:
                raise EvaluationError(
                    f"classify must return logits [M, 2]; got shape {tuple(logits.shape)} for M={k.shape[0]}"
                )
            out[start : start + k.shape[0]] = scorer.values(logits).to(out.device)
    return out
