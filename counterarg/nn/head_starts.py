"""The similarity head's starts: the registry the ``head`` config field names (:data:`HEAD_STARTS`).

Config validation reads the names here; each start's initialisation imports torch when it runs, so
validating a config (and a command's ``--help``) loads no torch. :class:`counterarg.nn.heads.Heads` applies them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def _init_linear(sim: nn.Linear, hidden: int, sim_dim: int) -> None:
    """The reference: keep nn.Linear's own random start (no extra draws, so runs stay reproducible)."""


def _init_identity(sim: nn.Linear, hidden: int, sim_dim: int) -> None:
    """W = the first sim_dim rows of I [sim_dim, H], b = 0: s starts as (the first coordinates of) h."""
    import torch

    with torch.no_grad():
        sim.weight.copy_(torch.eye(sim_dim, hidden))
        sim.bias.zero_()


def _init_orthogonal(sim: nn.Linear, hidden: int, sim_dim: int) -> None:
    """W with orthonormal rows, b = 0: a rotation keeps every distance when sim_dim = H."""
    import torch

    with torch.no_grad():
        torch.nn.init.orthogonal_(sim.weight)
        sim.bias.zero_()


def _init_residual(sim: nn.Linear, hidden: int, sim_dim: int) -> None:
    """A = 0, b = 0 in s = h + A h + b: the head starts as the identity and learns a correction."""
    if sim_dim != hidden:
        raise ValueError(f"head=residual needs sim_dim equal to the encoder width {hidden} (or 0), got {sim_dim}")
    import torch

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
