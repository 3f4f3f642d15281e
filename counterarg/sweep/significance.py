"""Paired significance tests between strategies, query by query.

Why: a sweep's table shows means over seeds, and a gap of a point between two strategies can be
noise. Every strategy is scored on the same test queries, so the right test is *paired over
queries*: for each query, its acc@1 hit (0/1) averaged over the strategy's seeds; for strategies
``a`` and ``b`` the per-query differences ``d = hit_a - hit_b``, and

* ``diff`` = mean of ``d`` (the gap in acc@1),
* ``ci_low``/``ci_high`` = the 95% paired-bootstrap interval of that mean (queries resampled with
  replacement),
* ``p_value`` = the two-sided sign-flip permutation test of "no difference": under the null each
  ``d_i`` is as likely to be ``-d_i``; ``p = (1 + #{|mean(s * d)| >= |mean(d)|}) / (1 + R)``.

Both use ``R`` = 10,000 resamples drawn once per query count from a seeded generator, so results
are reproducible and every comparison of a sweep uses the same resamples. Identical strategies give
``p = 1``. The per-query hits come from the ranks each trial keeps from its best epoch
(:func:`strategy_hits`, ``TrialRecord.ranks``). Pure numpy; nothing here knows about Ray or the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..tasks import task_names
from .trials import TrialRecord

RESAMPLES = 10_000
ALPHA = 0.05
SIGNIFICANCE_COLUMNS = ("task", "view", "strategy_a", "strategy_b", "diff", "ci_low", "ci_high", "p_value")
_CHUNK = 1000  # resample rows per matrix product (bounds memory)


@dataclass(frozen=True)
class Comparison:
    """One paired test: ``strategy_a`` minus ``strategy_b`` on ``task`` in ``view``."""

    task: str
    view: str
    strategy_a: str
    strategy_b: str
    diff: float
    ci_low: float
    ci_high: float
    p_value: float

    def row(self) -> dict:
        return asdict(self)


class PairedTest:
    """Sign-flip permutation p-values and paired-bootstrap intervals over ``n`` queries.

    The resamples are drawn once (``R x n`` signs as int8 and bootstrap counts as uint16) and
    reused for every pair of strategies, so a sweep's comparisons are consistent with each other.
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
        """``weights @ d / n`` in chunks: ``[R]``."""
        out = np.empty(self.resamples)
        for s in range(0, self.resamples, _CHUNK):
            out[s:s + _CHUNK] = weights[s:s + _CHUNK].astype(np.float64) @ d / self.n
        return out

    def __call__(self, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
        """``(diff, ci_low, ci_high, p_value)`` for per-query scores ``a`` and ``b`` (``[n]`` each)."""
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != (self.n,) or b.shape != (self.n,):
            raise ValueError(f"paired test over {self.n} queries got shapes {a.shape} and {b.shape}")
        d = a - b  # [n]
        obs = float(d.mean())
        flips = self._means(self.signs, d)  # [R]
        tol = 1e-12 * max(1.0, abs(obs))
        p = (1 + int((np.abs(flips) >= abs(obs) - tol).sum())) / (1 + self.resamples)
        boot = self._means(self.counts, d)  # [R]
        lo, hi = np.percentile(boot, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
        return obs, float(lo), float(hi), float(p)


def compare(scores: Mapping[str, np.ndarray], task: str, view: str, test: PairedTest) -> list[Comparison]:
    """Every ordered-by-mean pair of strategies: ``a`` is the one with the higher mean score.

    ``scores``: strategy -> per-query score ``[n]`` (acc@1 hits averaged over its seeds).
    """
    names = sorted(scores, key=lambda g: (-float(np.mean(scores[g])), g))
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            diff, lo, hi, p = test(scores[a], scores[b])
            out.append(Comparison(task, view, a, b, diff, lo, hi, p))
    return out


@dataclass(frozen=True)
class Verdict:
    """The result of one (task, view): the best strategy, whether it beats all others at
    p < ALPHA, and its p-value against the runner-up (None with one strategy)."""

    task: str
    view: str
    best: str
    significant: bool
    runner_up: str | None
    p_runner_up: float | None


def verdicts(comparisons: Sequence[Comparison], means: Mapping[tuple[str, str], Mapping[str, float]]) -> dict[tuple[str, str], Verdict]:
    """Per (task, view): the best strategy by mean, significant when it beats every other at p < ALPHA.

    ``means``: (task, view) -> strategy -> mean score (the order :func:`compare` used).
    """
    out = {}
    for key, by_strategy in means.items():
        ranked = sorted(by_strategy, key=lambda g: (-by_strategy[g], g))
        best = ranked[0]
        mine = {c.strategy_b: c for c in comparisons
                if (c.task, c.view) == key and c.strategy_a == best}
        others = ranked[1:]
        significant = bool(others) and all(
            g in mine and mine[g].diff > 0 and mine[g].p_value < ALPHA for g in others)
        runner = others[0] if others else None
        p = mine[runner].p_value if runner in mine else None
        out[key] = Verdict(key[0], key[1], best, significant, runner, p)
    return out


__all__ = ["PairedTest", "Comparison", "Verdict", "compare", "verdicts", "RESAMPLES", "ALPHA",
           "SIGNIFICANCE_COLUMNS"]


# ---------------------------------------------------------------------------------------- a sweep's trials
def strategy_hits(records: Sequence[TrialRecord], rows: Sequence[dict[str, Any]]):
    """Per (task, view): group -> per-query acc@1 hit rate over the group's seeds ``[n]``.

    Uses each trial's ranks from its best epoch; a trial whose kept ranks come from another epoch
    than the summary's best epoch (or that has none) is left out, with a note saying so. ``task``
    ``mean`` is the per-query mean over the eight tasks. Returns ``(scores, notes)``.
    """
    by_id = {r["trial_id"]: r for r in rows}
    per_group: dict[str, list[dict[str, np.ndarray]]] = {}
    notes = []
    for rec in records:
        row = by_id.get(rec.trial_id)
        if row is None or row.get("best_epoch") is None:
            continue
        if not rec.ranks:
            notes.append(f"{rec.trial_id}: no per-query ranks kept; left out of the significance tests")
            continue
        if int(rec.ranks.get("epoch", -1)) != int(row["best_epoch"]):
            notes.append(f"{rec.trial_id}: kept ranks are from epoch {int(rec.ranks.get('epoch', -1))}, its best "
                         f"epoch is {row['best_epoch']}; left out of the significance tests")
            continue
        if not all(f"test/{t}" in rec.ranks for t in task_names()):
            notes.append(f"{rec.trial_id}: no test ranks at its best epoch; left out of the significance tests")
            continue
        hits = {t: (rec.ranks[f"test/{t}"] <= 1).astype(np.float64) for t in task_names()}  # [n] each
        hits["mean"] = np.mean([hits[t] for t in task_names()], axis=0)
        unseen = rec.ranks.get("test/unseen")
        trial = {}
        for t, h in hits.items():
            trial[(t, "all")] = h
            if unseen is not None and unseen.any():
                trial[(t, "unseen")] = h[unseen]
        per_group.setdefault(row["group"], []).append(trial)
    scores: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for g, trials in per_group.items():
        for key in trials[0]:
            if all(key in tr and tr[key].shape == trials[0][key].shape for tr in trials):
                scores.setdefault(key, {})[g] = np.mean([tr[key] for tr in trials], axis=0)
    for key, by_group in list(scores.items()):
        if len({v.shape for v in by_group.values()}) > 1:
            notes.append(f"{key[0]}/{key[1]}: strategies were scored on different query sets; not compared")
            del scores[key]
    return scores, notes


def significance(records: Sequence[TrialRecord], rows: Sequence[dict[str, Any]], *, seed: int = 0):
    """Paired tests between every two strategies per task and view; ``(comparisons, verdicts, notes)``."""
    scores, notes = strategy_hits(records, rows)
    tests: dict[int, PairedTest] = {}
    comparisons = []
    means = {}
    for key, by_group in scores.items():
        means[key] = {g: float(v.mean()) for g, v in by_group.items()}
        if len(by_group) < 2:
            continue
        n = next(iter(by_group.values())).shape[0]
        if n not in tests:
            tests[n] = PairedTest(n, seed=seed)
        comparisons += compare(by_group, key[0], key[1], tests[n])
    return comparisons, verdicts(comparisons, means), notes


def significance_rows(comparisons) -> list[dict[str, Any]]:
    return [c.row() for c in comparisons]
