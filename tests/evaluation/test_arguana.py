"""Ranks of the ArguAna view (counterarg.evaluation.arguana): the query's own text excluded, ties
against the relevant document, queries without one, the classifier's rerank of the top k."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import score_classifier

from counterarg.evaluation.arguana import view_ranks
from counterarg.retrieval.arguana import ArguAnaView


def _view(query, relevant):
    q = np.asarray(query, np.int64)
    return ArguAnaView("test", np.arange(6), q, np.asarray(relevant, np.int64), None, 6)


# six documents on a line (L2): doc 0 at 0, doc 1 at 1, doc 2 at -1 (ties with doc 1 seen from 0),
# doc 3 at 0.5, doc 4 at 3, doc 5 at 0 (a second document at the same place as doc 0)
X = torch.tensor([[0.0], [1.0], [-1.0], [0.5], [3.0], [0.0]], dtype=torch.float64)


def test_own_text_excluded_ties_count_against_the_relevant_document():
    # query = doc 0; relevant doc 1 at distance 1; doc 5 (distance 0) and doc 3 (0.5) before it,
    # doc 2 ties with it and goes before it; doc 0 itself is no result
    r = view_ranks(_view([0], [1]), X, metric="l2")
    assert r.tolist() == [4.0]
    # query = doc 4: the relevant doc 1 (distance 2) is the nearest
    assert view_ranks(_view([4], [1]), X, metric="l2").tolist() == [1.0]


def test_queries_without_a_relevant_document_or_outside_the_collection_rank_inf():
    r = view_ranks(_view([0, -1, 3], [-1, -1, 4]), X, metric="l2")
    assert math.isinf(r[0]) and math.isinf(r[1]) and r[2] == 5.0  # doc 3 -> 4 is the farthest


def test_cosine_ranks_by_angle():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [1.0, -0.2]])
    # from doc 0: doc 2 (18 deg), doc 5 (11 deg), doc 3 (45 deg), doc 1 (90 deg), doc 4 (180 deg)
    assert view_ranks(_view([0], [3]), x, metric="cosine").tolist() == [3.0]


def test_rerank_reorders_the_top_k_by_the_classifier():
    """score_classifier's positive probability grows with h[:, 0]: the relevant document with the
    largest h among the top rerank_k by distance goes first, and keeps its distance rank past them."""
    h = torch.tensor([[0.0], [5.0], [1.0], [2.0], [9.0], [0.5]])
    view = _view([0], [1])
    # rerank_k = 4: docs 5, 3, 2 and the relevant one; doc 4 (h 9) is past them
    assert view_ranks(view, X, h, score_classifier, mode="rerank", metric="l2", rerank_k=4).tolist() == [1.0]
    # all six: doc 4 goes first
    assert view_ranks(view, X, h, score_classifier, mode="rerank", metric="l2", rerank_k=10).tolist() == [2.0]
    # rerank_k = 3: the relevant document (distance rank 4) cannot move
    assert view_ranks(view, X, h, score_classifier, mode="rerank", metric="l2", rerank_k=3).tolist() == [4.0]
    # a larger h for doc 3 puts it ahead of the relevant document
    h2 = h.clone()
    h2[3, 0] = 7.0
    assert view_ranks(view, X, h2, score_classifier, mode="rerank", metric="l2", rerank_k=4).tolist() == [2.0]
    with pytest.raises(ValueError, match="needs the pooled outputs"):
        view_ranks(view, X, None, None, mode="rerank", metric="l2")


@pytest.mark.parametrize("mode", ["rerank", "fused"])
def test_reranked_ranks_equal_a_one_query_at_a_time_reference(mode):
    """On 40 documents with many exact ties: each query's rank is its relevant document's distance
    rank, or, within the top rerank_k, 1 + the rivals (the k - 1 nearest others, ties by lower index)
    that the scorer puts at or above it."""
    from counterarg.retrieval.distances import prepare, row_distances, work_dtype
    from counterarg.retrieval.scorers import check_options

    rng = np.random.default_rng(3)
    n, k, w = 40, 5, 0.7
    x = torch.as_tensor(rng.integers(0, 4, (n, 2)), dtype=torch.float64)  # [N, 2]; exact ties
    h = torch.as_tensor(rng.integers(0, 3, (n, 1)), dtype=torch.float64)  # [N, 1]; ties in the classifier too
    rel = (np.arange(n) + rng.integers(1, n, n)) % n  # never the query itself
    view = ArguAnaView("test", np.arange(n), np.arange(n), rel, None, n)
    got = view_ranks(view, x, h, score_classifier, mode=mode, metric="l2", rerank_k=k, fused_w=w)
    scorer = check_options(mode, "l2", k)
    c = prepare(x, "l2", work_dtype(x.device))
    want = []
    for i in range(n):
        d = row_distances(c[i : i + 1], c, (c * c).sum(1), "l2")[0].double()  # [N]
        others = [j for j in range(n) if j != i]
        r = sum(1 for j in others if d[j] <= d[rel[i]])
        if r <= k:
            rivals = sorted((j for j in others if j != rel[i]), key=lambda j: (float(d[j]), j))[: k - 1]
            ids = [int(rel[i]), *rivals]
            v = scorer.values(score_classifier(None, None, None, h[ids]))  # [k]
            p = scorer.combine(v.double(), d[ids], w)  # [k]
            r = 1 + int((p[1:] >= p[0]).sum())
        want.append(float(r))
    assert got.tolist() == want
    assert any(a != b for a, b in zip(want, view_ranks(view, x, metric="l2").tolist()))  # the rerank moved some


def test_collection_embeddings_must_match_the_view():
    with pytest.raises(ValueError, match="expected \\[6, d\\]"):
        view_ranks(_view([0], [1]), X[:4], metric="l2")
