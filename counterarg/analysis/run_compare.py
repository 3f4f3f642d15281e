"""``counterarg compare``: is my change better? Two groups of training runs, the seed-aware test per task.

Why: a change to training (a flag, a new default) is a training *procedure*, so whether it trains
better models is a question about training runs, not about the queries of one run (see
:mod:`counterarg.analysis.significance`). A user trains each side a few times (``counterarg train --out R
--set seed=N``) and compares the two groups here with the very test the sweep summary uses
(:func:`counterarg.analysis.verdicts.compare`: the two-level Welch ``seed_test`` over per-run acc@1 plus
the query-sampling term, and the query-level test as a second column), per task and view of one split.

* A RUN is a ``counterarg train`` run folder (its ``best/``), a checkpoint folder (``best/``,
  ``checkpoint/``, a sweep's ``checkpoint_N/``) or a sweep trial folder (its ``best/``, else its
  newest ``checkpoint_N/``): each holds ``best_ranks.npz``, the per-query ranks of the run's best
  epoch (:class:`counterarg.evaluation.selection.BestRanks`). Each RUN is one seed of its group.
* Refused, naming the folder (:class:`CompareError`; the CLI exits 2): a folder without ranks of
  the split, runs scored on other query sets (their query counts, unseen queries or query texts
  differ: ranks record a digest of the texts they rank), one run
  given twice or two runs of one seed in a group (the training run is the unit: a repeat adds no
  information but would shrink the interval), a run in both groups, a group of fewer than 2 runs
  (with one run its seed variance is unknown and the test gives no p-value).
* The tasks of a view (the eight and their ``mean``, or ``--tasks mean``: the mean alone) are one
  family: their p-values are Holm-adjusted (:func:`counterarg.analysis.significance.holm`), and an
  unsettled row's ``seeds_needed`` is sized at the family's Bonferroni level (``0.05 / rows``, what
  Holm asks of the smallest p-value), as the sweep summary sizes its pairs.
No Ray here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import LABEL, MACHINE, SEED, ConfigError, fields_with
from ..core.io import atomic_write_json
from ..core.paths import given_path
from ..evaluation.selection import BEST_DIR, BestRanks, read_best_ranks
from ..model.checkpoint import checkpoint_index
from ..retrieval.tasks import task_names
from ..sampling.schedules import format_value
from .significance import ALPHA, PairedTest, holm, interaction_var, query_limited, seeds_needed
from .trials import VIEWS, pm_text, varying_fields
from .verdicts import compare, need_text, p_text, ranks_hits

#: the splits whose ranks a run keeps (training is never scored per query)
SPLITS = ("validation", "test")
#: --tasks: every task and their mean (Holm over them), or the mean alone (one test per view)
TASK_SETS = ("all", "mean")
#: how a verdict names the mean acc@1 of each view
MEAN_NAMES = {"all": "mean acc@1 over all queries", "unseen": "unseen mean acc@1"}
CHECKPOINT_DIR = "checkpoint"  # a ``counterarg train`` run's resume point (beside best/)
MIN_RUNS = 2


class CompareError(ConfigError):
    """Runs that cannot be compared as given; the message names the folder (the CLI exits 2)."""


@dataclass(frozen=True)
class RunRanks:
    """One training run: the folder as given, where its ranks were read, its seed and config."""

    folder: str
    source: Path  # the folder holding best_ranks.npz
    seed: Any  # None when no config.json says it
    config: dict[str, Any]
    ranks: dict[str, np.ndarray]


@dataclass(frozen=True)
class TaskRow:
    """``label_b`` minus ``label_a`` on one task and view (acc@1), the seed-aware test and Holm."""

    task: str
    view: str
    label_a: str
    label_b: str
    n_runs_a: int
    n_runs_b: int
    n_queries: int
    mean_a: float  # mean over runs of each run's acc@1
    std_a: float  # sample std over runs
    mean_b: float
    std_b: float
    diff: float  # mean_b - mean_a
    ci_low: float  # seed-aware 95% interval of diff
    ci_high: float
    p_value: float | None  # seed-aware (training runs and queries)
    p_holm: float | None  # Holm-adjusted over the rows of this view
    seeds_needed: int | None  # runs per group for 80% power at the family's level; None once settled
    query_limited: bool  # no number of runs would do: the queries alone are too few for the gap
    p_value_queries: float  # "given these trained models": sign-flip over queries of the run-averaged hits
    ci_low_queries: float
    ci_high_queries: float

    @property
    def significant(self) -> bool:
        return self.p_holm is not None and self.p_holm < ALPHA and self.diff != 0

    @property
    def better(self) -> str | None:
        """The label of the significantly better group, else None."""
        return (self.label_b if self.diff > 0 else self.label_a) if self.significant else None

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant, "better": self.better}


ROW_COLUMNS = (*(f.name for f in fields(TaskRow)), "significant", "better")


# ------------------------------------------------------------------------------------------- reading runs
def ranks_folder(folder: str | Path) -> Path:
    """The folder holding a RUN's ``best_ranks.npz``: the RUN itself (a checkpoint), its ``best/``,
    its ``checkpoint/`` or its newest ``checkpoint_N/`` (a sweep trial)."""
    path = Path(folder)
    if not path.exists():
        raise CompareError(f"{folder}: no such folder")
    if not path.is_dir():
        raise CompareError(f"{folder}: a file, not a run folder")
    indexed = [(i, p) for p in path.glob("checkpoint_*") if (i := checkpoint_index(p.name)) is not None]
    numbered = [p for _, p in sorted(indexed, key=lambda ip: ip[0], reverse=True)]
    for candidate in (path, path / BEST_DIR, path / CHECKPOINT_DIR, *numbered):
        if (candidate / BestRanks.FILE).is_file():
            return candidate
    raise CompareError(
        f"{folder}: no {BestRanks.FILE} in it, its {BEST_DIR}/, {CHECKPOINT_DIR}/ or checkpoint_N/: "
        "give a `counterarg train --out` folder, a checkpoint folder or a sweep trial folder"
    )


def _run_config(source: Path, folder: Path) -> dict[str, Any]:
    """The run's config (``config.json`` beside its ranks or in the run folder, a trial's
    ``params.json``); {} when none can be read."""
    for f in (source / "config.json", folder / "config.json", folder / "params.json"):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return {}


def _missing_split(folder: str, split: str) -> CompareError:
    if split == "test":
        hint = (
            "it was trained with test_every=0, which never scores the test split; `counterarg evaluate` prints "
            "metrics but keeps no per-query ranks, so retrain it with --set test_every=1 (or compare on "
            "--split validation)"
        )
    else:
        hint = "has its corpus a validation split?"
    return CompareError(f"{folder}: its {BestRanks.FILE} holds no per-query {split} ranks: {hint}")


def load_run(folder: str | Path, split: str = "test") -> RunRanks:
    """One RUN's ranks of ``split``, seed and config (:class:`CompareError` naming it if unusable)."""
    if split not in SPLITS:
        raise CompareError(f"--split {split}: runs keep per-query ranks of {' and '.join(SPLITS)} only")
    source = ranks_folder(folder)
    ranks = read_best_ranks(source)  # a damaged file: a warning naming it, then None
    if ranks is None:
        raise CompareError(f"{folder}: {source / BestRanks.FILE} cannot be read (see the warning above)")
    if ranks_hits(ranks, split) is None:
        raise _missing_split(str(folder), split)
    config = _run_config(source, Path(folder))
    return RunRanks(str(folder), source, config.get("seed"), config, ranks)


