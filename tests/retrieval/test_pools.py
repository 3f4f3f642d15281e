"""Candidate pools (counterarg.retrieval.pools): membership on a tiny hand-made split (answers worked out by
hand), masks vs compact indexes, the unseen view, and pool sizes on the real ArguAna test split
(skipped when no corpus is found: $COUNTERARG_CORPUS or ../shared/data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import LAYOUT, make_split

from counterarg.data.corpus import Split, load_corpus, real_corpus_path
from counterarg.retrieval.pools import build_pools, pools_from_labels, seen_texts
from counterarg.retrieval.tasks import TASKS, EvaluationError

CORPUS = real_corpus_path()


EXPECTED = {
    0: {
        "sdoc": {0, 1},
        "sdoa": {0, 1, 10},
        "sdc": {0, 1, 2},
        "sda": {0, 1, 2, 9, 10},
        "stc": {0, 1, 2, 3, 4},
        "sta": {0, 1, 2, 3, 4, 9, 10, 11, 12},
        "epc": set(range(8)),
        "epa": set(range(16)) - {8},
    },
    6: {
        "sdoc": {6, 7},
        "sdoa": {6, 7, 13},
        "sdc": {5, 6, 7},
        "sda": {5, 6, 7, 13, 15},
        "stc": {5, 6, 7},
        "sta": {5, 6, 7, 13, 15},
        "epc": set(range(8)),
        "epa": set(range(16)) - {14},
    },
    3: {
        "sdoc": {3},
        "sdoa": {3, 12},
        "sdc": {3, 4},
        "sda": {3, 4, 12},
        "stc": {0, 1, 2, 3, 4},
        "sta": {0, 1, 2, 3, 4, 8, 9, 10, 12},
    },
}


@pytest.fixture(scope="module")
def pools():
    return build_pools(make_split(LAYOUT))


@pytest.mark.parametrize("query", sorted(EXPECTED))
def test_pool_members_by_hand(pools, query):
    for task, members in EXPECTED[query].items():
        assert set(pools.members(task, query).tolist()) == members, (task, query)


def test_true_counter_always_in_pool_and_own_point_never(pools):
    q = pools.num_queries
    ar = torch.arange(q)
    for task in TASKS:
        m = pools.mask(task)
        assert m.shape == (q, 2 * q)
        assert bool(m[ar, ar].all()), task
        assert not bool(m[ar, q + ar].any()), task


def test_sizes_match_masks_and_blocks(pools):
    q = pools.num_queries
    for task in TASKS:
        full = pools.mask(task)
        assert np.array_equal(full.sum(1).numpy(), pools.pool_sizes(task)), task
        blocks = torch.cat([pools.mask(task, slice(s, min(q, s + 3))) for s in range(0, q, 3)])
        assert torch.equal(blocks, full), task
    sizes = pools.sizes()
    assert sizes["epc"] == 8 and sizes["epa"] == 15
    assert sizes["sdoc"] == pytest.approx((2 + 2 + 1 + 1 + 1 + 1 + 2 + 2) / 8)
    assert sizes["sda"] == pytest.approx(2 * sizes["sdc"] - 1)
    assert sizes["sdoa"] == pytest.approx(sizes["sdc"])
    assert pools.num_queries == 8 and pools.num_candidates == 16


def test_no_pairs_raises():
    with pytest.raises(EvaluationError, match="'validation'.*no"):
        build_pools(Split("validation", [], [], []))


def test_unknown_task_and_bad_labels(pools):
    with pytest.raises(EvaluationError, match="unknown task"):
        pools.mask("xyz")
    with pytest.raises(EvaluationError, match="side"):
        pools_from_labels("test", ["a/b"], ["neutral"])


def test_compact_index_matches_mask(pools):
    q = pools.num_queries
    for task in TASKS:
        for rows in (slice(0, q), slice(2, 5)):
            ids, valid = pools.index(task, rows)
            m = pools.mask(task, rows)
            rebuilt = torch.zeros_like(m)
            for b in range(ids.shape[0]):
                rebuilt[b, ids[b][valid[b]]] = True
                assert bool((ids[b][valid[b]].diff() > 0).all())  # increasing candidate order
            assert torch.equal(rebuilt, m), (task, rows)


def test_unseen_view_picks_exactly_the_queries_with_no_text_in_training():
    from counterarg.data.corpus import Record

    split = make_split(LAYOUT)
    # training holds the point of pair 1, the counter of pair 3 and an unpaired text equal to pair 5's point
    training_records = [
        split.pairs[1].point,
        split.pairs[3].counter,
        Record("training", "Z", "z", "pro", 9, "point", split.pairs[5].point.text, "mem"),
    ]
    seen = {r.text for r in training_records}
    pools = build_pools(split, seen)
    assert pools.unseen.tolist() == [True, False, True, False, True, False, True, True]
    assert build_pools(make_split(LAYOUT, name="training"), seen).unseen is None  # training has no view
    assert pools.copy_counts()["unseen"] == 5
    assert "5 unseen" in pools.describe()


# ---------------------------------------------------------------- the real ArguAna test split
# mean pool sizes on the test split (1,401 queries), each distinct text counted once
EXPECTED_SIZES = {
    "sdoc": 3.888,
    "sdoa": 7.639,
    "sdc": 7.635,
    "sda": 14.278,
    "stc": 136.263,
    "sta": 271.648,
    "epc": 1292.0,
    "epa": 2585.0,
}


@pytest.fixture(scope="module")
def arguana():
    if not CORPUS.exists():
        pytest.skip(f"real corpus not found at {CORPUS} (set COUNTERARG_CORPUS)")
    return load_corpus(CORPUS, splits=("training", "test"))


@pytest.fixture(scope="module")
def arguana_pools(arguana):
    return build_pools(arguana.split("test"), seen_texts(arguana.split("training")))


@pytest.mark.corpus
def test_test_split_pool_sizes(arguana_pools):
    assert arguana_pools.num_queries == 1401
    sizes = arguana_pools.sizes()
    for task, want in EXPECTED_SIZES.items():
        assert sizes[task] == pytest.approx(want, abs=0.001), task


@pytest.mark.corpus
def test_copies_and_the_unseen_view_match_the_corpus_counts(arguana_pools, arguana):
    c = arguana_pools.copy_counts()
    assert c["true_counter_copied"] == 218 and c["unseen"] == 783
    training = {r.text for r in arguana.split("training").records}
    want = [p.point.text not in training and p.counter.text not in training for p in arguana.split("test").pairs]
    assert arguana_pools.unseen.tolist() == want


@pytest.mark.corpus
def test_test_split_pools_hold_the_hit_and_no_copy_of_the_query(arguana_pools):
    q = arguana_pools.num_queries
    text = torch.as_tensor(arguana_pools.text)
    for task in TASKS:
        m = arguana_pools.mask(task)
        assert ((text[None, :] == text[:q, None]) & m).sum(1).eq(1).all(), task  # one copy of the hit
        own = (text[None, :] == text[q:, None]) & (text[q:, None] != text[:q, None])
        assert not (own & m).any(), task
        assert np.array_equal(m.sum(1).numpy(), arguana_pools.pool_sizes(task)), task
        rows = [len(set(arguana_pools.text[arguana_pools.members(task, i)])) for i in range(0, q, 97)]
        assert rows == [len(arguana_pools.members(task, i)) for i in range(0, q, 97)], task  # texts distinct


@pytest.mark.corpus
def test_test_split_evaluates(arguana_pools):
    from counterarg.evaluation.evaluate import evaluate_split
    from counterarg.nn.heads import Heads

    g = torch.Generator().manual_seed(0)
    q = arguana_pools.num_queries
    ps = torch.randn(q, 16, generator=g)
    cs = ps + 0.5 * torch.randn(q, 16, generator=g)  # counters near their points
    h = torch.randn(q, 8, generator=g)
    clf = Heads(8, 16).classify
    ret = evaluate_split("test", arguana_pools, ps, cs, mode="retrieval")
    rr = evaluate_split("test", arguana_pools, ps, cs, h, h, clf, mode="rerank", rerank_k=10)
    assert ret["test/epc/acc@1"] > 0.5  # far above chance (1/1401)
    for task in TASKS:  # reranking only reorders the top 10
        assert rr[f"test/{task}/acc@10"] == pytest.approx(ret[f"test/{task}/acc@10"])
