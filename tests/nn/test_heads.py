"""The similarity head's starts (HEAD_STARTS), its width and its drift (counterarg.nn.heads)."""

import pytest
import torch

from counterarg.evaluation.evaluate import query_ranks
from counterarg.nn.heads import HEAD_STARTS, Heads
from counterarg.retrieval.pools import pools_from_labels


@pytest.fixture
def pooled():
    g = torch.Generator().manual_seed(0)
    q = 24
    pools = pools_from_labels("test", [f"t{i % 2}/d{i % 4}" for i in range(q)], ["pro", "con"] * (q // 2))
    return pools, torch.randn(q, 16, generator=g), torch.randn(q, 16, generator=g)


@pytest.mark.parametrize("head", ["identity", "residual"])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_identity_start_reproduces_zero_shot_ranks(pooled, head, metric):
    pools, hp, hc = pooled
    heads = Heads(16, 0, head)
    zero_shot = query_ranks(pools, hp, hc, mode="retrieval", metric=metric)
    with torch.no_grad():
        before = query_ranks(pools, heads.similarity(hp), heads.similarity(hc), mode="retrieval", metric=metric)
    for task, ranks in zero_shot.items():
        torch.testing.assert_close(before[task], ranks)


def test_orthogonal_start_keeps_distances(pooled):
    _, hp, hc = pooled
    torch.manual_seed(1)
    heads = Heads(16, 16, "orthogonal")
    with torch.no_grad():
        torch.testing.assert_close(
            torch.cdist(heads.similarity(hp), heads.similarity(hc)), torch.cdist(hp, hc), atol=1e-4, rtol=1e-4
        )


def test_sim_dim_zero_is_the_encoder_width_and_identity_can_project():
    assert Heads(16, 0, "linear").sim_dim == 16
    h = torch.randn(3, 16)
    torch.testing.assert_close(Heads(16, 4, "identity").similarity(h), h[:, :4])
    with pytest.raises(ValueError, match="residual"):
        Heads(16, 8, "residual")


@pytest.mark.parametrize("head", sorted(HEAD_STARTS))
def test_drift_is_zero_at_the_start_and_grows_with_the_change(head):
    torch.manual_seed(2)
    heads = Heads(8, 8, head)
    assert heads.drift().item() == 0.0
    with torch.no_grad():
        heads.sim.weight[0, 0] += 0.5
    assert heads.drift().item() == pytest.approx(0.25)


def test_linear_head_keeps_the_reference_random_start():
    torch.manual_seed(3)
    ref = torch.nn.Linear(8, 4)
    torch.manual_seed(3)
    heads = Heads(8, 4, "linear")
    torch.testing.assert_close(heads.sim.weight, ref.weight)
