"""Is one training strategy better than another? Tests whose unit is the training run.

Why: a strategy is a training *procedure*; its unit of replication is the training run (a seed),
not the test query. Averaging each strategy's hits over its seeds and testing over queries answers
"do these particular trained models differ on these queries?", and with the 0.01-0.06 spread that a
seed moves acc@1 here it claims wins the seeds do not support (Dror et al., "The Hitchhiker's Guide
to Testing Statistical Significance in NLP", ACL 2018; Bouthillier et al., "Accounting for Variance
in Machine Learning Benchmarks", MLSys 2021: the variance of training runs and of the test sample
both belong in the null).

The verdict test, :func:`seed_test`, is a **two-level Welch test**. A strategy ``s`` gives a hit
matrix ``h[r, i]`` (run ``r`` of ``R_s`` seeds, query ``i`` of the ``n`` shared test queries), read
as seed effect + query effect + noise. The gap ``D = mean(h_a) - mean(h_b)`` has variance

    V = s2_a / R_a + s2_b / R_b + v_q / n

* ``s2_s``: the sample variance of strategy ``s``'s per-run values (acc@1 of each run; it holds the
  seed effect and the run's own per-query noise);
* ``v_q``: the variance over queries of the strategy-by-query interaction (the queries one strategy
  gets right and the other wrong *in expectation*): ``var_i(d_i)`` of the seed-averaged per-query
  differences, less the noise part it also holds (``sigma2_e,a / R_a + sigma2_e,b / R_b``, each
  ``sigma2_e`` the residual variance of a two-way seed x query decomposition), floored at 0. This is
  the query-sampling term: another sample of queries could move the gap by that much.

``t = D / sqrt(V)`` against Student's t with the Welch-Satterthwaite degrees of freedom of the three
terms (``R_a - 1``, ``R_b - 1``, ``n - 1``); the 95% interval is ``D +- t_0.975 sqrt(V)``. With one
run on a side its seed variance is unknown and the test returns no p-value ("needs >= 2 seeds").
Where strategies share query difficulties (``v_q`` = 0) it is Welch's t over per-run values.
Not a bootstrap of three seeds: three values cannot show their own spread (a naive resampling of
them gives p < 0.001 for gaps that Welch puts at p = 0.1). Its calibration is simulated in
``tests/analysis/test_significance.py``: at most 6% rejections at 0.05 over 500 null sweeps, at least
80% power for a gap of 3 between-seed standard deviations with 5 seeds.

A deterministic baseline (the zero-shot encoder: no training, one "run") enters with ``R = inf``:
no seed term, only its queries.

Every pair of strategies in one (task, view) is one family: their p-values are Holm-adjusted
(:func:`holm`; Holm 1979), and a verdict names a winner only where it beats every other strategy at
adjusted p < :data:`ALPHA`. :func:`seeds_needed` says how many seeds per strategy would make the
observed gap significant at 0.05 with 80% power, from the observed between-seed variance (noncentral
t). The query-level sign-flip test of the seed-averaged hits (:class:`PairedTest`) stays as a second,
labelled column, ``p_value_queries``: "given these trained models". Pure numpy/scipy; no Ray.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.8
RESAMPLES = 10_000
MAX_SEEDS = 200  # seeds_needed searches up to this many seeds per strategy
_CHUNK = 1000  # resample rows per matrix product (bounds memory)

RunValues = Sequence[float] | np.ndarray  # one value per training run (a list or a ``[R]`` array)


# ------------------------------------------------------------------------------------------- run level
@dataclass(frozen=True)
class SeedTest:
    """One seed-aware comparison of ``a`` minus ``b`` (run-level values)."""

    diff: float  # mean(a) - mean(b)
    ci_low: float  # 95% interval of diff (nan where it cannot be computed)
    ci_high: float
    p_value: float | None  # two-sided; None when a trained side has fewer than 2 runs
    n_a: int
    n_b: int
    df: float | None = None  # Welch-Satterthwaite degrees of freedom


def _terms(
    a: np.ndarray, b: np.ndarray | None, query_var: float, n_queries: int | None
) -> list[tuple[float, float]] | None:
    """The variance terms ``[(v, df)]`` of the gap, or None where a seed variance is unknown."""
    terms: list[tuple[float, float]] = []
    for x in (a, b):
        if x is None:  # a deterministic baseline: no training noise
            continue
        if x.size < 2:
            return None
        terms.append((float(x.var(ddof=1)) / x.size, x.size - 1))
    if query_var > 0 and n_queries:
        terms.append((query_var / n_queries, n_queries - 1))
    return terms


def _welch(terms: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """``(V, df)``: the summed variance and its Welch-Satterthwaite degrees of freedom."""
    v = sum(t for t, _ in terms)
    denom = sum(t * t / d for t, d in terms if d > 0 and t > 0)
    return v, (v * v / denom if denom > 0 else math.inf)


def seed_test(
    a: RunValues,
    b: RunValues | None,
    *,
    query_var: float = 0.0,
    n_queries: int | None = None,
    baseline: float | None = None,
) -> SeedTest:
    """Two-level Welch test of mean(a) - mean(b) over per-run values (one value per training run).

    ``b=None`` compares with a deterministic ``baseline`` value (no seed term). ``query_var`` and
    ``n_queries`` add the query-sampling term (:func:`interaction_var`).
    """
    runs_a = np.asarray(a, dtype=np.float64)  # [R_a]
    if runs_a.size == 0:
        raise ValueError("seed_test needs at least one run of strategy a")
    runs_b: np.ndarray | None = None  # [R_b]; None for a deterministic baseline
    if b is None:
        if baseline is None:
            raise ValueError("seed_test needs runs of b or a baseline value")
        mb, n_b = float(baseline), 0
    else:
        runs_b = np.asarray(b, dtype=np.float64)
        if runs_b.size == 0:
            raise ValueError("seed_test needs at least one run of strategy b")
        mb, n_b = float(runs_b.mean()), int(runs_b.size)
    diff = float(runs_a.mean()) - mb
    terms = _terms(runs_a, runs_b, query_var, n_queries)
    if terms is None:
        return SeedTest(diff, math.nan, math.nan, None, int(runs_a.size), n_b)
    v, df = _welch(terms)
    if v <= 0:  # no variance anywhere: identical runs
        p = 1.0 if diff == 0 else 0.0
        return SeedTest(diff, diff, diff, p, int(runs_a.size), n_b, df)
    se = math.sqrt(v)
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * se
    return SeedTest(diff, diff - half, diff + half, p, int(runs_a.size), n_b, df)


def residual_var(hits: np.ndarray) -> float:
    """The noise variance of a ``[R, n]`` hit matrix after removing run and query means (two-way
    decomposition, ``(R-1)(n-1)`` degrees of freedom); 0 with one run."""
    h = np.asarray(hits, dtype=np.float64)
    r, n = h.shape
    if r < 2 or n < 2:
        return 0.0
    e = h - h.mean(axis=1, keepdims=True) - h.mean(axis=0, keepdims=True) + h.mean()  # [R, n]
    return float((e * e).sum() / ((r - 1) * (n - 1)))


def interaction_var(hits_a: np.ndarray, hits_b: np.ndarray) -> float:
    """``v_q``: the variance over queries of the strategy-by-query effect of two hit matrices
    (``[R_a, n]``, ``[R_b, n]``; a baseline is a ``[1, n]`` matrix without noise), floored at 0."""
    hits_a, hits_b = np.atleast_2d(hits_a), np.atleast_2d(hits_b)
    d = hits_a.mean(axis=0) - hits_b.mean(axis=0)  # [n]
    if d.size < 2:
        return 0.0
    noise = residual_var(hits_a) / hits_a.shape[0] + residual_var(hits_b) / hits_b.shape[0]
    return max(0.0, float(d.var(ddof=1)) - noise)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values in the input order; None (no test) stays None and does not
    count towards the family size."""
    tested = [(i, p) for i, p in enumerate(p_values) if p is not None]
    m = len(tested)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (i, p) in enumerate(sorted(tested, key=lambda ip: ip[1])):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def power(
    gap: float,
    seed_var: float,
    seeds: int,
    *,
    query_term: float = 0.0,
    n_queries: int | None = None,
    alpha: float = ALPHA,
) -> float:
    """Power of the two-sided test to see ``gap`` with ``seeds`` runs per strategy, each strategy's
    per-run variance ``seed_var`` (the mean of the two) and a query term ``query_term`` (``v_q / n``)."""
    terms = [(seed_var / seeds, seeds - 1), (seed_var / seeds, seeds - 1)]
    if query_term > 0 and n_queries:
        terms.append((query_term, n_queries - 1))
    v, df = _welch(terms)
    if v <= 0:
        return 1.0 if gap else alpha
    crit = stats.t.ppf(1 - alpha / 2, df)
    ncp = abs(gap) / math.sqrt(v)
    out = float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))
    if not math.isfinite(out):  # scipy's noncentral t gives nan far in its tails: the normal limit
        out = float(stats.norm.sf(crit - ncp) + stats.norm.cdf(-crit - ncp))
    return out


