"""How a trained model scores a query's candidates: the ``eval_mode`` registry and the one-query search.

A :class:`Scorer` is one entry of :data:`SCORERS`, named by the config's ``eval_mode``:

``retrieval``
    candidates by distance in the similarity space: squared L2 (the reference implementation's;
    same order as L2) or cosine distance ``1 - cos``.
``rerank``
    the reference implementation's evaluator: the ``rerank_k`` nearest candidates reordered by the
    pair classifier's probability of the positive class (softmax column 1); candidates past
    ``rerank_k`` keep their distance order after them.
``fused``
    the same top ``rerank_k``, reordered by ``fused_w * log-odds - distance``: the classifier corrects
    the distance instead of replacing it (``fused_w = 0`` is retrieval); training picks ``fused_w`` on
    validation each epoch (``picks_weight``) and the model keeps it (biencoder.BiEncoder.fused_w).

An entry says whether it needs the classifier, which value of it (probability or log-odds) and how
that value and the distance make the score (``combine``, higher first), and ranks a split's pools
with them (:meth:`Scorer.rank_pools`: all queries of a split at once, pool_ranks.py). Config
validation, the evaluator (evaluation/evaluate.py), ``counterarg rank`` (:func:`rank_candidates`,
one query) and the model card read the entry, so a new mode is one :func:`register_scorer` call;
:func:`check_options` is the one check of the scoring options. Nothing here imports training; torch
is imported by the functions that compute (Config validation reads the names, and a command's
``--help`` loads no torch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .distances import METRICS, as_tensor, prepare, work_dtype
from .tasks import EvaluationError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .pool_ranks import SplitEmbeddings
    from .pools import Pools

#: pair classifier: (s_p [M,d], s_c [M,d], h_p [M,H], h_c [M,H]) -> logits [M,2]
Classify = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class Scorer:
    """One ``eval_mode``: how the top ``rerank_k`` candidates by distance are reordered.

    * ``needs_classifier``: reorders by the pair classifier (False: distance order only);
    * ``log_odds``: the classifier's value is ``logit_1 - logit_0`` (else softmax column 1);
    * ``combine(value [n], distance [n], weight) -> score [n]``: higher first; ties go to the
      candidate first in distance order (the true counter is placed after its ties);
    * ``picks_weight``: its ``weight`` (``fused_w``) is picked on validation each epoch from
      ``fused_grid`` unless the config fixes it;
    * ``label``: what ``counterarg rank`` prints as the score.

    :meth:`values` reads the classifier's value from its logits; :meth:`rank_pools` ranks a split's
    pools by this entry (a scorer that ranks otherwise overrides it in a subclass).
    """

    name: str
    needs_classifier: bool = False
    log_odds: bool = False
    combine: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] | None = None
    picks_weight: bool = False
    label: str = "distance"
    doc: str = ""

    def values(self, logits: torch.Tensor) -> torch.Tensor:
        """The classifier's value ``[M]`` this scorer reads from logits ``[M, 2]`` (float32)."""
        import torch

        lg = torch.as_tensor(logits).float()
        return lg[:, 1] - lg[:, 0] if self.log_odds else torch.softmax(lg, dim=1)[:, 1]

    def rank_pools(
        self,
        pools: Pools,
        emb: SplitEmbeddings,
        tasks: Sequence[str],
        classify: Classify | None = None,
        *,
        rerank_k: int = 10,
        fused_w: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """The 1-based rank of every query's true counter in its pool, per task ``{task: LongTensor [Q]}``,
        under this scorer: distance order (pool_ranks.distance_ranks), then, for a scorer that needs
        the classifier, the top ``rerank_k`` reordered by its score (pool_ranks.rerank). ``emb`` from
        pool_ranks.split_embeddings (checked for this scorer)."""
        from .pool_ranks import distance_ranks, rerank

        if not self.needs_classifier or rerank_k < 2:  # reranking a single candidate changes nothing
            return distance_ranks(pools, emb, tasks)[0]
        assert classify is not None  # split_embeddings: a classifier scorer has one
        ranks, tops = distance_ranks(pools, emb, tasks, top_k=rerank_k)
        return rerank(ranks, tops, emb, classify, self, fused_w)


#: The registry: eval_mode name -> entry, in registration order.
SCORERS: dict[str, Scorer] = {}


def register_scorer(entry: Scorer) -> Scorer:
    """Add ``entry`` to :data:`SCORERS` (Config validation reads the names at validation time)."""
    if entry.name in SCORERS:
        raise EvaluationError(f"scorer {entry.name!r} exists already")
    if entry.needs_classifier != (entry.combine is not None):
        raise EvaluationError(f"scorer {entry.name!r}: a classifier scorer needs combine, a distance scorer none")
    SCORERS[entry.name] = entry
    return entry


def get_scorer(name: str) -> Scorer:
    """The entry named ``name``, or an :class:`EvaluationError` naming the known ones."""
    if name not in SCORERS:
        raise EvaluationError(f"mode must be one of {', '.join(SCORERS)}; got {name!r}")
    return SCORERS[name]


def _fused(value: torch.Tensor, distance: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight * log-odds - distance`` (distances up to a per-row constant keep the order)."""
    return weight * value.double() - distance.double()


register_scorer(Scorer("retrieval", doc="distance in the similarity space"))
register_scorer(
    Scorer(
        "rerank",
        needs_classifier=True,
        combine=lambda value, distance, weight: value,
        label="p(counter)",
        doc="the top rerank_k by the classifier's probability",
    )
)
register_scorer(
    Scorer(
        "fused",
        needs_classifier=True,
        log_odds=True,
        combine=_fused,
        picks_weight=True,
        label="fused_w * log-odds - distance",
        doc="the top rerank_k by fused_w * log-odds - distance",
    )
)


def check_options(mode: str, metric: str, rerank_k: int) -> Scorer:
    """The scorer of ``mode``, after checking the other scoring options (the one check of them every
    ranking makes: the eight tasks, the ArguAna view, one query); raises EvaluationError."""
    scorer = get_scorer(mode)
    if metric not in METRICS:
        raise EvaluationError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    if int(rerank_k) < 1:
        raise EvaluationError(f"rerank_k must be >= 1, got {rerank_k!r}")
    return scorer


# --------------------------------------------------------------------------- one query
def rank_candidates(
    query_sim,
    cand_sim,
    query_h=None,
    cand_h=None,
    classify: Classify | None = None,
    mode: str = "retrieval",
    metric: str = "l2",
    rerank_k: int = 10,
    k: int | None = None,
    fused_w: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank candidate counters for one argument (``counterarg rank``).

    ``query_sim [d]``, ``cand_sim [C, d]`` (``query_h [H]``, ``cand_h [C, H]`` and ``classify`` for
    a scorer that needs the classifier). Returns ``(ids, scores)`` of the best ``k`` (default all)
    candidates, best first: ``ids`` index ``cand_sim`` rows; ``scores`` are distances (L2, or
    ``1 - cos``) for retrieval and the scorer's score (its ``label``) otherwise, NaN for candidates
    past ``rerank_k`` (they keep distance order). Ties: lower index first.
    """
    import torch

    scorer = check_options(mode, metric, rerank_k)
    qs = torch.as_tensor(query_sim)
    qs = qs.reshape(1, -1) if qs.ndim == 1 else qs
    cs = as_tensor(cand_sim, "cand_sim", None, "rank", qs.device)  # [C, d]
    qs = as_tensor(qs, "query_sim", 1, "rank", qs.device)  # [1, d]
    if cs.shape[0] == 0:
        raise EvaluationError("rank: no candidates given")
    if cs.shape[1] != qs.shape[1]:
        raise EvaluationError(f"rank: query_sim has dim {qs.shape[1]} but cand_sim has dim {cs.shape[1]}")
    wd = work_dtype(qs.device)
    qv, cv = prepare(qs, metric, wd), prepare(cs, metric, wd)  # [1, d], [C, d]
    if metric == "l2":
        dist = (cv - qv).pow(2).sum(1).sqrt()  # [C]; exact differences: C is small here
    else:
        dist = 1.0 - (cv @ qv[0])  # [C]
    order = torch.sort(dist, stable=True).indices  # [C]
    scores = dist[order].double()  # [C]
    if scorer.needs_classifier:
        if classify is None:
            raise EvaluationError(f"rank: mode {mode!r} needs a classify function")
        qh = torch.as_tensor(query_h).reshape(1, -1) if query_h is not None else None
        qh = as_tensor(qh, "query_h", 1, "rank", qs.device)  # [1, H]
        ch = as_tensor(cand_h, "cand_h", cs.shape[0], "rank", qs.device)  # [C, H]
        top = order[:rerank_k]  # [k]
        n = top.shape[0]
        with torch.no_grad():
            logits = torch.as_tensor(classify(qs.expand(n, -1), cs[top], qh.expand(n, -1), ch[top]))  # [k, 2]
        if logits.shape != (n, 2):
            raise EvaluationError(f"classify must return logits [M, 2]; got shape {tuple(logits.shape)} for M={n}")
        assert scorer.combine is not None  # register_scorer: a classifier scorer has combine
        score = scorer.combine(scorer.values(logits), dist[top], fused_w).double()  # [k]
        re = torch.sort(-score, stable=True).indices  # [k]; equal scores keep distance order
        order = torch.cat([top[re], order[n:]])
        scores = torch.cat([score[re], torch.full((order.shape[0] - n,), float("nan"), dtype=torch.float64)])
    if k is not None:
        order, scores = order[:k], scores[:k]
    return order.cpu().numpy(), scores.cpu().numpy()