def check_group(runs: Sequence[RunRanks], flag: str) -> None:
    """At least :data:`MIN_RUNS` runs, each a different run of its own seed."""
    if len(runs) < MIN_RUNS:
        given = ", ".join(r.folder for r in runs)
        raise CompareError(
            f"{flag}: {len(runs)} run ({given}); the seed-aware test needs at least {MIN_RUNS} runs "
            "per group, each trained with its own seed (counterarg train --out R --set seed=N)"
        )
    by_source: dict[Path, RunRanks] = {}
    by_seed: dict[Any, RunRanks] = {}
    for r in runs:
        same = by_source.setdefault(r.source.resolve(), r)
        if same is not r:
            raise CompareError(
                f"{flag}: {same.folder} and {r.folder} are the same run (both read "
                f"{r.source / BestRanks.FILE}); give each run once"
            )
        if r.seed is None:
            continue
        twin = by_seed.setdefault(r.seed, r)
        if twin is not r:
            raise CompareError(
                f"{flag}: {twin.folder} and {r.folder} were both trained with seed={r.seed}; the "
                "training run is the unit of the test, so each run of a group needs its own seed"
            )


def check_queries(a: Sequence[RunRanks], b: Sequence[RunRanks], split: str) -> None:
    """Every run scored on the same queries: the same count, unseen queries and (where the runs record
    it, ``{split}/queries``) the same query texts in the same order; no run in both groups."""
    first = a[0]
    n0 = len(first.ranks[f"{split}/{task_names()[0]}"])
    unseen0 = first.ranks.get(f"{split}/unseen")
    for r in (*a, *b):
        counts = {len(r.ranks[f"{split}/{t}"]) for t in task_names()}
        if counts != {n0}:
            raise CompareError(
                f"{r.folder}: its {split} split has {sorted(counts)[0]} queries, {first.folder}'s has "
                f"{n0}: runs of different corpora or query sets cannot be compared"
            )
        unseen = r.ranks.get(f"{split}/unseen")
        same = (unseen is None and unseen0 is None) or (
            unseen is not None and unseen0 is not None and np.array_equal(unseen, unseen0)
        )
        if not same:
            raise CompareError(
                f"{r.folder}: its unseen {split} queries differ from {first.folder}'s (another "
                "training split?): runs of different corpora cannot be compared"
            )
    known = [r for r in (*a, *b) if f"{split}/queries" in r.ranks]
    for r in known[1:]:
        if not np.array_equal(r.ranks[f"{split}/queries"], known[0].ranks[f"{split}/queries"]):
            raise CompareError(
                f"{r.folder}: its {n0} {split} queries are not {known[0].folder}'s (other texts or "
                "another order: another corpus): runs of different corpora cannot be compared"
            )
    unknown = [r.folder for r in (*a, *b) if f"{split}/queries" not in r.ranks]
    if known and unknown:
        print(
            f"[counterarg] note: {', '.join(unknown)} record(s) no query texts (ranks kept by an older version); "
            "their queries are checked by count and unseen mask only",
            flush=True,
        )
    both = {r.source.resolve() for r in a} & {r.source.resolve() for r in b}
    if both:
        raise CompareError(f"{sorted(both)[0]}: the same run is in --a and --b")


