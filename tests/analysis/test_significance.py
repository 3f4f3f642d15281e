"""counterarg.analysis.significance: the seed-aware test's calibration and power over simulated sweeps,
the seeds-needed estimate against simulated truth, Holm, and the query-level paired test."""

from __future__ import annotations

import numpy as np
import pytest

from counterarg.analysis.significance import (
    PairedTest,
    holm,
    interaction_var,
    power,
    query_limited,
    residual_var,
    seed_test,
    seeds_needed,
)


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


# ------------------------------------------------------------------------------ simulated sweeps
N_QUERIES = 400
SEED_SD = 0.03  # per-seed offset of every query's hit probability


def simulate(rng, runs: int, gap: float = 0.0, difficulty=None):
    """Hit matrices ``[runs, n]`` of two strategies that share the queries' difficulty: each run adds
    its own offset (the seed) and draws hits on top; ``a`` is ``gap`` better in expectation."""
    p = rng.uniform(0.2, 0.7, N_QUERIES) if difficulty is None else difficulty  # [n]
    out = []
    for shift in (gap, 0.0):
        offset = rng.normal(0.0, SEED_SD, (runs, 1))  # [runs, 1]
        out.append((rng.random((runs, N_QUERIES)) < np.clip(p + shift + offset, 0, 1)).astype(float))
    return out


def verdict_p(ha, hb):
    vq = interaction_var(ha, hb)
    return seed_test(ha.mean(1), hb.mean(1), query_var=vq, n_queries=ha.shape[1]).p_value


def run_sd(rng, runs=4000):
    """The between-seed standard deviation of one strategy's per-run acc@1 in this model."""
    p = rng.uniform(0.2, 0.7, N_QUERIES)
    offset = rng.normal(0.0, SEED_SD, (runs, 1))
    return float((rng.random((runs, N_QUERIES)) < np.clip(p + offset, 0, 1)).mean(1).std(ddof=1))


def test_seed_aware_test_is_calibrated_where_the_query_test_is_not():
    rng = np.random.default_rng(0)
    qtest = PairedTest(N_QUERIES, resamples=2000, seed=1)
    seed_rejects = query_rejects = 0
    sims = 500
    for _ in range(sims):
        ha, hb = simulate(rng, runs=3)
        seed_rejects += verdict_p(ha, hb) < 0.05
        query_rejects += qtest(ha.mean(0), hb.mean(0))[3] < 0.05
    seed_rate, query_rate = seed_rejects / sims, query_rejects / sims
    print(f"null sweeps (3+3 seeds): seed-aware test rejects {seed_rate:.3f}, query-level test {query_rate:.3f}")
    assert seed_rate <= 0.06
    assert query_rate > 3 * seed_rate  # the query-level test claims wins the seeds do not support


def test_a_gap_of_three_seed_sds_is_found_with_five_seeds():
    rng = np.random.default_rng(2)
    gap = 3 * run_sd(rng)
    hits = sum(verdict_p(*simulate(rng, runs=5, gap=gap)) < 0.05 for _ in range(300))
    assert hits / 300 >= 0.8


def test_seeds_needed_is_within_a_factor_two_of_the_simulated_truth():
    rng = np.random.default_rng(3)
    sd = run_sd(rng)
    gap = 1.2 * sd

    def simulated_power(n, sims=200):
        return np.mean([verdict_p(*simulate(rng, runs=n, gap=gap)) < 0.05 for _ in range(sims)])

    truth = next(n for n in range(2, 60) if simulated_power(n) >= 0.8)
    estimates = []
    for _ in range(40):  # what a 5-seed sweep would say
        ha, hb = simulate(rng, runs=5, gap=gap)
        estimates.append(
            seeds_needed(ha.mean(1), hb.mean(1), query_var=interaction_var(ha, hb), n_queries=N_QUERIES) or 200
        )
    median = float(np.median(estimates))
    print(f"seeds needed: simulated truth {truth}, median estimate from 5-seed sweeps {median}")
    assert truth / 2 <= median <= truth * 2


# ------------------------------------------------------------------------------ the pieces
def test_seed_test_is_welch_without_a_query_term():
    a, b = [0.52, 0.55, 0.61], [0.50, 0.49, 0.53]
    st = seed_test(a, b)
    from scipy import stats

    ref = stats.ttest_ind(a, b, equal_var=False)
    assert st.diff == pytest.approx(np.mean(a) - np.mean(b))
    assert st.p_value == pytest.approx(ref.pvalue) and st.df == pytest.approx(ref.df)
    assert st.ci_low < st.diff < st.ci_high and (st.n_a, st.n_b) == (3, 3)


def test_the_query_term_widens_the_interval_and_one_seed_gives_no_p():
    a, b = [0.52, 0.55, 0.61], [0.50, 0.49, 0.53]
    plain, wide = seed_test(a, b), seed_test(a, b, query_var=0.2, n_queries=100)
    assert wide.p_value > plain.p_value and wide.ci_high - wide.ci_low > plain.ci_high - plain.ci_low
    one = seed_test([0.6], b)
    assert one.p_value is None and np.isnan(one.ci_low)
    base = seed_test(a, None, baseline=0.5)  # a deterministic baseline: a one-sample test
    from scipy import stats

    assert base.p_value == pytest.approx(stats.ttest_1samp(a, 0.5).pvalue) and base.n_b == 0


def test_identical_runs_give_p_one():
    assert seed_test([0.5, 0.5], [0.5, 0.5]).p_value == 1.0


def test_interaction_variance_separates_query_effects_from_noise():
    rng = np.random.default_rng(5)
    p = rng.uniform(0.2, 0.8, 2000)
    same = [(rng.random((4, 2000)) < p).astype(float) for _ in range(2)]
    assert interaction_var(*same) == pytest.approx(0.0, abs=0.01)  # shared difficulty: noise only
    other = (rng.random((4, 2000)) < rng.permutation(p)).astype(float)  # other queries are easy
    assert interaction_var(same[0], other) > 0.05
    noise = residual_var(same[0])
    assert noise == pytest.approx(np.mean(p * (1 - p)), rel=0.1)  # Bernoulli variance


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None], nan_ok=True)
    assert holm([]) == []
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_power_and_seeds_needed_agree():
    a, b = [0.60, 0.62, 0.58, 0.61], [0.57, 0.59, 0.55, 0.58]
    n = seeds_needed(a, b)
    var = (np.var(a, ddof=1) + np.var(b, ddof=1)) / 2
    gap = np.mean(a) - np.mean(b)
    assert power(gap, var, n) >= 0.8 > power(gap, var, n - 1)
    assert seeds_needed([0.5, 0.5], [0.5, 0.5]) is None  # no gap: no number of seeds decides it
    assert seeds_needed([0.6], [0.5, 0.4]) is None


def test_a_gap_inside_the_query_noise_is_not_decided_by_any_number_of_seeds():
    a, b = [0.521, 0.519, 0.520], [0.511, 0.509, 0.510]  # 0.01 apart, tight seeds
    assert not query_limited(a, b, query_var=0.0, n_queries=700)  # seeds alone: enough of them decide it
    assert query_limited(a, b, query_var=0.3, n_queries=700)  # sd of the query term 0.021 > the gap
    assert seeds_needed(a, b, query_var=0.3, n_queries=700) is None
