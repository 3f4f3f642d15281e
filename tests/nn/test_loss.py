import math

import torch

from counterarg.nn.loss import combined_loss


def test_values_by_hand():
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    p = torch.tensor([[3.0, 4.0], [1.0, 1.0]])  # d(a,p) = 5, 0
    n = torch.tensor([[0.0, 1.0], [1.0, 4.0]])  # d(a,n) = 1, 3
    lp = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])  # p(1) = 1/2, 3/4
    ln = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # p(0) = 1/2, 3/4
    total, parts = combined_loss(a, p, n, lp, ln, margin=1.0, p=2)
    eps = 1e-6  # torch's pairwise_distance adds eps to the difference
    d_ap = torch.tensor([math.dist([-eps, -eps], [3, 4]), eps * math.sqrt(2)])
    d_an = torch.tensor([math.dist([-eps, -eps], [0, 1]), math.dist([eps, eps], [0, 3])])
    triplet = torch.clamp(d_ap - d_an + 1.0, min=0).mean()  # (5 - 1 + 1, 0) -> 2.5
    assert abs(parts["triplet"].item() - triplet.item()) < 1e-5
    assert abs(parts["triplet"].item() - 2.5) < 1e-4
    ce = -(math.log(0.5) + math.log(0.75)) / 2
    assert abs(parts["ce_pos"].item() - ce) < 1e-6 and abs(parts["ce_neg"].item() - ce) < 1e-6
    assert abs(total.item() - (2.5 + 2 * ce)) < 1e-4
    w, _ = combined_loss(a, p, n, lp, ln, margin=2.0, w_triplet=0.5, w_pos=0.0, w_neg=2.0)
    assert abs(w.item() - (0.5 * (6 + 0) / 2 + 2 * ce)) < 1e-4


def test_gradients_flow():
    a, p, n = (torch.randn(4, 3, requires_grad=True) for _ in range(3))
    lp, ln = torch.randn(4, 2, requires_grad=True), torch.randn(4, 2, requires_grad=True)
    total, _ = combined_loss(a, p, n, lp, ln)
    total.backward()
    assert all(t.grad is not None for t in (a, p, n, lp, ln))


# --------------------------------------------------------------------------- infonce and the registry
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402

from counterarg.nn.loss import LOSSES, LossBatch, LossError, infonce_loss, parse_loss, total_loss  # noqa: E402


def test_infonce_by_hand():
    # anchors and candidates at known angles: cos values are exact
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # anchors (norm does not matter)
    c = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # cos(a0,c0)=r, cos(a0,c1)=0, cos(a1,c0)=r, cos(a1,c1)=1
    n = torch.tensor([[[-1.0, 0.0]], [[1.0, 0.0]]])  # cos(a0,n0)=-1, cos(a0,n1)=1, cos(a1,n0)=0, cos(a1,n1)=0
    keys = torch.tensor([0, 1]), torch.tensor([10, 11]), torch.tensor([[20], [21]])
    s = 2.0
    r = 1 / math.sqrt(2)
    e = math.exp
    # every anchor sees both counters and both anchors' negatives
    row0 = -math.log(e(s * r) / (e(s * r) + e(0.0) + e(-s) + e(s)))
    row1 = -math.log(e(s) / (e(s * r) + e(s) + e(0.0) + e(0.0)))
    got = infonce_loss(a, c, n, *keys, scale=s)
    assert got.item() == pytest.approx((row0 + row1) / 2, abs=1e-6)
    # K = 0: in-batch counters only
    row0 = -math.log(e(s * r) / (e(s * r) + e(0.0)))
    row1 = -math.log(e(s) / (e(s * r) + e(s)))
    got = infonce_loss(a, c, n[:, :0], keys[0], keys[1], keys[2][:, :0], scale=s)
    assert got.item() == pytest.approx((row0 + row1) / 2, abs=1e-6)


def test_infonce_masks_copies_of_the_positive_and_the_point():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    n = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    # counter 1 is a copy of counter 0's text; anchor 0's negative is a copy of its own point
    got = infonce_loss(a, c, n, torch.tensor([0, 1]), torch.tensor([10, 10]), torch.tensor([[0], [5]]), scale=3.0)
    # anchor 0: counter 1 (copy of its counter) and n0 (copy of its point) are masked; n1 (cos 0) stays
    row0 = -math.log(math.exp(3.0) / (math.exp(3.0) + math.exp(0.0)))
    # anchor 1: counter 0 is a copy of its counter; n0 (cos 0) and n1 (cos 1) stay
    row1 = -math.log(math.exp(0.0) / (math.exp(0.0) + math.exp(0.0) + math.exp(3.0)))
    assert got.item() == pytest.approx((row0 + row1) / 2, abs=1e-6)


def _batch(b=4, k=2, d=3):
    g = torch.Generator().manual_seed(0)
    return LossBatch(
        s_p=torch.randn(b, d, generator=g),
        s_c=torch.randn(b, d, generator=g),
        s_n=torch.randn(b, k, d, generator=g),
        logits_pos=torch.randn(b, 2, generator=g),
        logits_neg=torch.randn(b, k, 2, generator=g),
        point_keys=torch.arange(b),
        counter_keys=torch.arange(b) + 100,
        negative_keys=torch.arange(b * k).view(b, k) + 200,
    )


CFG = SimpleNamespace(margin=1.0, p=2.0, w_triplet=1.0, w_pos=1.0, w_neg=1.0, scale=20.0)


def test_combined_entry_is_the_reference_loss_on_the_first_negative():
    bt = _batch()
    got, parts = total_loss("combined", bt, CFG)
    ref, _ = combined_loss(bt.s_p, bt.s_c, bt.s_n[:, 0], bt.logits_pos, bt.logits_neg[:, 0])
    assert got.item() == pytest.approx(ref.item()) and set(parts) == {"triplet", "ce_pos", "ce_neg"}


def test_mix_is_the_weighted_sum():
    bt = _batch()
    mix, parts = total_loss("infonce + 0.5*pair_ce", bt, CFG)
    a, _ = LOSSES["infonce"].fn(bt, CFG)
    b, _ = LOSSES["pair_ce"].fn(bt, CFG)
    assert mix.item() == pytest.approx(a.item() + 0.5 * b.item())
    assert set(parts) == {"infonce", "ce_pos", "ce_neg"}


@pytest.mark.parametrize("spec", ["nope", "infonce+", "2*infonce+infonce", "-1*infonce", "infonce*2"])
def test_bad_specs_fail_loudly(spec):
    with pytest.raises(LossError):
        parse_loss(spec)
