"""A sweep's verdicts: which strategy trains the better model, per task and view of the test split.

From the trials (plain :class:`~counterarg.analysis.trials.TrialRecord`) to the rows of
``significance.csv`` and the bold cells of ``summary.md``:

* :func:`trial_hits`: per (task, view), strategy -> the ``[R, n]`` acc@1 hits of its *finished*
  trials (:attr:`TrialRecord.finished`: planned epochs, patience or ASHA) at their best epochs (ranks
  kept in ``best_ranks.npz``). A strategy with an unfinished trial (stopped by Ctrl-C, errored) is
  *partial*: it is left out of every comparison, and no verdict is made while any strategy is
  partial.
* :func:`compare`: every pair of strategies in one (task, view), the seed-aware test
  (:func:`counterarg.analysis.significance.seed_test`, the verdict, ``p_value``), Holm-adjusted over the
  pairs of that (task, view) (``p_holm``), the seeds per strategy that would decide the gap
  (``seeds_needed``), and the query-level test of the seed-averaged hits as a second column
  (``p_value_queries``: "given these trained models").
* :func:`baseline_comparisons`: every strategy against the zero-shot encoder (deterministic: no seed
  term), Holm-adjusted over the strategies.
* :func:`verdicts`: the best strategy per (task, view) by mean, a winner only where it beats every
  other strategy at Holm-adjusted ``p < 0.05``; else "no significant winner" and how many seeds each
  would need to separate it from the runner-up.
No Ray here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from ..retrieval.tasks import task_names
from .significance import ALPHA, MAX_SEEDS, PairedTest, holm, interaction_var, query_limited, seed_test, seeds_needed
from .trials import ZERO_SHOT, TrialRecord


@dataclass(frozen=True)
class Comparison:
    """``strategy_a`` minus ``strategy_b`` on ``task`` in ``view``; ``a`` has the higher mean."""

    task: str
    view: str
    strategy_a: str
    strategy_b: str
    n_seeds_a: int
    n_seeds_b: int  # 0 for the deterministic zero-shot baseline
    diff: float  # gap in mean acc@1
    ci_low: float  # seed-aware 95% interval of the gap
    ci_high: float
    p_value: float | None  # seed-aware (training runs and queries); None with < 2 seeds on a side
    p_holm: float | None  # p_value, Holm-adjusted over the pairs of this task and view
    seeds_needed: int | None  # seeds per strategy for 80% power at 0.05 given the observed variance
    query_limited: bool  # no number of seeds would do: the test queries alone are too few for the gap
    p_value_queries: float  # sign-flip test over queries of the seed-averaged hits
    ci_low_queries: float
    ci_high_queries: float

    @property
    def significant(self) -> bool:
        return self.p_holm is not None and self.p_holm < ALPHA and self.diff > 0

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant}


SIGNIFICANCE_COLUMNS = (*(f.name for f in fields(Comparison)), "significant")


@dataclass(frozen=True)
class Verdict:
    """One (task, view): the best strategy by mean and whether it beats every other (Holm, seed-aware)."""

    task: str
    view: str
    best: str
    significant: bool
    runner_up: str | None
    p_runner_up: float | None  # Holm-adjusted, seed-aware
    n_seeds: tuple[int, int] = (0, 0)  # of best and runner-up
    seeds_needed: int | None = None  # per strategy, to separate best from runner-up
    partial: bool = False  # some strategy had unfinished trials: no verdict
    query_limited: bool = False  # no number of seeds separates best from runner-up on these queries


def trial_hits(records: Sequence[TrialRecord], rows: Sequence[dict[str, Any]]):
    """``(hits, notes, partial)``: per (task, view) group -> ``[R, n]`` hits of its finished trials;
    notes on trials left out; the set of groups with an unfinished trial (left out entirely).

    ``task`` ``mean`` is the per-query mean over the eight tasks; ``unseen`` keeps the queries
    whose texts never occur in training.
    """
    by_id = {r["trial_id"]: r for r in rows}
    per_group: dict[str, list[dict[tuple[str, str], np.ndarray]]] = {}
    notes, partial, unscored = [], set(), []
    for rec in records:
        row = by_id.get(rec.trial_id)
        if row is None:
            continue
        if not rec.finished:
            partial.add(row["group"])
            continue
        if row.get("best_epoch") is None:
            notes.append(f"{rec.trial_id}: no finished epoch; left out of the significance tests")
            continue
        if not rec.ranks:
            notes.append(f"{rec.trial_id}: no per-query ranks kept; left out of the significance tests")
            continue
        if int(rec.ranks.get("epoch", -1)) != int(row["best_epoch"]):
            notes.append(
                f"{rec.trial_id}: kept ranks are from epoch {int(rec.ranks.get('epoch', -1))}, its best "
                f"epoch is {row['best_epoch']}; left out of the significance tests"
            )
            continue
        trial = ranks_hits(rec.ranks)
        if trial is None:
            unscored.append(rec.trial_id)
            continue
        per_group.setdefault(row["group"], []).append(trial)
    if unscored and not per_group:  # a sweep that never scored test (a search: test_every=0)
        notes.append("the test split was not scored (test_every=0): no significance tests")
    else:
        notes += [f"{t}: no test ranks at its best epoch; left out of the significance tests" for t in unscored]
    for g in sorted(partial):
        notes.append(f"{g}: has unfinished trials; no verdict until they finish (--resume)")
    hits: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for g, trials in per_group.items():
        if g in partial:
            continue
        for key in trials[0]:
            if all(key in tr and tr[key].shape == trials[0][key].shape for tr in trials):
                hits.setdefault(key, {})[g] = np.stack([tr[key] for tr in trials])  # [R, n]
    for key, by_group in list(hits.items()):
        if len({v.shape[1] for v in by_group.values()}) > 1:
            notes.append(f"{key[0]}/{key[1]}: strategies were scored on different query sets; not compared")
            del hits[key]
    return hits, notes, partial


def ranks_hits(ranks: Mapping[str, np.ndarray], split: str = "test") -> dict[tuple[str, str], np.ndarray] | None:
    """(task, view) -> ``[n]`` acc@1 hits from kept ranks of ``split`` (``{split}/{task}``,
    ``{split}/unseen``); None when the ranks lack a task of that split."""
    if not all(f"{split}/{t}" in ranks for t in task_names()):
        return None
    hits = {t: (np.asarray(ranks[f"{split}/{t}"]) <= 1).astype(np.float64) for t in task_names()}  # [n] each
    hits["mean"] = np.mean([hits[t] for t in task_names()], axis=0)
    unseen = ranks.get(f"{split}/unseen")
    out = {}
    for t, h in hits.items():
        out[(t, "all")] = h
        if unseen is not None and np.asarray(unseen).any():
            out[(t, "unseen")] = h[np.asarray(unseen, dtype=bool)]
    return out


def p_text(p: float | None) -> str:
    """A p-value as tables and verdicts print it."""
    return "n/a" if p is None else ("p < 0.0001" if p < 1e-4 else f"p = {p:.4f}")


def need_text(c, split: str = "test") -> str:
    """How many seeds would decide an unsettled comparison (a :class:`Comparison` or :class:`Verdict`)."""
    if c.query_limited:
        return f"no number of seeds decides it on these {split} queries"
    if c.seeds_needed is None:
        return f"more than {MAX_SEEDS} seeds each"
    return f"about {c.seeds_needed} seeds each would decide it"


def _order(hits: Mapping[str, np.ndarray]) -> list[str]:
    return sorted(hits, key=lambda g: (-float(hits[g].mean()), g))


def compare(hits: Mapping[str, np.ndarray], task: str, view: str, qtest: PairedTest) -> list[Comparison]:
    """Every pair of strategies (``[R, n]`` hits each), ``a`` the higher mean; Holm over the pairs.

    Where a pair is not significant after Holm, ``seeds_needed`` is the seeds per strategy that would
    make its gap significant at the family's Bonferroni level (``ALPHA / pairs``, what Holm asks of the
    smallest p-value) with 80% power, and ``query_limited`` says when no number of seeds would.
    """
    names = _order(hits)
    raw = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ha, hb = hits[a], hits[b]  # [R_a, n], [R_b, n]
            vq = interaction_var(ha, hb)
            run_a, run_b = ha.mean(axis=1), hb.mean(axis=1)  # [R_a], [R_b]
            st = seed_test(run_a, run_b, query_var=vq, n_queries=ha.shape[1])
            raw.append((a, b, st, run_a, run_b, vq))
    queries = qtest.many([(hits[r[0]].mean(axis=0), hits[r[1]].mean(axis=0)) for r in raw])
    adjusted = holm([r[2].p_value for r in raw])
    level = ALPHA / max(1, len(raw))
    out = []
    for (a, b, st, run_a, run_b, vq), q, ph in zip(raw, queries, adjusted):
        settled = ph is not None and ph < ALPHA
        n = hits[a].shape[1]
        need = None if settled else seeds_needed(run_a, run_b, query_var=vq, n_queries=n, alpha=level)
        limited = not settled and query_limited(run_a, run_b, query_var=vq, n_queries=n, alpha=level)
        out.append(
            Comparison(
                task,
                view,
                a,
                b,
                st.n_a,
                st.n_b,
                st.diff,
                st.ci_low,
                st.ci_high,
                st.p_value,
                ph,
                need,
                limited,
                q[3],
                q[1],
                q[2],
            )
        )
    return out


def baseline_comparisons(
    hits: Mapping[str, np.ndarray], baseline: np.ndarray, task: str, view: str, qtest: PairedTest, name: str = ZERO_SHOT
) -> list[Comparison]:
    """Every strategy against a deterministic baseline's ``[n]`` hits (sign of the gap as it falls);
    Holm over the strategies."""
    raw = []
    for g in _order(hits):
        h = hits[g]  # [R, n]
        vq = interaction_var(h, baseline[None, :])
        st = seed_test(h.mean(axis=1), None, baseline=float(baseline.mean()), query_var=vq, n_queries=h.shape[1])
        raw.append((g, st))
    queries = qtest.many([(hits[g].mean(axis=0), baseline) for g, _ in raw])
    adjusted = holm([st.p_value for _, st in raw])
    return [
        Comparison(
            task,
            view,
            g,
            name,
            st.n_a,
            0,
            st.diff,
            st.ci_low,
            st.ci_high,
            st.p_value,
            ph,
            None,
            False,
            q[3],
            q[1],
            q[2],
        )
        for (g, st), q, ph in zip(raw, queries, adjusted)
    ]


def verdicts(
    comparisons: Sequence[Comparison], means: Mapping[tuple[str, str], Mapping[str, float]], partial: bool = False
) -> dict[tuple[str, str], Verdict]:
    """Per (task, view): the best strategy by mean, significant where it beats every other strategy
    (Holm-adjusted seed-aware p < ALPHA); none is significant in a partial sweep."""
    out = {}
    for key, by_strategy in means.items():
        ranked = sorted(by_strategy, key=lambda g: (-by_strategy[g], g))
        best, others = ranked[0], ranked[1:]
        mine = {
            c.strategy_b: c
            for c in comparisons
            if (c.task, c.view) == key and c.strategy_a == best and c.strategy_b != ZERO_SHOT
        }
        significant = not partial and bool(others) and all(g in mine and mine[g].significant for g in others)
        runner = others[0] if others else None
        c = mine.get(runner) if runner is not None else None
        out[key] = Verdict(
            key[0],
            key[1],
            best,
            significant,
            runner,
            c.p_holm if c else None,
            (c.n_seeds_a, c.n_seeds_b) if c else (0, 0),
            c.seeds_needed if c else None,
            partial,
            bool(c and c.query_limited),
        )
    return out


def family_verdicts(
    comparisons: Sequence[Comparison],
    means: Mapping[tuple[str, str], Mapping[str, float]],
    families: Mapping[str, str],
    partial: bool = False,
) -> dict[str, dict[tuple[str, str], Verdict]]:
    """Verdicts within each family of strategies (e.g. the schedules of one method): per family, its
    strategies' pairs only, Holm re-adjusted over those pairs. ``families``: strategy -> family."""
    out = {}
    for fam in sorted(set(families.values())):
        members = {g for g, f in families.items() if f == fam}
        if len(members) < 2:
            continue
        mine = [c for c in comparisons if c.strategy_a in members and c.strategy_b in members]
        adjusted = []
        for key in {(c.task, c.view) for c in mine}:
            group = [c for c in mine if (c.task, c.view) == key]
            adjusted += [replace(c, p_holm=p) for c, p in zip(group, holm([c.p_value for c in group]))]
        fam_means = {key: {g: v for g, v in by.items() if g in members} for key, by in means.items()}
        out[fam] = verdicts(adjusted, {k: v for k, v in fam_means.items() if len(v) > 1}, partial)
    return out


