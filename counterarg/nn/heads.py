"""The two heads over the encoder's pooled output: the similarity head and the pair classifier.

``head`` (a Config field) names the similarity head's start, one entry of :data:`HEAD_STARTS`
(:mod:`counterarg.nn.head_starts`, where Config validation reads the names without loading torch);
:class:`Heads` holds both heads, as in the reference implementation.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .head_starts import HEAD_STARTS, HeadStart  # noqa: F401 - HeadStart: the registry's entry type, read here too


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
