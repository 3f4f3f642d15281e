"""A split's pools ranked at once (counterarg.retrieval.pool_ranks): the inputs checked once, the distance
ranks of both kinds of pool with the top members a reranking scorer reorders, the rerank step. The ranks
against a brute-force definition, with copies and ties: tests/evaluation/test_evaluate.py."""

from __future__ import annotations

import pytest
import torch
from conftest import score_classifier

from counterarg.retrieval.pool_ranks import distance_ranks, rerank, split_embeddings
from counterarg.retrieval.pools import pools_from_labels
from counterarg.retrieval.scorers import get_scorer
from counterarg.retrieval.tasks import EvaluationError

# One debate, Q = 3 (pairs 0, 1 pro; 2 con); candidates: counters 0..2, then points 3..5.
P = torch.tensor([[0.0], [10.0], [20.0]])
C = torch.tensor([[1.0], [13.0], [30.0]])
H_P, H_C = torch.zeros(3, 1), torch.tensor([[0.0], [1.0], [2.0]])  # the positive logit: the candidate's h


@pytest.fixture
def pools():
    return pools_from_labels("test", ["t/x"] * 3, ["pro", "pro", "con"])


def embeddings(pools, mode="rerank", tasks=("sdc", "epa")):
    return split_embeddings(
        pools,
        P,
        C,
        H_P,
        H_C,
        metric="l2",
        tasks=tasks,
        split="test",
        scorer=get_scorer(mode),
        classify=score_classifier,
    )


def test_split_embeddings_are_checked_once_and_prepared(pools):
    emb = embeddings(pools)
    assert emb.num_queries == 3 and emb.cand.dtype == torch.float64
    assert emb.cand[:, 0].tolist() == [1, 13, 30, 0, 10, 20]  # counters, then points
    assert emb.cand_sq.tolist() == [1, 169, 900, 0, 100, 400]
    plain = split_embeddings(pools, P, C, metric="cosine", tasks=("sdc",), split="t", scorer=get_scorer("retrieval"))
    assert plain.point_h is None and plain.cand_sq is None  # no classifier; cosine needs no norms
    assert plain.cand.abs().max() == 1  # unit rows
    with pytest.raises(EvaluationError, match="'t': mode 'rerank' needs a classify function"):
        split_embeddings(pools, P, C, H_P, H_C, metric="l2", tasks=("sdc",), split="t", scorer=get_scorer("rerank"))
    with pytest.raises(EvaluationError, match="point_h is required"):
        split_embeddings(
            pools, P, C, None, H_C, metric="l2", tasks=("sdc",), split="t", scorer=get_scorer("fused"), classify=min
        )
    with pytest.raises(EvaluationError, match="'t' has no queries"):
        split_embeddings(
            pools_from_labels("t", [], []),
            P[:0],
            C[:0],
            metric="l2",
            tasks=(),
            split="t",
            scorer=get_scorer("retrieval"),
        )


def test_distance_ranks_keep_the_nearest_other_members_of_each_kind_of_pool(pools):
    """Query 2 (point at 20): sdc (a per-query pool) c1 49, c2 100 (true), c0 361; epa (split-wide) c1 49,
    p1 100 (ties the true counter and goes first), c2 100, c0 361, p0 400."""
    emb = embeddings(pools)
    ranks, tops = distance_ranks(pools, emb, ("sdc", "epa"))
    assert ranks["sdc"].tolist() == [1, 1, 2] and ranks["epa"].tolist() == [1, 1, 3]
    assert tops == {"sdc": [], "epa": []}
    ranks, tops = distance_ranks(pools, emb, ("sdc", "epa"), top_k=3)
    assert ranks["epa"].tolist() == [1, 1, 3]  # the same distance ranks
    (epa,) = tops["epa"]  # one block
    assert epa.query.tolist() == [0, 1, 2]  # every true counter is within the first 3
    assert epa.ids[2].tolist() == [1, 4]  # c1, p1: the two nearest besides the true counter
    assert epa.ids[1].tolist() == [0, 3]  # c0 81, then p0 and p2 tie at 100: the lower index
    (sdc,) = tops["sdc"]
    assert sdc.ids[2].tolist() == [1, 0] and bool(sdc.valid.all())
    d = emb.cand_sq - 2 * emb.cand[:, 0] * 20  # query 2's distances up to its constant
    assert sdc.dist[2].tolist() == [d[1].item(), d[0].item()] and sdc.true_dist[2].item() == d[2].item()
    _, tops = distance_ranks(pools, emb, ("sdc",), top_k=10)  # a pool smaller than k is padded
    assert tops["sdc"][0].valid.sum(1).tolist() == [2, 2, 2]


def test_rerank_reorders_the_top_by_the_scorers_score(pools):
    """Query 2's epa top 3 (c1, p1, c2) by probability (h 1, 0, 2): c2 first; by 10 * log-odds - distance
    (-39, -100, -80): second. The classifier sees each distinct pair once."""
    emb = embeddings(pools)
    pairs = []

    def counting(sp, sc, hp, hc):
        pairs.append(sp.shape[0])
        return score_classifier(sp, sc, hp, hc)

    for mode, w, want in (("rerank", 0.0, [3, 1, 1]), ("fused", 10.0, [1, 1, 2])):
        ranks, tops = distance_ranks(pools, emb, ("sdc", "epa"), top_k=3)
        assert rerank(ranks, tops, emb, counting, get_scorer(mode), w)["epa"].tolist() == want
    # one call each: per query its true pair and the 3 distinct others of its sdc and epa top 3 (one shared)
    assert pairs == [3 * 4, 3 * 4]
    ranks, _ = distance_ranks(pools, emb, ("epa",))
    assert rerank(ranks, {"epa": []}, emb, None, get_scorer("rerank"))["epa"].tolist() == [1, 1, 3]  # nothing to do