def query_limited(
    a: RunValues,
    b: RunValues,
    *,
    query_var: float,
    n_queries: int | None,
    alpha: float = ALPHA,
    target: float = POWER,
) -> bool:
    """True when no number of seeds could make the observed gap significant with ``target`` power:
    with the seed terms gone the query-sampling term alone is too wide (the gap is within what
    another sample of test queries could move)."""
    runs_a, runs_b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)  # [R_a], [R_b]
    gap = float(runs_a.mean() - runs_b.mean())
    if gap == 0:
        return True
    if not (query_var > 0 and n_queries):
        return False
    v = query_var / n_queries
    crit = stats.norm.ppf(1 - alpha / 2)  # infinitely many seeds: the query term's own df is large
    return float(stats.norm.sf(crit - abs(gap) / math.sqrt(v))) < target


def seeds_needed(
    a: RunValues,
    b: RunValues,
    *,
    query_var: float = 0.0,
    n_queries: int | None = None,
    alpha: float = ALPHA,
    target: float = POWER,
    max_seeds: int = MAX_SEEDS,
) -> int | None:
    """Seeds per strategy at which the observed gap would be significant at ``alpha`` with
    ``target`` power, from the observed between-seed variances; None when no number up to
    ``max_seeds`` would do (a zero gap, or the queries alone too noisy) or a side has < 2 runs."""
    runs_a, runs_b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)  # [R_a], [R_b]
    if runs_a.size < 2 or runs_b.size < 2:
        return None
    gap = float(runs_a.mean() - runs_b.mean())
    seed_var = (float(runs_a.var(ddof=1)) + float(runs_b.var(ddof=1))) / 2
    q = query_var / n_queries if (query_var > 0 and n_queries) else 0.0
    if gap == 0:
        return None
    if power(gap, seed_var, max_seeds, query_term=q, n_queries=n_queries, alpha=alpha) < target:
        return None
    lo, hi = 2, max_seeds  # power grows with seeds: bisect for the first that reaches the target
    while lo < hi:
        mid = (lo + hi) // 2
        if power(gap, seed_var, mid, query_term=q, n_queries=n_queries, alpha=alpha) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