def config_notes(a: Sequence[RunRanks], b: Sequence[RunRanks], label_a: str, label_b: str) -> list[str]:
    """What the configs say: fields that vary within a group (compared as seeds of one procedure
    all the same) and the fields in which B differs from A."""
    notes, within = [], set()
    not_a_setting = set(fields_with(SEED, MACHINE, LABEL))  # a run's name is no setting either
    for label, runs in ((label_a, a), (label_b, b)):
        varying = [k for k in varying_fields([r.config for r in runs]) if k not in not_a_setting]
        within |= set(varying)
        if varying:
            notes.append(f"the runs of {label} differ in {', '.join(varying)}; compared as seeds of one procedure")
    between = [k for k in varying_fields([r.config for r in (*a, *b)]) if k not in not_a_setting | within]
    if between:
        shown = ", ".join(
            f"{k}={format_value(b[0].config.get(k))} (vs {format_value(a[0].config.get(k))})" for k in between
        )
        notes.append(f"{label_b} differs from {label_a} in {shown}")
    elif not within and all(r.config for r in (*a, *b)):
        notes.append(f"{label_a} and {label_b} have the same config but for the seed")
    return notes


# ------------------------------------------------------------------------------------------- the test
def _row(c, label_a: str, label_b: str, run_a: np.ndarray, run_b: np.ndarray, n: int) -> TaskRow:
    """A :class:`~counterarg.analysis.verdicts.Comparison` (its ``a`` the higher mean) as B minus A."""
    sign = -1.0 if c.strategy_a == label_a else 1.0
    lo, hi = (c.ci_low, c.ci_high) if sign > 0 else (-c.ci_high, -c.ci_low)
    qlo, qhi = (c.ci_low_queries, c.ci_high_queries) if sign > 0 else (-c.ci_high_queries, -c.ci_low_queries)
    task, view = c.task, c.view
    return TaskRow(
        task,
        view,
        label_a,
        label_b,
        run_a.size,
        run_b.size,
        n,
        float(run_a.mean()),
        float(run_a.std(ddof=1)),
        float(run_b.mean()),
        float(run_b.std(ddof=1)),
        sign * c.diff,
        lo,
        hi,
        c.p_value,
        None,
        None,
        False,
        c.p_value_queries,
        qlo,
        qhi,
    )


