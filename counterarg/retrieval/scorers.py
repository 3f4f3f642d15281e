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
that value and the distance make the score (``combine``, higher first). Config validation, the
evaluator (evaluate.query_ranks, all queries of a split at once), ``counterarg rank``
(:func:`rank_candidates`, one query) and the model card read the entry, so a new mode is one
:func:`register_scorer` call. Nothing here imports training; torch is imported by the functions that
compute (Config validation reads the names, and a command's ``--help`` loads no torch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .tasks import EvaluationError

if TYPE_CHECKING:
    import numpy as np
    import torch

#: pair classifier: (s_p [M,d], s_c [M,d], h_p [M,H], h_c [M,H]) -> logits [M,2]
Classify = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]
#: the distances of the similarity space (``eval_metric``)
METRICS = ("l2", "cosine")


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
    """

    name: str
    needs_classifier: bool = False
    log_odds: bool = False
    combine: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] | None = None
    picks_weight: bool = False
    label: str = "distance"
    doc: str = ""


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


def classifier_values(logits: torch.Tensor, scorer: Scorer) -> torch.Tensor:
    """The classifier's value ``[M]`` a scorer reads from logits ``[M, 2]`` (float32)."""
    import torch

    lg = torch.as_tensor(logits).float()
    return lg[:, 1] - lg[:, 0] if scorer.log_odds else torch.softmax(lg, dim=1)[:, 1]


def check_options(mode: str, metric: str, rerank_k: int, ks) -> Scorer:
    """The scorer of ``mode``, after checking the other scoring options; raises EvaluationError."""
    scorer = get_scorer(mode)
    if metric not in METRICS:
        raise EvaluationError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    if int(rerank_k) < 1:
        raise EvaluationError(f"rerank_k must be >= 1, got {rerank_k!r}")
    if not ks or any(int(k) < 1 for k in ks):
        raise EvaluationError(f"ks must be a non-empty list of integers >= 1, got {ks!r}")
    return scorer


# --------------------------------------------------------------------------- tensors
def as_tensor(x, name: str, rows: int | None, split: str, device=None) -> torch.Tensor:
    """``x`` as a 2-D float tensor with ``rows`` rows, or an :class:`EvaluationError` saying why not."""
    import torch

    if x is None:
        raise EvaluationError(f"split {split!r}: {name} is required")
    t = torch.as_tensor(x)
    if device is not None:
        t = t.to(device)
    if t.ndim != 2:
        raise EvaluationError(f"split {split!r}: {name} must be 2-D [rows, dim], got shape {tuple(t.shape)}")
    if rows is not None and t.shape[0] != rows:
        raise EvaluationError(f"split {split!r}: {name} has {t.shape[0]} rows but the pools have {rows} queries")
    if not t.is_floating_point():
        t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise EvaluationError(f"split {split!r}: {name} contains NaN or infinite values")
    return t.detach()


def work_dtype(device: torch.device) -> torch.dtype:
    """float64 for distances where available: fewer spurious ties/flips from rounding."""
    import torch

    return torch.float32 if device.type == "mps" else torch.float64


def prepare(x: torch.Tensor, metric: str, dtype: torch.dtype) -> torch.Tensor:
    import torch.nn.functional as F

    x = x.to(dtype)
    return F.normalize(x, dim=1) if metric == "cosine" else x


# --------------------------------------------------------------------------- many queries
def row_distances(query: torch.Tensor, cand: torch.Tensor, cand_sq: torch.Tensor | None, metric: str) -> torch.Tensor:
    """``[B, C]`` distances up to a per-row constant (smaller = closer), for ranking within rows.

    L2: ``||c||^2 - 2 q.c`` (= squared L2 minus ``||q||^2``: same order as L2 in every row, and one
    fused ``addmm``); cosine: ``-cos`` (inputs pre-normalised). Inputs already in the work dtype.
    """
    import torch

    if metric == "cosine":
        return torch.mm(query, cand.T).neg_()  # [B, C]
    return torch.addmm(cand_sq[None, :], query, cand.T, alpha=-2.0)  # [B, C]


def pair_values(
    classify: Classify, scorer: Scorer, keys: torch.Tensor, n_cand: int, s_q, s_c, h_q, h_c, chunk: int = 8192
) -> torch.Tensor:
    """The scorer's classifier value ``[M]`` (probability or log-odds, :func:`classifier_values`) of
    each (query, candidate) pair coded ``q * n_cand + c``, ``chunk`` pairs per classifier call."""
    import torch

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
            out[start : start + k.shape[0]] = classifier_values(logits, scorer).to(out.device)
    return out


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

    scorer = check_options(mode, metric, rerank_k, (1,))
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
        score = scorer.combine(classifier_values(logits, scorer), dist[top], fused_w).double()  # [k]
        re = torch.sort(-score, stable=True).indices  # [k]; equal scores keep distance order
        order = torch.cat([top[re], order[n:]])
        scores = torch.cat([score[re], torch.full((order.shape[0] - n,), float("nan"), dtype=torch.float64)])
    if k is not None:
        order, scores = order[:k], scores[:k]
    return order.cpu().numpy(), scores.cpu().numpy()
