"""Training objectives, one registry: a loss is a pure function of a :class:`LossBatch` and the config.

``LOSSES`` names every objective the ``loss`` config field may use; Config validation reads the names
from here, so adding an objective is one entry (its function and the config fields it reads) plus
its test. The ``loss`` field is a weighted sum of entries, e.g. ``infonce`` or ``infonce+0.5*pair_ce``
(see :func:`parse_loss`).

- ``combined``: the reference implementation's CombinedLoss, triplet margin loss on the first mined
  negative plus the pair classifier's cross-entropy on (point, counter) -> 1 and (point, negative) -> 0.
- ``triplet`` and ``pair_ce``: its two halves, to mix separately.
- ``infonce``: softmax cross-entropy of each point against its own counter, with every other counter
  of the batch and every mined negative of the batch as the alternatives, on cosine similarity times
  ``scale``.
  Candidates whose text equals the anchor's point or counter text are masked (false negatives:
  ArguAna repeats texts).

torch is imported inside the tensor functions: Config validation reads the names here, and a command's
``--help`` loads no torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class LossError(ValueError):
    """A ``loss`` spec that does not parse or names an unknown objective."""


@dataclass
class LossBatch:
    """What a loss sees of one training batch (B anchors, K mined negatives each)."""

    s_p: torch.Tensor  # [B, d] anchor (point) similarity embeddings
    s_c: torch.Tensor  # [B, d] their true counters
    s_n: torch.Tensor  # [B, K, d] mined negatives
    logits_pos: torch.Tensor | None  # [B, 2] classifier logits for (point, counter); None if unused
    logits_neg: torch.Tensor | None  # [B, K, 2] classifier logits for (point, negative)
    point_keys: torch.Tensor  # [B] text id of each point
    counter_keys: torch.Tensor  # [B] text id of each counter
    negative_keys: torch.Tensor  # [B, K] text id of each negative

    def classifier_logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_pos [B, 2], logits_neg [B, K, 2]) for an objective that trains the classifier."""
        if self.logits_pos is None or self.logits_neg is None:
            raise LossError("an objective that trains the pair classifier got no classifier logits")
        return self.logits_pos, self.logits_neg


LossFn = Callable[[LossBatch, object], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]


@dataclass(frozen=True)
class Loss:
    fn: LossFn
    fields: tuple[str, ...]  # config fields the objective reads
    uses_classifier: bool  # needs the pair classifier's logits


