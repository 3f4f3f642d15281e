"""Pools on the real ArguAna test split (skipped when ../shared/data holds no corpus)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from counterarg.tasks import TASKS

CORPUS = Path(__file__).resolve().parents[1].parent / "shared/data/arguana-counterargs-corpus.zip"

pytestmark = [
    pytest.mark.corpus,
    pytest.mark.skipif(not CORPUS.is_file(), reason=f"real corpus not found at {CORPUS}"),
]

# mean pool sizes on the test split (1,401 queries)
EXPECTED_SIZES = {"sdoc": 3.89, "sdoa": 7.65, "sdc": 7.65, "sda": 14.3, "stc": 136.53,
                  "sta": 272.06, "epc": 1401.0, "epa": 2801.0}


@pytest.fixture(scope="module")
def pools():
    from counterarg.corpus import load_corpus
    from counterarg.tasks import build_pools

    return build_pools(load_corpus(CORPUS, splits=("test",)).split("test"))


def test_test_split_pool_sizes(pools):
    assert pools.num_queries == 1401
    sizes = pools.sizes()
    for task, want in EXPECTED_SIZES.items():
        assert sizes[task] == pytest.approx(want, abs=0.05), task


def test_test_split_pools_hold_the_true_counter(pools):
    q = pools.num_queries
    ar = torch.arange(q)
    for task in TASKS:
        m = pools.mask(task)
        assert bool(m[ar, ar].all()) and not bool(m[ar, q + ar].any()), task
        assert np.array_equal(m.sum(1).numpy(), pools.pool_sizes(task)), task


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