# ------------------------------------------------------------------------------------------- query level
class PairedTest:
    """Sign-flip permutation p-values and paired-bootstrap intervals over ``n`` queries: the
    "given these trained models" test of seed-averaged per-query hits.

    The resamples are drawn once (``R x n`` signs as int8 and bootstrap counts as uint16) from a
    seeded generator and reused for every pair, so a sweep's comparisons are consistent;
    ``p = (1 + #{|mean(s * d)| >= |mean(d)|}) / (1 + R)``; identical inputs give ``p = 1``.
    """

    def __init__(self, n: int, resamples: int = RESAMPLES, seed: int = 0):
        if n < 1:
            raise ValueError(f"a paired test needs at least one query, got n={n}")
        if resamples < 1:
            raise ValueError(f"resamples must be >= 1, got {resamples}")
        self.n, self.resamples = n, resamples
        rng = np.random.default_rng(seed)
        self.signs = (rng.integers(0, 2, size=(resamples, n), dtype=np.int8) * 2 - 1).astype(np.int8)  # [R, n]
        idx = rng.integers(0, n, size=(resamples, n))  # [R, n]
        offset = (np.arange(resamples) * n)[:, None]  # [R, 1]
        self.counts = np.bincount((idx + offset).ravel(), minlength=resamples * n).reshape(resamples, n)
        self.counts = self.counts.astype(np.uint16)  # [R, n]; how often each query is drawn

    def _means(self, weights: np.ndarray, d: np.ndarray) -> np.ndarray:
        """``weights @ d / n`` in chunks: ``[R, P]`` for ``d`` ``[n, P]`` (every pair's differences at
        once: each chunk of resamples is converted to floats once per call, not once per pair)."""
        out = np.empty((self.resamples, d.shape[1]))
        for s in range(0, self.resamples, _CHUNK):
            out[s : s + _CHUNK] = weights[s : s + _CHUNK].astype(np.float64) @ d / self.n
        return out

    def __call__(self, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
        """``(diff, ci_low, ci_high, p_value)`` for per-query scores ``a`` and ``b`` (``[n]`` each)."""
        return self.many([(a, b)])[0]

    def many(self, pairs) -> list[tuple[float, float, float, float]]:
        """:meth:`__call__` for each ``(a, b)`` of ``pairs``, over the same resamples, in one pass."""
        if not pairs:
            return []
        cols = []
        for a, b in pairs:
            a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            if a.shape != (self.n,) or b.shape != (self.n,):
                raise ValueError(f"paired test over {self.n} queries got shapes {a.shape} and {b.shape}")
            cols.append(a - b)
        d = np.stack(cols, axis=1)  # [n, P]
        flips = self._means(self.signs, d)  # [R, P]
        boot = self._means(self.counts, d)  # [R, P]
        out = []
        for j in range(d.shape[1]):
            obs = float(d[:, j].mean())
            tol = 1e-12 * max(1.0, abs(obs))
            p = (1 + int((np.abs(flips[:, j]) >= abs(obs) - tol).sum())) / (1 + self.resamples)
            lo, hi = np.percentile(boot[:, j], [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
            out.append((obs, float(lo), float(hi), float(p)))
        return out


__all__ = [
    "SeedTest",
    "seed_test",
    "residual_var",
    "interaction_var",
    "holm",
    "power",
    "seeds_needed",
    "query_limited",
    "PairedTest",
    "ALPHA",
    "POWER",
    "RESAMPLES",
]
