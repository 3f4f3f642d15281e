"""The paired tests of counterarg.sweep.significance against exact small cases and planted differences."""

from __future__ import annotations

import numpy as np
import pytest

from counterarg.sweep.significance import PairedTest, compare, significance, verdicts
from counterarg.sweep.trials import summary_rows

from .conftest import ranked_records


def test_identical_strategies_give_p_one():
    a = np.random.default_rng(0).random(300)
    diff, lo, hi, p = PairedTest(300)(a, a)
    assert diff == 0 and lo == 0 and hi == 0 and p == 1.0


def test_planted_large_difference_is_significant():
    rng = np.random.default_rng(1)
    b = (rng.random(500) < 0.4).astype(float)
    a = np.maximum(b, rng.random(500) < 0.3)  # about 0.18 more hits, never fewer
    diff, lo, hi, p = PairedTest(500, seed=3)(a, b)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert p < 0.01 and 0 < lo < diff < hi


def test_sign_flip_matches_the_exact_distribution():
    # d = [1, 1]: flipped means are 1, 0, 0, -1 with equal chance -> P(|mean| >= 1) = 1/2
    _, _, _, p = PairedTest(2, resamples=20000, seed=0)(np.array([1.0, 1.0]), np.zeros(2))
    assert p == pytest.approx(0.5, abs=0.015)


def test_seeded_and_reproducible():
    rng = np.random.default_rng(2)
    a, b = rng.random(100), rng.random(100)
    assert PairedTest(100, seed=7)(a, b) == PairedTest(100, seed=7)(a, b)
    assert PairedTest(100, seed=7)(a, b)[3] != PairedTest(100, seed=8)(a, b)[3]


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="100 queries"):
        PairedTest(100)(np.zeros(99), np.zeros(99))
    with pytest.raises(ValueError, match="at least one query"):
        PairedTest(0)


def test_compare_and_verdict():
    rng = np.random.default_rng(4)
    base = (rng.random(400) < 0.5).astype(float)
    scores = {"x": base, "y": np.maximum(base, rng.random(400) < 0.4), "z": base.copy()}
    comps = compare(scores, "sdoc", "all", PairedTest(400))
    assert [(c.strategy_a, c.strategy_b) for c in comps] == [("y", "x"), ("y", "z"), ("x", "z")]
    means = {("sdoc", "all"): {g: float(v.mean()) for g, v in scores.items()}}
    v = verdicts(comps, means)[("sdoc", "all")]
    assert v.best == "y" and v.significant and v.runner_up == "x" and v.p_runner_up < 0.01
    # x vs z only: identical, no winner
    comps2 = compare({"x": base, "z": base}, "sdoc", "all", PairedTest(400))
    v2 = verdicts(comps2, {("sdoc", "all"): {"x": base.mean(), "z": base.mean()}})[("sdoc", "all")]
    assert not v2.significant and v2.p_runner_up == 1.0


# ----------------------------------------------------------------------------- a sweep's trials
def test_significance_finds_a_planted_gap_and_not_a_copy():
    recs = ranked_records()
    rows = summary_rows(recs)
    comps, verdict, notes = significance(recs, rows)
    assert not notes
    by = {(c.task, c.view, c.strategy_a, c.strategy_b): c for c in comps}
    big = by[("sdoc", "all", "recipe: fixed 0.5", "recipe: fixed 0.6")]
    assert big.p_value < 0.01 and big.diff == pytest.approx(0.3, abs=0.08)
    assert big.ci_low < big.diff < big.ci_high and big.ci_low > 0
    same = [c for c in comps if {c.strategy_a, c.strategy_b} == {"recipe: fixed 0.6", "recipe: fixed 0.7"}]
    assert same and all(c.p_value == 1.0 and c.diff == 0 for c in same)
    v = verdict[("mean", "unseen")]
    assert v.best == "recipe: fixed 0.5" and v.significant and v.runner_up in ("recipe: fixed 0.6", "recipe: fixed 0.7")
    again = significance(recs, rows)[0]
    assert [c.p_value for c in again] == [c.p_value for c in comps]  # seeded


def test_ranks_from_another_epoch_are_left_out():
    recs = ranked_records()
    recs[0].ranks["epoch"] = np.array(3)
    _, _, notes = significance(recs, summary_rows(recs))
    assert any("good0" in n and "epoch 3" in n for n in notes)
