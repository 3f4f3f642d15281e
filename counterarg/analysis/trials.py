"""A sweep's trials as plain data: labels, one summary row per trial, statistics per strategy.

Why a separate module: the numbers in summary.csv / summary.md are what people quote, so they are
computed here from plain data (one :class:`TrialRecord` per trial: its flat config, its per-epoch
metric rows, its status) where tests can check them by hand. :mod:`counterarg.sweep.records` turns
a Ray Tune ``ResultGrid`` into these records; nothing here imports Ray.

Conventions:

* A trial's *best epoch* is the epoch with the best sweep metric (Config ``select_metric``; ties:
  the earliest, :func:`counterarg.evaluation.selection.best_row`); its validation and test metrics are
  reported at that epoch (model selection on validation only).
* A trial's *group* names what it was run with apart from its seed: the name its sweep gave it with
  its variant (:func:`counterarg.analysis.methods.variant_label`, e.g. ``recipe`` or ``reference:
  decay 0.8-0.02``) plus any other setting that varies among the trials of that name (e.g.
  ``margin=0.5``).
  Seeds are the repeats within a group. The ``strategy`` column is the schedule's label alone.
* ``std`` is the sample standard deviation over seeds (ddof=1); with one seed it is undefined and
  shown as "n/a".
* Ray overhead of a trial = 1 - (time spent inside ``train()``) / (the trial's wall time in Tune),
  summed over all trials for the sweep figure.
* Two views of the test split: all queries (``test/...``) and the unseen queries, whose texts occur
  nowhere in training (``test_unseen/...``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import LABEL, MACHINE, SCHEDULE, SEED, Config, fields_with
from ..evaluation.selection import DEFAULT_MODE, best_row
from ..retrieval.tasks import task_names
from ..sampling.schedules import format_value
from .endings import ENDINGS, is_finished
from .methods import label_of, strategy_fields_label, strategy_label

DEFAULT_METRIC = Config().select_metric
#: the two views of the test split: name -> metric-key prefix
VIEWS = {"all": "test", "unseen": "test_unseen"}
#: the label of the untrained encoder's row (pooled output, cosine retrieval) in tables and plots
ZERO_SHOT = "zero-shot encoder"
VIEW_TITLES = {"all": "all test queries", "unseen": "unseen test queries (neither text occurs in training)"}
TRAIN_TIME_KEY = "time/train_total_s"  # reported by the trainable: cumulative seconds inside train()
WALL_TIME_KEY = "time_total_s"  # Tune's own cumulative trial time
#: The most trials one sweep runs (--num-samples, a race's rounds): a typo such as 10000 must not fill
#: the disk (each trial keeps two checkpoints and its logs). Here, not in the runner, so that a script's
#: --help names it without loading Ray.
MAX_NUM_SAMPLES = 1000


@dataclass
class TrialRecord:
    """One trial as plain data: enough for every number and plot in the summary.

    ``ended`` says how it ended (:data:`counterarg.analysis.endings.ENDINGS`) and :attr:`finished`
    whether that makes it a finished seed; every statistic, verdict and best checkpoint counts
    finished trials only. A record made by hand without ``ended`` takes it from ``status``
    (TERMINATED: its planned epochs; ERROR: an error; anything else: interrupted).
    """

    trial_id: str
    config: dict[str, Any]  # flat Config fields
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch, epoch ascending
    status: str = "TERMINATED"  # TERMINATED (finished) | ERROR | UNFINISHED (or Tune's RUNNING, PENDING, PAUSED)
    error: str | None = None  # short message for errored trials
    path: str | None = None
    ranks: dict[str, np.ndarray] | None = None  # best_ranks.npz of its checkpoint (selection.BestRanks)
    best_checkpoint: str | None = None  # where its best epoch's checkpoint is kept (None: not kept)
    ended: str = ""  # how it ended: a key of endings.ENDINGS
    restores: list[dict[str, Any]] = field(default_factory=list)  # after lost nodes (sweep.failures.RestoreLog)

    def __post_init__(self) -> None:
        if not self.ended:
            self.ended = {"TERMINATED": "epochs", "ERROR": "error"}.get(self.status, "interrupted")
        if self.ended not in ENDINGS:
            raise ValueError(f"trial {self.trial_id}: unknown ending {self.ended!r} (one of {', '.join(ENDINGS)})")

    @property
    def finished(self) -> bool:
        """A finished seed: it trained its planned epochs or stopped by its own rule (patience, ASHA)."""
        return is_finished(self.ended)


def restore_text(restores: list[dict]) -> str:
    """``restored 2x after a lost node or worker, from epochs 5, 12 (ActorDiedError: ...)``."""
    epochs = ", ".join(str(r.get("after_epoch") if r.get("after_epoch") is not None else 0) for r in restores)
    why = "; ".join(dict.fromkeys(str(r.get("error", "")) for r in restores))
    return (
        f"restored {len(restores)}x after a lost node or worker, from epoch{'s' if len(restores) > 1 else ''} "
        f"{epochs} ({why})"
    )


def varying_fields(configs: Sequence[dict[str, Any]]) -> list[str]:
    """Config fields whose value differs between at least two of ``configs`` (sorted)."""
    keys = sorted({k for c in configs for k in c})
    out = []
    for k in keys:
        values = {repr(c.get(k)) for c in configs}
        if len(values) > 1:
            out.append(k)
    return out


def group_label(config: dict[str, Any], varying: Iterable[str]) -> str:
    """A trial's group: the name it carries (:func:`counterarg.analysis.methods.label_of`: ``recipe``,
    ``recipe: decay 0.8-0.02``, ``reference: fixed 0.8``; a config no sweep labelled: its schedule)
    plus every other field of ``varying`` that is a setting (the seed, the machine, the schedule the
    name states and the name itself aside), e.g. ``recipe margin=0.5`` or, in a search,
    ``recipe finetune=top:1 lr=0.0004``."""
    named = set(fields_with(SCHEDULE, SEED, MACHINE, LABEL))
    return " ".join([label_of(config)] + [f"{k}={format_value(config.get(k))}" for k in varying if k not in named])


def group_labels(configs: Sequence[dict[str, Any]]) -> list[str]:
    """Each config's group (:func:`group_label`) among ``configs``: its name plus the settings that
    vary among the configs of that name (a grid's extra axis, a search's drawn fields), sorted."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for c in configs:
        by_name.setdefault(label_of(c), []).append(c)
    varying = {name: varying_fields(cs) for name, cs in by_name.items()}
    return [group_label(c, varying[label_of(c)]) for c in configs]


