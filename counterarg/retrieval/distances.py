"""Distances in the similarity space, as every ranking here computes them: checked inputs, the work
dtype, the metric's preparation and a block of distances for many queries at once.

The one-query search (scorers.rank_candidates), the eight tasks (pool_ranks.py) and the ArguAna view
(evaluation/arguana.py) share these, so the three rank by the same numbers. torch is imported by the
functions (Config validation imports the registries beside this module, and ``--help`` loads no torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .tasks import EvaluationError

if TYPE_CHECKING:
    import torch

#: the distances of the similarity space (``eval_metric``)
METRICS = ("l2", "cosine")


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
    """``x`` in ``dtype``, unit rows for cosine (then a dot product is the cosine)."""
    import torch.nn.functional as F

    x = x.to(dtype)
    return F.normalize(x, dim=1) if metric == "cosine" else x


def row_distances(query: torch.Tensor, cand: torch.Tensor, cand_sq: torch.Tensor | None, metric: str) -> torch.Tensor:
    """``[B, C]`` distances up to a per-row constant (smaller = closer), for ranking within rows.

    L2: ``||c||^2 - 2 q.c`` (= squared L2 minus ``||q||^2``: same order as L2 in every row, and one
    fused ``addmm``); cosine: ``-cos`` (inputs pre-normalised). Inputs already in the work dtype.
    """
    import torch

    if metric == "cosine":
        return torch.mm(query, cand.T).neg_()  # [B, C]
    assert cand_sq is not None  # l2: the candidates' squared norms
    return torch.addmm(cand_sq[None, :], query, cand.T, alpha=-2.0)  # [B, C]
