"""The figures of a sweep summary: validation curves, per-task test bars, mining telemetry.

Each is drawn from the plain trial data of :mod:`counterarg.sweep.trials` (mean over seeds per
strategy) with matplotlib's Agg backend, so a sweep on a headless machine writes them too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .trials import (DEFAULT_METRIC, VIEW_TITLES, VIEWS, ZERO_SHOT, TrialRecord, dedupe_history,  # noqa: E402
                     group_label, group_stats, test_acc1_keys, varying_fields)


def epoch_values(records: Sequence[TrialRecord], key: str) -> dict[str, dict[int, list[float]]]:
    """Per group and epoch, the values of ``key`` over the group's seeds (each epoch counted once)."""
    varying = varying_fields([r.config for r in records])
    out: dict[str, dict[int, list[float]]] = {}
    for rec in records:
        g = group_label(rec.config, varying)
        for row in dedupe_history(rec.history):
            v = row.get(key)
            if isinstance(v, (int, float)) and not math.isnan(v):
                out.setdefault(g, {}).setdefault(int(row["epoch"]), []).append(v)
    return out


def plot_curves(records: Sequence[TrialRecord], path: Path, metric: str = DEFAULT_METRIC,
                baseline: dict[str, float] | None = None) -> None:
    """``metric`` per epoch per group: mean over seeds, band = min..max over seeds; the zero-shot
    encoder as a dashed line; whole-number epoch ticks."""
    curves = epoch_values(records, metric)
    fig, ax = plt.subplots(figsize=(8, 5))
    for g in sorted(curves):
        epochs = sorted(curves[g])
        vals = [curves[g][e] for e in epochs]
        mean = [sum(v) / len(v) for v in vals]
        line, = ax.plot(epochs, mean, marker="o", ms=3, label=g)
        ax.fill_between(epochs, [min(v) for v in vals], [max(v) for v in vals],
                        color=line.get_color(), alpha=0.2)
    if baseline and metric in baseline:
        ax.axhline(baseline[metric], color="black", linestyle="--", linewidth=1, label=ZERO_SHOT)

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch (mean over seeds, band = min..max)")
    ax.grid(alpha=0.3)
    if curves or baseline:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


#: the mining telemetry a sweep plots (train.py writes these every epoch; mining.mining_telemetry)
TELEMETRY = {"mining/share_points": "negatives that are points", "mining/share_hard": "hard (mined) negatives",
             "mining/share_same_debate_same_side": "from the anchor's debate, same side",
             "mining/share_same_debate_other_side": "from the anchor's debate, other side",
             "mining/share_other_theme": "from another theme",
             "mining/share_in_eval_splits": "negatives whose text validation/test hold",
             "mining/dist_negative": "mean anchor-negative distance"}


def plot_telemetry(records: Sequence[TrialRecord], path: Path) -> bool:
    """The mining telemetry per epoch per group (mean over seeds), one panel per quantity; False
    (nothing written) when no trial reported any."""
    keys = [k for k in TELEMETRY if any(k in r for rec in records for r in rec.history)]
    if not keys:
        return False
    fig, axes = plt.subplots(2, (len(keys) + 1) // 2, figsize=(4.2 * ((len(keys) + 1) // 2), 7), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        curves = epoch_values(records, key)
        for g in sorted(curves):
            epochs = sorted(curves[g])
            ax.plot(epochs, [sum(curves[g][e]) / len(curves[g][e]) for e in epochs], marker=".", label=g)
        ax.set_title(TELEMETRY[key], fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Mining telemetry per epoch (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_task_bars(rows: Sequence[dict[str, Any]], path: Path, baseline: dict[str, float] | None = None) -> None:
    """Test acc@1 per task per group at the best epoch, one panel per view: mean bars, std error bars."""
    views = [v for v in VIEWS if any(r.get(test_acc1_keys(view=v)[-1]) is not None for r in rows)] or ["all"]
    fig, axes = plt.subplots(len(views), 1, figsize=(10, 4.5 * len(views)), squeeze=False)
    for ax, view in zip(axes[:, 0], views):
        _task_bars(ax, rows, view, baseline)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _task_bars(ax, rows: Sequence[dict[str, Any]], view: str, baseline: dict[str, float] | None = None) -> None:
    keys = test_acc1_keys(view=view)
    stats = group_stats(rows, keys)
    groups = sorted(stats)
    width = 0.8 / max(1, len(groups))
    for i, g in enumerate(groups):
        xs, ms, ss = [], [], []
        for j, k in enumerate(keys):
            if k in stats[g]:
                m, s = stats[g][k]
                xs.append(j + (i - (len(groups) - 1) / 2) * width)
                ms.append(m)
                ss.append(0.0 if math.isnan(s) else s)
        ax.bar(xs, ms, width, yerr=ss, capsize=2, label=g)
    if baseline and all(k in baseline for k in keys):
        ax.scatter(range(len(keys)), [baseline[k] for k in keys], marker="_", s=900, color="black", zorder=3,
                   label=ZERO_SHOT)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([k.split("/")[1] for k in keys])
    ax.set_ylabel("test acc@1 (best epoch)")
    ax.set_title(f"Test acc@1 per task, {VIEW_TITLES[view]} (mean ± std over seeds)")
    ax.grid(axis="y", alpha=0.3)
    if groups:
        ax.legend(fontsize=8)