def dedupe_history(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch, the last reported, in epoch order; rows without an epoch are dropped.

    A trial resumed after a driver kill retrains the epoch whose checkpoint the experiment state
    had not recorded yet, and Tune appends that epoch's result again; statistics and plots must
    count it once.
    """
    by_epoch: dict[int, dict[str, Any]] = {}
    for r in rows:
        if r.get("epoch") is None or (isinstance(r["epoch"], float) and math.isnan(r["epoch"])):
            continue
        by_epoch[int(r["epoch"])] = r
    return [by_epoch[e] for e in sorted(by_epoch)]


def metric_keys(history: Sequence[dict[str, Any]]) -> list[str]:
    """The validation and test keys (both views) present in ``history``, in a stable order."""
    keys = {
        k for r in history for k in r if k.startswith(("validation/", "test/", "validation_unseen/", "test_unseen/"))
    }
    return sorted(keys)


def summary_rows(
    records: Sequence[TrialRecord], metric: str = DEFAULT_METRIC, mode: str = DEFAULT_MODE
) -> list[dict[str, Any]]:
    """summary.csv: one row per trial with config, status, best epoch and its val/test metrics."""
    groups = group_labels([r.config for r in records])
    rows = []
    for rec, group in zip(records, groups):
        hist = dedupe_history(rec.history)
        best = best_row(hist, metric, mode)
        last = hist[-1] if hist else {}
        row: dict[str, Any] = {
            "trial_id": rec.trial_id,
            "status": rec.status,
            "finished": rec.finished,
            "ended": rec.ended,
            "group": group,
            "strategy": strategy_label(rec.config),
            "strategy_fields": strategy_fields_label(rec.config),
            "seed": rec.config.get("seed", Config().seed),
            "epochs_done": int(last.get("epoch", 0)) if hist else 0,
            "epochs_planned": int(rec.config.get("epochs", Config().epochs)),
            "best_epoch": int(best["epoch"]) if best else None,
            "best_checkpoint": rec.best_checkpoint or "",
            "error": rec.error or "",
            "restored": len(rec.restores),  # times it continued from its checkpoint after a lost node or worker
            "restores": restore_text(rec.restores) if rec.restores else "",
        }
        train_s = last.get(TRAIN_TIME_KEY)
        wall_s = last.get(WALL_TIME_KEY)
        row["train_s"] = train_s
        row["wall_s"] = wall_s
        row["ray_overhead"] = (1.0 - train_s / wall_s) if (train_s and wall_s) else None
        for k in sorted(rec.config):
            row[f"config/{k}"] = rec.config[k]
        for k in metric_keys(hist):
            row[k] = best.get(k) if best else None
        rows.append(row)
    return rows


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var)


def pm_text(ms: tuple[float, float] | None) -> str:
    """``mean ± std`` as tables print it (std "n/a" with one seed; "–" without a value)."""
    if ms is None:
        return "–"
    m, s = ms
    return f"{m:.4f} ± {'n/a' if math.isnan(s) else f'{s:.4f}'}"


def group_stats(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per group: ``n`` (finished seeds with a value), ``trials``, ``unfinished`` and mean/std of each
    key over its *finished* trials' best epochs.

    Only finished trials (the rows' ``finished``: planned epochs, patience or ASHA) count: a trial
    stopped by Ctrl-C or an error is counted in ``unfinished`` and left out of the statistics, so a
    partial sweep's means are over complete runs only.
    """
    out: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    for g, members in groups.items():
        done = [m for m in members if m["finished"]]
        stats: dict[str, Any] = {"n": 0, "trials": len(members), "unfinished": len(members) - len(done)}
        for k in keys:
            vals = [m[k] for m in done if isinstance(m.get(k), (int, float)) and not math.isnan(m[k])]
            if vals:
                stats[k] = _mean_std(vals)
                stats["n"] = max(stats["n"], len(vals))
        out[g] = stats
    return out


def test_acc1_keys(ks_task: Sequence[str] | None = None, k: int = 1, view: str = "all") -> list[str]:
    prefix = VIEWS[view]
    return [f"{prefix}/{t}/acc@{k}" for t in (ks_task or task_names())] + [f"{prefix}/mean/acc@{k}"]


def best_per_group(rows: Sequence[dict[str, Any]], metric: str = DEFAULT_METRIC) -> dict[str, dict[str, Any]]:
    """Per group, the *finished* trial with the highest ``metric`` at its best epoch (ties: lower
    seed); a group with no finished trial has none (an under-trained seed is never its best)."""
    out: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: (str(r.get("seed")), r["trial_id"])):
        v = r.get(metric)
        if not r["finished"]:
            continue
        if not isinstance(v, (int, float)) or math.isnan(v):
            continue
        if r["group"] not in out or v > out[r["group"]][metric]:
            out[r["group"]] = r
    return out


def overhead(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Sweep-level Ray overhead: 1 - sum(train_s) / sum(wall_s) over trials that report both."""
    pairs = [(r["train_s"], r["wall_s"]) for r in rows if r.get("train_s") and r.get("wall_s")]
    if not pairs:
        return {"train_s": None, "wall_s": None, "overhead": None}
    t = sum(p[0] for p in pairs)
    w = sum(p[1] for p in pairs)
    return {"train_s": t, "wall_s": w, "overhead": 1.0 - t / w}
