import math

import torch

from counterarg.loss import combined_loss


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