# --------------------------------------------------------------------------- pure tensor functions
def combined_loss(
    s_point: torch.Tensor,  # [B, d] anchor sim embeddings
    s_counter: torch.Tensor,  # [B, d] positive sim embeddings
    s_negative: torch.Tensor,  # [B, d] hard/random negative sim embeddings
    logits_pos: torch.Tensor,  # [B, 2] classifier logits for (point, counter)
    logits_neg: torch.Tensor,  # [B, 2] classifier logits for (point, negative)
    *,
    margin: float = 1.0,
    p: float = 2.0,
    w_triplet: float = 1.0,
    w_pos: float = 1.0,
    w_neg: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The reference loss: TripletMarginLoss(margin, p) + CE(pos -> 1) + CE(neg -> 0), each weighted.

    Returns the total and its three unweighted parts (for logging).
    """
    import torch
    import torch.nn.functional as F

    batch = s_point.shape[0]
    ones = torch.ones(batch, dtype=torch.long, device=s_point.device)  # [B]
    triplet = F.triplet_margin_loss(s_point, s_counter, s_negative, margin=margin, p=p)
    ce_pos = F.cross_entropy(logits_pos, ones)
    ce_neg = F.cross_entropy(logits_neg, torch.zeros_like(ones))
    total = w_triplet * triplet + w_pos * ce_pos + w_neg * ce_neg
    return total, {"triplet": triplet, "ce_pos": ce_pos, "ce_neg": ce_neg}


def infonce_loss(
    s_point: torch.Tensor,  # [B, d]
    s_counter: torch.Tensor,  # [B, d] counter i is the positive of point i
    s_negative: torch.Tensor,  # [B, K, d] mined negatives of each anchor (K may be 0)
    point_keys: torch.Tensor,  # [B] text ids
    counter_keys: torch.Tensor,  # [B]
    negative_keys: torch.Tensor,  # [B, K]
    *,
    scale: float = 20.0,
) -> torch.Tensor:
    """Mean over anchors of ``-log softmax(scale * cos)`` at the anchor's own counter.

    Every anchor's alternatives are all counters of the batch and all mined negatives of the batch
    (its own and the other anchors', as in DPR: B + B*K candidates for the price of B*K embeddings).
    A candidate whose text equals anchor i's point or counter text, other than the positive itself,
    is left out: it is a copy, not a negative.
    """
    import torch
    import torch.nn.functional as F

    b = s_point.shape[0]
    a = F.normalize(s_point, dim=-1)  # [B, d]
    cand = F.normalize(torch.cat([s_counter, s_negative.reshape(-1, s_point.shape[1])]), dim=-1)  # [B + B*K, d]
    keys = torch.cat([counter_keys, negative_keys.reshape(-1)])  # [B + B*K]
    logits = scale * a @ cand.T  # [B, B + B*K]
    copy = (keys[None, :] == counter_keys[:, None]) | (keys[None, :] == point_keys[:, None])  # [B, B + B*K]
    eye = torch.arange(b, device=s_point.device)
    copy[eye, eye] = False  # the positive stays
    logits = logits.masked_fill(copy, float("-inf"))
    return F.cross_entropy(logits, eye)


def pair_ce(logits_pos: torch.Tensor, logits_neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Classifier cross-entropy: (point, counter) -> 1 over [B, 2], (point, negative) -> 0 over [B, K, 2]."""
    import torch
    import torch.nn.functional as F

    ones = torch.ones(logits_pos.shape[0], dtype=torch.long, device=logits_pos.device)  # [B]
    neg = logits_neg.reshape(-1, 2)  # [B*K, 2]
    return F.cross_entropy(logits_pos, ones), F.cross_entropy(
        neg, torch.zeros(neg.shape[0], dtype=torch.long, device=neg.device)
    )


# --------------------------------------------------------------------------- registry entries
def _combined(batch: LossBatch, c) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    logits_pos, logits_neg = batch.classifier_logits()
    return combined_loss(
        batch.s_p,
        batch.s_c,
        batch.s_n[:, 0],
        logits_pos,
        logits_neg[:, 0],
        margin=c.margin,
        p=c.p,
        w_triplet=c.w_triplet,
        w_pos=c.w_pos,
        w_neg=c.w_neg,
    )


def _triplet(batch: LossBatch, c) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    import torch.nn.functional as F

    t = F.triplet_margin_loss(batch.s_p, batch.s_c, batch.s_n[:, 0], margin=c.margin, p=c.p)
    return t, {"triplet": t}


def _pair_ce(batch: LossBatch, c) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ce_pos, ce_neg = pair_ce(*batch.classifier_logits())
    return c.w_pos * ce_pos + c.w_neg * ce_neg, {"ce_pos": ce_pos, "ce_neg": ce_neg}


def _infonce(batch: LossBatch, c) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    v = infonce_loss(
        batch.s_p, batch.s_c, batch.s_n, batch.point_keys, batch.counter_keys, batch.negative_keys, scale=c.scale
    )
    return v, {"infonce": v}


LOSSES: dict[str, Loss] = {
    "combined": Loss(_combined, ("margin", "p", "w_triplet", "w_pos", "w_neg"), uses_classifier=True),
    "triplet": Loss(_triplet, ("margin", "p"), uses_classifier=False),
    "pair_ce": Loss(_pair_ce, ("w_pos", "w_neg"), uses_classifier=True),
    "infonce": Loss(_infonce, ("scale",), uses_classifier=False),
}

_TERM = re.compile(r"\s*(?:(?P<w>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)\s*\*\s*)?(?P<name>[a-z_]+)\s*")


def parse_loss(spec: str) -> list[tuple[str, float]]:
    """``"infonce+0.5*pair_ce"`` -> ``[("infonce", 1.0), ("pair_ce", 0.5)]``; unknown names raise."""
    terms = []
    for part in spec.split("+"):
        m = _TERM.fullmatch(part)
        if not m:
            raise LossError(f"loss {spec!r}: cannot read term {part!r} (expected NAME or WEIGHT*NAME)")
        name = m["name"]
        if name not in LOSSES:
            raise LossError(f"loss {spec!r}: unknown objective {name!r}; known: {', '.join(LOSSES)}")
        terms.append((name, float(m["w"]) if m["w"] else 1.0))
    if len({n for n, _ in terms}) < len(terms):
        raise LossError(f"loss {spec!r} names an objective twice")
    return terms


def uses_classifier(spec: str) -> bool:
    """Whether any term of ``spec`` needs the pair classifier's logits."""
    return any(LOSSES[name].uses_classifier for name, _ in parse_loss(spec))


def total_loss(spec: str, batch: LossBatch, config) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted sum of ``spec``'s objectives and all their unweighted parts (for logging)."""
    total: torch.Tensor | None = None
    parts: dict[str, torch.Tensor] = {}
    for name, weight in parse_loss(spec):
        value, p = LOSSES[name].fn(batch, config)
        total = weight * value if total is None else total + weight * value
        parts.update(p)
    if total is None:  # parse_loss refuses an empty spec; this keeps the return type honest
        raise LossError(f"loss {spec!r} names no objective")
    return total, parts