def sweep_verdicts(
    records: Sequence[TrialRecord],
    rows: Sequence[dict[str, Any]],
    *,
    baseline_ranks: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    tick: Callable[[str], None] | None = None,
):
    """``(comparisons, verdicts, by_method, notes)`` of a sweep: strategy pairs and, with the zero-shot
    encoder's test ranks, every strategy against it; where the sweep holds several methods,
    ``by_method`` holds each method's own verdicts (:func:`family_verdicts`: which schedule wins
    under that method), else it is empty. ``tick``, when given, is called with ``task/view`` after
    each (task, view) is tested (a progress bar: a sweep of 8 strategies tests 36 pairs in each)."""
    hits, notes, partial = trial_hits(records, rows)
    base = ranks_hits(baseline_ranks) if baseline_ranks else None
    qtests: dict[int, PairedTest] = {}
    comparisons, means = [], {}
    for key, by_group in hits.items():
        means[key] = {g: float(v.mean()) for g, v in by_group.items()}
        n = next(iter(by_group.values())).shape[1]
        if n not in qtests:  # drawn once per query count (10,000 resamples of n queries: seconds)
            qtests[n] = PairedTest(n, seed=seed)
        qtest = qtests[n]
        if len(by_group) > 1:
            comparisons += compare(by_group, key[0], key[1], qtest)
        if base is not None and key in base and base[key].shape == (n,):
            comparisons += baseline_comparisons(by_group, base[key], key[0], key[1], qtest)
        if tick is not None:
            tick(f"{key[0]}/{key[1]}")
    group_of = {r["trial_id"]: r["group"] for r in rows}
    families = {
        group_of[rec.trial_id]: rec.config["method"]
        for rec in records  # the method each carries
        if rec.trial_id in group_of and rec.config.get("method")
    }
    by_method = (
        family_verdicts(comparisons, means, families, partial=bool(partial)) if len(set(families.values())) > 1 else {}
    )
    return comparisons, verdicts(comparisons, means, partial=bool(partial)), by_method, notes


def significance(
    records: Sequence[TrialRecord],
    rows: Sequence[dict[str, Any]],
    *,
    baseline_ranks: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
):
    """``(comparisons, verdicts, notes)``: :func:`sweep_verdicts` without the per-method verdicts."""
    comparisons, out, _, notes = sweep_verdicts(records, rows, baseline_ranks=baseline_ranks, seed=seed)
    return comparisons, out, notes


def significance_rows(comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
    return [c.row() for c in comparisons]