def _split_hits(run: RunRanks, split: str) -> dict[tuple[str, str], np.ndarray]:
    """(task, view) -> ``[n]`` acc@1 hits of one run's ``split``."""
    hits = ranks_hits(run.ranks, split)
    assert hits is not None, "check_queries has read the ranks of every task of the split"
    return hits


def compare_runs(
    a: Sequence[RunRanks],
    b: Sequence[RunRanks],
    *,
    split: str = "test",
    label_a: str = "A",
    label_b: str = "B",
    tasks: str = "all",
    seed: int = 0,
    progress: bool = False,
) -> list[TaskRow]:
    """Per view and task, B minus A: the sweep's comparison (:func:`~counterarg.analysis.verdicts.compare`)
    with Holm and the seeds needed over the rows of each view (10,000 query resamples per row: seconds
    each on a loaded laptop, hence ``progress``)."""
    from tqdm.auto import tqdm

    if tasks not in TASK_SETS:
        raise CompareError(f"--tasks {tasks}: one of {', '.join(TASK_SETS)}")
    if label_a == label_b:
        raise CompareError(f"--label-a and --label-b are both {label_a!r}; give two names")
    check_group(a, "--a")
    check_group(b, "--b")
    check_queries(a, b, split)
    hits_a = [_split_hits(r, split) for r in a]  # per run: (task, view) -> [n]
    hits_b = [_split_hits(r, split) for r in b]
    names = [*task_names(), "mean"] if tasks == "all" else ["mean"]
    qtests: dict[int, PairedTest] = {}
    out = []
    keys = [(task, view) for view in VIEWS for task in names if (task, view) in hits_a[0]]  # no unseen: no view
    bar = tqdm(total=len(keys), desc="comparing", unit="row", disable=not progress, leave=False)
    for view in VIEWS:
        family = []
        for task in names:
            if (task, view) not in keys:
                continue
            ha = np.stack([h[(task, view)] for h in hits_a])  # [R_a, n]
            hb = np.stack([h[(task, view)] for h in hits_b])  # [R_b, n]
            n = ha.shape[1]
            if n not in qtests:  # drawn once per query count
                qtests[n] = PairedTest(n, seed=seed)
            qtest = qtests[n]
            c = compare({label_a: ha, label_b: hb}, task, view, qtest)[0]
            family.append((_row(c, label_a, label_b, ha.mean(axis=1), hb.mean(axis=1), n), ha, hb))
            bar.update()
        level = ALPHA / max(1, len(family))
        for (row, ha, hb), ph in zip(family, holm([r.p_value for r, _, _ in family])):
            settled = ph is not None and ph < ALPHA
            vq, n = interaction_var(ha, hb), ha.shape[1]
            run_a, run_b = ha.mean(axis=1), hb.mean(axis=1)
            need = None if settled else seeds_needed(run_b, run_a, query_var=vq, n_queries=n, alpha=level)
            limited = not settled and query_limited(run_b, run_a, query_var=vq, n_queries=n, alpha=level)
            out.append(replace(row, p_holm=ph, seeds_needed=need, query_limited=limited))
    bar.close()
    return out


