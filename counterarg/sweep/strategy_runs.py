"""A sweep's own TensorBoard runs: one per strategy (mean over its finished seeds) and margin charts.

Written when the sweep ends (and again after each ``--resume``), from the same trial records as the
summary, into ``<experiment>/strategies/<strategy>``: TensorBoard lists them as runs
``strategies/recipe-decay-0.8-0.02`` beside the trials. Each holds, per epoch, the mean over the
strategy's *finished* seeds (:attr:`TrialRecord.finished`: trained their planned epochs or stopped
by their own rule; an interrupted or errored trial is left out) of the sweep's metric and every
split's acc@1, under the trials' own tags (the Scalars tab draws a strategy among its seeds); the
margin series (``strategy_band/<tag>/mean``, ``.../lower``, ``.../upper``: mean - std and mean + std);
a text note of how many seeds it averages (``2/3 (1 unfinished)``); and the custom-scalars layout:
"Margin" charts of mean ± std per strategy for the sweep's metric, the unseen view's test mean and
each task. TensorBoard chooses run colours in the browser; the figures' colours
(:mod:`counterarg.analysis.colours`) cannot be passed to it.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path

from tensorboardX import SummaryWriter

from ..analysis.methods import slug
from ..analysis.trials import TrialRecord, dedupe_history, group_labels
from .hparams_table import metric_keys, tag_of

#: The folder (and run-name prefix) of the per-strategy runs inside the experiment folder.
STRATEGIES_DIR = "strategies"
#: The tag group of the margin series (mean, mean - std, mean + std).
BAND = "strategy_band"
#: The custom-scalars categories' titles.
OVERVIEW, PER_TASK = "Strategies (mean ± std over finished seeds)", "Strategies per task"


def band_tags(key: str) -> tuple[str, str, str]:
    """``(mean, lower, upper)`` tags of ``key``'s margin series: only strategy runs hold them, so a
    margin chart matches no trial run (a trial holding some of a series' tags is "missing tags")."""
    tag = f"{BAND}/{tag_of(key)}"
    return f"{tag}/mean", f"{tag}/lower", f"{tag}/upper"


def layout(metric: str) -> dict[str, dict[str, list]]:
    """The custom-scalars layout (tensorboardX's form): the metric and the unseen test mean, then each
    task on the metric's split, each a margin chart of every strategy run."""
    keys = metric_keys(metric)
    split = metric.split("/")[0]
    per_task = [k for k in keys if k.startswith(f"{split}/") and "/mean/" not in k]
    return {
        OVERVIEW: {k: ["Margin", list(band_tags(k))] for k in keys[:2]},
        f"{PER_TASK} ({split})": {k: ["Margin", list(band_tags(k))] for k in per_task},
    }


def epoch_stats(records: Sequence[TrialRecord], key: str) -> dict[int, tuple[float, float, int]]:
    """Per epoch, ``(mean, std, seeds)`` of ``key`` over ``records`` (std 0 for one seed, ddof 1)."""
    values: dict[int, list[float]] = {}
    for rec in records:
        for row in dedupe_history(rec.history):
            v = row.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                values.setdefault(int(row["epoch"]), []).append(float(v))
    out = {}
    for epoch, vs in sorted(values.items()):
        mean = sum(vs) / len(vs)
        std = math.sqrt(sum((v - mean) ** 2 for v in vs) / (len(vs) - 1)) if len(vs) > 1 else 0.0
        out[epoch] = (mean, std, len(vs))
    return out


def seeds_note(label: str, members: Sequence[TrialRecord], done: Sequence[TrialRecord]) -> str:
    """``recipe: decay 0.8-0.02: mean over 2/3 seeds (1 unfinished): seeds 0, 1``."""
    left = len(members) - len(done)
    seeds = ", ".join(str(r.config.get("seed")) for r in sorted(done, key=lambda r: str(r.config.get("seed"))))
    return (
        f"{label}: mean over {len(done)}/{len(members)} seeds"
        + (f" ({left} unfinished)" if left else "")
        + (f": seeds {seeds}" if seeds else "")
    )


def write_strategy_runs(records: Sequence[TrialRecord], exp_dir: Path, metric: str) -> dict[str, Path]:
    """The per-strategy runs under ``exp_dir/strategies`` (replacing the previous ones); returns
    ``{strategy: run folder}`` for those with a finished seed."""
    root = Path(exp_dir) / STRATEGIES_DIR
    if root.is_dir():
        shutil.rmtree(root)  # the sweep's own folder: a resume rewrites it from every record
    groups: dict[str, list[TrialRecord]] = {}
    for rec, label in zip(records, group_labels([r.config for r in records])):  # the summary's groups
        groups.setdefault(label, []).append(rec)
    charts = layout(metric)
    written: dict[str, Path] = {}
    for label, members in sorted(groups.items()):
        done = [r for r in members if r.finished]
        if not done:
            continue
        folder = written[label] = root / slug(label, limit=96)
        writer = SummaryWriter(str(folder), flush_secs=3600)
        try:
            for key in metric_keys(metric):
                value, lower, upper = band_tags(key)
                for epoch, (mean, std, _) in epoch_stats(done, key).items():
                    writer.add_scalar(tag_of(key), mean, global_step=epoch)  # beside its seeds' curves
                    writer.add_scalar(value, mean, global_step=epoch)
                    writer.add_scalar(lower, mean - std, global_step=epoch)
                    writer.add_scalar(upper, mean + std, global_step=epoch)
            writer.add_text("strategy", seeds_note(label, members, done), global_step=0)
            writer.add_custom_scalars(charts)  # the same in every run: TensorBoard merges them once
        finally:
            writer.close()
    return written
