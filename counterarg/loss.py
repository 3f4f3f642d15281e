"""CombinedLoss: triplet margin loss in the similarity space plus two pair-classification terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    """The seed's loss: TripletMarginLoss(margin, p) + CE(pos -> 1) + CE(neg -> 0), each weighted.

    Returns the total and its three unweighted parts (for logging).
    """
    batch = s_point.shape[0]
    ones = torch.ones(batch, dtype=torch.long, device=s_point.device)  # [B]
    triplet = F.triplet_margin_loss(s_point, s_counter, s_negative, margin=margin, p=p)
    ce_pos = F.cross_entropy(logits_pos, ones)
    ce_neg = F.cross_entropy(logits_neg, torch.zeros_like(ones))
    total = w_triplet * triplet + w_pos * ce_pos + w_neg * ce_neg
    return total, {"triplet": triplet, "ce_pos": ce_pos, "ce_neg": ce_neg}
