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


def test_collection_embeddings_must_match_the_view():
    with pytest.raises(ValueError, match="expected \\[6, d\\]"):
        view_ranks(_view([0], [1]), X[:4], metric="l2")
