"""The two heads over the encoder's pooled output: the similarity head and the pair classifier.

``head`` (a Config field) names the similarity head's start, one entry of :data:`HEAD_STARTS` (Config
validation reads the names here); :class:`Heads` holds both heads, as in the reference implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn


def _init_linear(sim: nn.Linear, hidden: int, sim_dim: int) -> None:
    """The reference: keep nn.Linear's own random start (no extra draws, so runs stay reproducible)."""


def _init_identity(sim: nn.Linear, hidden: int, sim_dim: int) -> None:
    """W = the first sim_dim rows of I [sim_dim, H], b = 0: s starts as (the first coordinates of) h."""
    with torch.no_grad():
        sim.weight.copy_(torch.eye(sim_dim, hidden))
        sim.bias.zero_()


def _init_orthogonal(sim: nn.Linear, hidden: int, sim_dim: int) -> None:
    """W with orthonormal rows, b = 0: a rotation keeps every distance when sim_dim = H."""
    with torch.no_grad():
        nn.init.orthogonal_(sim.weight)
        sim.bias.zero_()


def _init_residual(sim: nn.Linear, hidden: int, sim_dim: int) -> None:
    """A = 0, b = 0 in s = h + A h + b: the head starts as the identity and learns a correction."""
    if sim_dim != hidden:
        raise ValueError(f"head=residual needs sim_dim equal to the encoder width {hidden} (or 0), got {sim_dim}")
    with torch.no_grad():
        sim.weight.zero_()
        sim.bias.zero_()


@dataclass(frozen=True)
class HeadStart:
    """How a similarity head starts (its initialisation) and whether h is added to its output."""

    init: Callable[[nn.Linear, int, int], None]
    residual: bool = False


#: The similarity-head starts the ``head`` config field names; Config validation reads the names here.
HEAD_STARTS: dict[str, HeadStart] = {
    "linear": HeadStart(_init_linear),  # the reference implementation's randomly initialised Linear(H, sim_dim)
    "identity": HeadStart(_init_identity),
    "orthogonal": HeadStart(_init_orthogonal),
    "residual": HeadStart(_init_residual, residual=True),
}


class Heads(nn.Module):
    """Similarity head and pair classifier Linear(3*sim_dim + 3*H, 2), as in the reference implementation.

    ``head`` picks the similarity head's start (see :data:`HEAD_STARTS`); ``sim_dim=0`` means the encoder
    width. The start is kept (``sim_start``, rebuilt from the run's seed, not saved) so that
    :meth:`drift` can pull training back toward it (the ``head_reg`` term): with a zero-shot
    geometry as the start, training refines it instead of replacing it.
    """

    sim_start: torch.Tensor  # [sim_dim, H] a buffer (register_buffer below)

    def __init__(self, hidden: int, sim_dim: int, head: str = "linear"):
        super().__init__()
        sim_dim = sim_dim or hidden
        self.hidden, self.sim_dim, self.head = hidden, sim_dim, head
        self.sim = nn.Linear(hidden, sim_dim)
        HEAD_STARTS[head].init(self.sim, hidden, sim_dim)
        self.residual = HEAD_STARTS[head].residual
        self.register_buffer("sim_start", self.sim.weight.detach().clone(), persistent=False)  # [sim_dim, H]
        self.classifier = nn.Linear(3 * sim_dim + 3 * hidden, 2)

    def similarity(self, h: torch.Tensor) -> torch.Tensor:  # [B, H] -> [B, sim_dim]
        s = self.sim(h)  # [B, sim_dim]
        return h + s if self.residual else s

    def drift(self) -> torch.Tensor:
        """Squared Frobenius distance of the similarity weights from their start (a scalar)."""
        return ((self.sim.weight - self.sim_start) ** 2).sum()

    def classify(
        self,
        s_p: torch.Tensor,  # [B, sim_dim]
        s_c: torch.Tensor,  # [B, sim_dim]
        h_p: torch.Tensor,  # [B, H]
        h_c: torch.Tensor,  # [B, H]
    ) -> torch.Tensor:  # [B, 2] logits; softmax column 1 = "is the counter"
        x = torch.cat([s_p, s_c, (s_p - s_c).abs(), h_p, h_c, (h_p - h_c).abs()], dim=-1)  # [B, 3s+3H]
        return self.classifier(x)
