"""counterarg.analysis.verdicts: a sweep's trials -> seed-aware comparisons, Holm, verdicts, partial sweeps."""

from __future__ import annotations

import numpy as np
import pytest

from counterarg.analysis.significance import PairedTest, holm
from counterarg.analysis.trials import summary_rows
from counterarg.analysis.verdicts import compare, significance, trial_hits, verdicts

from .conftest import ranked_records


def test_compare_orders_pairs_and_holm_adjusts_them():
    rng = np.random.default_rng(4)
    p = rng.uniform(0.2, 0.6, 400)
    hits = {g: (rng.random((3, 400)) < p + shift).astype(float) for g, shift in (("x", 0.0), ("y", 0.3), ("z", 0.0))}
    comps = compare(hits, "sdoc", "all", PairedTest(400, resamples=500))
    assert [(c.strategy_a, c.strategy_b) for c in comps][:2] == [("y", "x"), ("y", "z")] or [
        (c.strategy_a, c.strategy_b) for c in comps
    ][:2] == [("y", "z"), ("y", "x")]
    ps = sorted(c.p_value for c in comps)
    holms = sorted(c.p_holm for c in comps)
    assert holms[0] == pytest.approx(min(1.0, 3 * ps[0]))  # the smallest p times the family size
    # a family of small gaps, where the adjustment shows: each p_holm is Holm's, and larger than the raw p
    close = {g: (rng.random((3, 400)) < p + shift).astype(float) for g, shift in (("u", 0.0), ("v", 0.05), ("w", 0.02))}
    family = compare(close, "sdoc", "all", PairedTest(400, resamples=200))
    raw = [c.p_value for c in family]
    assert 0 < min(raw) < 0.5
    assert [c.p_holm for c in family] == pytest.approx(holm(raw))
    assert all(c.p_holm > c.p_value for c in family if c.p_value < 1 / 3)
    means = {("sdoc", "all"): {g: float(h.mean()) for g, h in hits.items()}}
    v = verdicts(comps, means)[("sdoc", "all")]
    assert v.best == "y" and v.significant and v.n_seeds == (3, 3)
    xz = next(c for c in comps if {c.strategy_a, c.strategy_b} == {"x", "z"})
    assert not xz.significant and xz.p_value_queries <= 1


def test_three_seeds_per_side_never_pass_an_exact_permutation_floor_claim():
    # the seed-aware p-value is a t-test: with 3 + 3 runs it can be small, but its interval is honest
    a = np.array([[1.0] * 10 + [0.0] * 10] * 3)  # [3, 20]
    b = np.array([[0.0] * 20] * 3)
    c = compare({"a": a, "b": b}, "sdoc", "all", PairedTest(20, resamples=200))[0]
    assert c.diff == pytest.approx(0.5) and c.ci_low < 0.5 < c.ci_high


def test_significance_finds_a_planted_gap_and_not_a_copy():
    recs = ranked_records()
    rows = summary_rows(recs)
    comps, verdict, notes = significance(recs, rows)
    assert not notes
    by = {(c.task, c.view, c.strategy_a, c.strategy_b): c for c in comps}
    big = by[("sdoc", "all", "recipe: fixed 0.5", "recipe: fixed 0.6")]
    assert big.p_value < 0.01 and big.diff == pytest.approx(0.3, abs=0.08) and big.n_seeds_a == 2
    assert big.ci_low < big.diff < big.ci_high and big.ci_low > 0
    same = [c for c in comps if {c.strategy_a, c.strategy_b} == {"recipe: fixed 0.6", "recipe: fixed 0.7"}]
    assert same and all(c.p_value == 1.0 and c.diff == 0 for c in same)
    v = verdict[("mean", "unseen")]
    assert v.best == "recipe: fixed 0.5" and v.significant and v.runner_up in ("recipe: fixed 0.6", "recipe: fixed 0.7")
    again = significance(recs, rows)[0]
    assert [c.p_value_queries for c in again] == [c.p_value_queries for c in comps]  # seeded


def test_unfinished_trials_leave_their_strategy_out_and_stop_every_verdict():
    recs = ranked_records()
    recs[0].ended = "interrupted"  # one seed of the good strategy was interrupted
    rows = summary_rows(recs)
    hits, notes, partial = trial_hits(recs, rows)
    assert partial == {"recipe: fixed 0.5"} and "recipe: fixed 0.5" not in hits[("sdoc", "all")]
    assert any("unfinished" in n for n in notes)
    comps, verdict, _ = significance(recs, rows)
    assert all("recipe: fixed 0.5" not in (c.strategy_a, c.strategy_b) for c in comps)
    assert all(v.partial and not v.significant for v in verdict.values())
