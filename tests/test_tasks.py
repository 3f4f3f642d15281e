"""Pool membership of the eight tasks on a tiny hand-made split (answers worked out by hand)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from counterarg.corpus import Pair, Record, Split
from counterarg.tasks import TASKS, EvaluationError, build_pools, pools_from_labels


def rec(theme, debate, side, number, kind):
    return Record("test", theme, debate, side, number, kind, f"{kind} {theme}/{debate}/{side}{number}", "mem")


def make_split(layout, name="test"):
    """``layout``: list of (theme, debate, side, number) -> a Split of true pairs in that order."""
    pairs = [Pair(rec(t, d, s, n, "point"), rec(t, d, s, n, "counter")) for t, d, s, n in layout]
    records = [r for p in pairs for r in (p.point, p.counter)]
    return Split(name, records, pairs, [])


# Q = 8: counters are candidates 0..7, points 8..15. Debate "d1" exists in both themes: the
# debate key (theme/debate) keeps them apart.
LAYOUT = [
    ("A", "d1", "pro", 1),  # 0
    ("A", "d1", "pro", 2),  # 1
    ("A", "d1", "con", 1),  # 2
    ("A", "d2", "pro", 1),  # 3
    ("A", "d2", "con", 1),  # 4
    ("B", "d1", "pro", 1),  # 5
    ("B", "d1", "con", 1),  # 6
    ("B", "d1", "con", 2),  # 7
]

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


def test_tasks_tuple():
    assert TASKS == ("sdoc", "sdoa", "sdc", "sda", "stc", "sta", "epc", "epa")


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
    from counterarg.corpus import Pair, Record

    split = make_split(LAYOUT)
    # training holds the point of pair 1, the counter of pair 3 and an unpaired text equal to pair 5's point
    training_records = [split.pairs[1].point, split.pairs[3].counter,
                        Record("training", "Z", "z", "pro", 9, "point", split.pairs[5].point.text, "mem")]
    seen = {r.text for r in training_records}
    pools = build_pools(split, seen)
    assert pools.unseen.tolist() == [True, False, True, False, True, False, True, True]
    assert build_pools(make_split(LAYOUT, name="training"), seen).unseen is None  # training has no view
    assert pools.copy_counts()["unseen"] == 5
    assert "5 unseen" in pools.describe()


@pytest.fixture
def toy_task():
    """A ninth task registered for one test: counters and other points of the same debate side."""
    import counterarg.tasks as tasks_mod

    task = tasks_mod.register_task(tasks_mod.Task("sdsa", "same debate side: counters + other points",
                                                  "debate_side", "group"))
    yield task
    tasks_mod.REGISTRY.pop(task.name)
    tasks_mod.TASKS = tuple(tasks_mod.REGISTRY)


def test_a_registered_task_is_evaluated_and_summarised(toy_task, tmp_path):
    from counterarg.evaluate import evaluate_split, format_table
    from counterarg.sweep.summary import summary_markdown
    from counterarg.sweep.trials import TrialRecord, summary_rows
    from counterarg.tasks import register_task, Task, task_names

    pools = build_pools(make_split(LAYOUT))
    assert set(pools.members("sdsa", 0).tolist()) == {0, 1, 9}  # d1/pro counters 0, 1 and point 1
    q = pools.num_queries
    g = torch.Generator().manual_seed(0)
    m = evaluate_split("test", pools, torch.randn(q, 4, generator=g), torch.randn(q, 4, generator=g),
                       mode="retrieval")
    assert "test/sdsa/acc@1" in m and "\nsdsa " in format_table(m, "test", pools)
    assert m["test/mean/acc@1"] == pytest.approx(sum(m[f"test/{t}/acc@1"] for t in task_names()) / 9)
    row = {"epoch": 1, "validation/mean/acc@1": 0.5, "validation_unseen/mean/acc@1": 0.5, **m}
    md = summary_markdown(summary_rows([TrialRecord("a", {"schedule": "random"}, [row])]))
    assert "| epa | sdsa | mean |" in md  # the summary's columns follow the registry
    with pytest.raises(EvaluationError, match="exists already"):
        register_task(Task("sdoc", "again", "debate"))
    with pytest.raises(EvaluationError, match="scope"):
        register_task(Task("bad", "?", "galaxy"))