def verdict(rows: Sequence[TaskRow], view: str, split: str = "test") -> str:
    """One line on the view's mean acc@1 (and the tasks where a group is significantly better)."""
    mine = [r for r in rows if r.view == view]
    mean = next(r for r in mine if r.task == "mean")
    family = f"Holm over the view's {len(mine)} rows" if len(mine) > 1 else "one test"
    what = MEAN_NAMES[view]
    runs = f"{mean.n_runs_a}+{mean.n_runs_b} runs"
    if mean.significant:
        loser = mean.label_a if mean.better == mean.label_b else mean.label_b
        line = (
            f"{mean.better} beats {loser} on the {what} by {abs(mean.diff):.4f} "
            f"({p_text(mean.p_holm)}, {family}) with {runs}"
        )
    else:
        line = (
            f"no significant difference on the {what} at {runs} ({mean.label_b} - {mean.label_a} = "
            f"{mean.diff:+.4f}, {p_text(mean.p_holm)}, {family}); {need_text(mean, split)}"
        )
    wins = [f"{r.better} on {r.task}" for r in mine if r.task != "mean" and r.significant]
    return line + (f"; per task: {', '.join(wins)}" if wins else "")


def view_table(rows: Sequence[TaskRow], view: str, split: str = "test") -> str:
    """The rows of one view as a plain-text table, with its verdict line."""
    mine = [r for r in rows if r.view == view]
    if not mine:
        return ""
    r0 = mine[0]
    what = "all queries" if view == "all" else "unseen queries (neither text occurs in training)"
    head = ["task", f"A: {r0.label_a}", f"B: {r0.label_b}", "B - A", "95% CI", "seed-aware", "Holm"]
    body = [
        [
            r.task,
            pm_text((r.mean_a, r.std_a)),
            pm_text((r.mean_b, r.std_b)),
            f"{r.diff:+.4f}",
            f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]",
            p_text(r.p_value),
            p_text(r.p_holm) + (" *" if r.significant else ""),
        ]
        for r in mine
    ]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]

    def fmt(line: list[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))
        ).rstrip()

    lines = [
        f"{split} split, {what}: {r0.n_queries} queries; acc@1, mean ± std over {r0.n_runs_a} runs of A "
        f"and {r0.n_runs_b} of B",
        fmt(head),
        *map(fmt, body),
        f"verdict: {verdict(rows, view, split)}",
    ]
    return "\n".join(lines)


def compare_main(
    a: Sequence[str],
    b: Sequence[str],
    *,
    split: str = "test",
    label_a: str = "A",
    label_b: str = "B",
    tasks: str = "all",
    json_path: str | None = None,
    progress: bool = True,
) -> int:
    """``counterarg compare``: read, check, test, print the tables and (``json_path``) write the rows."""
    if json_path is not None and Path(json_path).is_dir():
        raise CompareError(f"--json {json_path} is a folder; give a file name, e.g. {Path(json_path) / 'compare.json'}")
    runs_a = [load_run(f, split) for f in a]
    runs_b = [load_run(f, split) for f in b]
    rows = compare_runs(runs_a, runs_b, split=split, label_a=label_a, label_b=label_b, tasks=tasks, progress=progress)
    for note in config_notes(runs_a, runs_b, label_a, label_b):
        print(f"[counterarg] {note}")
    print(
        "seed-aware two-level Welch test (the training run is the unit; the null holds the spread of seeds "
        "and of queries); * = significant at 0.05 after Holm over the rows of a view"
    )
    views = [v for v in VIEWS if any(r.view == v for r in rows)]
    for v in views:
        print()
        print(view_table(rows, v, split))
    if json_path is not None:
        doc = {
            "split": split,
            "tasks": tasks,
            "alpha": ALPHA,
            "a": {"label": label_a, "runs": [given_path(r.folder) for r in runs_a], "seeds": [r.seed for r in runs_a]},
            "b": {"label": label_b, "runs": [given_path(r.folder) for r in runs_b], "seeds": [r.seed for r in runs_b]},
            "verdicts": {v: verdict(rows, v, split) for v in views},
            "rows": [r.row() for r in rows],
        }
        atomic_write_json(Path(json_path), doc)
        print(f"\n[counterarg] rows written to {json_path}")  # the user's path, as given
    return 0


__all__ = [
    "CompareError",
    "RunRanks",
    "TaskRow",
    "ROW_COLUMNS",
    "SPLITS",
    "TASK_SETS",
    "ranks_folder",
    "load_run",
    "check_group",
    "check_queries",
    "config_notes",
    "compare_runs",
    "verdict",
    "view_table",
    "compare_main",
]
