"""Pools on the real ArguAna test split (skipped when no corpus is found: $COUNTERARG_CORPUS or ../shared/data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from counterarg.tasks import TASKS

from counterarg.corpus import real_corpus_path

CORPUS = real_corpus_path()

pytestmark = [
    pytest.mark.corpus,
    pytest.mark.skipif(not CORPUS.exists(), reason=f"real corpus not found at {CORPUS} (set COUNTERARG_CORPUS)"),
]

# mean pool sizes on the test split (1,401 queries), each distinct text counted once
EXPECTED_SIZES = {"sdoc": 3.888, "sdoa": 7.639, "sdc": 7.635, "sda": 14.278, "stc": 136.263,
                  "sta": 271.648, "epc": 1292.0, "epa": 2585.0}


@pytest.fixture(scope="module")
def corpus():
    from counterarg.corpus import load_corpus

    return load_corpus(CORPUS, splits=("training", "test"))


@pytest.fixture(scope="module")
def pools(corpus):
    from counterarg.tasks import build_pools, seen_texts

    return build_pools(corpus.split("test"), seen_texts(corpus.split("training")))


def test_test_split_pool_sizes(pools):
    assert pools.num_queries == 1401
    sizes = pools.sizes()
    for task, want in EXPECTED_SIZES.items():
        assert sizes[task] == pytest.approx(want, abs=0.001), task


def test_copies_and_the_unseen_view_match_the_corpus_counts(pools, corpus):
    c = pools.copy_counts()
    assert c["true_counter_copied"] == 218 and c["unseen"] == 783
    training = {r.text for r in corpus.split("training").records}
    want = [p.point.text not in training and p.counter.text not in training for p in corpus.split("test").pairs]
    assert pools.unseen.tolist() == want


def test_test_split_pools_hold_the_hit_and_no_copy_of_the_query(pools):
    q = pools.num_queries
    text = torch.as_tensor(pools.text)
    for task in TASKS:
        m = pools.mask(task)
        assert ((text[None, :] == text[:q, None]) & m).sum(1).eq(1).all(), task  # one copy of the hit
        own = (text[None, :] == text[q:, None]) & (text[q:, None] != text[:q, None])
        assert not (own & m).any(), task
        assert np.array_equal(m.sum(1).numpy(), pools.pool_sizes(task)), task
        rows = [len(set(pools.text[pools.members(task, i)])) for i in range(0, q, 97)]
        assert rows == [len(pools.members(task, i)) for i in range(0, q, 97)], task  # texts distinct


def test_test_split_evaluates(pools):
    from counterarg.evaluate import evaluate_split
    from counterarg.model import Heads

    g = torch.Generator().manual_seed(0)
    q = pools.num_queries
    ps = torch.randn(q, 16, generator=g)
    cs = ps + 0.5 * torch.randn(q, 16, generator=g)  # counters near their points
    h = torch.randn(q, 8, generator=g)
    clf = Heads(8, 16).classify
    ret = evaluate_split("test", pools, ps, cs, mode="retrieval")
    rr = evaluate_split("test", pools, ps, cs, h, h, clf, mode="rerank", rerank_k=10)
    assert ret["test/epc/acc@1"] > 0.5  # far above chance (1/1401)
    for task in TASKS:  # reranking only reorders the top 10
        assert rr[f"test/{task}/acc@10"] == pytest.approx(ret[f"test/{task}/acc@10"])
