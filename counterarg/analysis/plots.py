"""The figures of a sweep summary: validation curves, per-task test bars, mining telemetry, verdicts,
and a race's rounds.

Each is drawn from the plain trial data of :mod:`counterarg.analysis.trials` (mean over seeds per
strategy) with matplotlib's Agg backend, so a sweep on a headless machine writes them too. Every PNG
also carries the numbers it draws, as JSON in its ``counterarg`` text chunk (:func:`save_figure`,
:func:`read_plot_data`): a script or a test reads a figure back without redoing the aggregation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..config import Config  # noqa: E402
from ..retrieval.tasks import task_names  # noqa: E402
from .colours import strategy_colours  # noqa: E402
from .trials import (  # noqa: E402
    DEFAULT_METRIC,
    VIEW_TITLES,
    VIEWS,
    ZERO_SHOT,
    TrialRecord,
    dedupe_history,
    group_labels,
    group_stats,
    test_acc1_keys,
)

#: PNG text chunk that holds the numbers a figure draws
PLOT_DATA_KEY = "counterarg"


def save_figure(fig, path: Path, data: Any, dpi: int) -> None:
    """Write ``fig`` to the PNG ``path`` with ``data`` (what it draws) as JSON in its text chunk, and
    close it."""
    fig.savefig(path, dpi=dpi, metadata={PLOT_DATA_KEY: json.dumps(data, sort_keys=True)})
    plt.close(fig)


def read_plot_data(path: Path) -> Any:
    """The numbers a figure of this module draws, read back from its PNG."""
    from PIL import Image

    with Image.open(path) as img:
        return json.loads(img.text[PLOT_DATA_KEY])


def _series(values: dict[int, list[float]]) -> dict[str, list]:
    """One group's per-epoch values -> epochs, mean, min and max over seeds."""
    epochs = sorted(values)
    vals = [values[e] for e in epochs]
    return {
        "epochs": epochs,
        "mean": [sum(v) / len(v) for v in vals],
        "min": [min(v) for v in vals],
        "max": [max(v) for v in vals],
    }


def epoch_values(
    records: Sequence[TrialRecord], key: str, groups: dict[str, str] | None = None
) -> dict[str, dict[int, list[float]]]:
    """Per group and epoch, the values of ``key`` over the group's seeds (each epoch counted once);
    ``groups``: trial id -> group (default: the groups among ``records``, :func:`group_labels`)."""
    if groups is None:
        groups = dict(zip([r.trial_id for r in records], group_labels([r.config for r in records])))
    out: dict[str, dict[int, list[float]]] = {}
    for rec in records:
        g = groups[rec.trial_id]
        for row in dedupe_history(rec.history):
            v = row.get(key)
            if isinstance(v, (int, float)) and not math.isnan(v):
                out.setdefault(g, {}).setdefault(int(row["epoch"]), []).append(v)
    return out


def plot_curves(
    records: Sequence[TrialRecord],
    path: Path,
    metric: str = DEFAULT_METRIC,
    baseline: dict[str, float] | None = None,
    colours: dict[str, str] | None = None,
) -> None:
    """``metric`` per epoch per group: mean over seeds, band = min..max over seeds; the zero-shot
    encoder as a dashed line; whole-number epoch ticks. Where fewer seeds are averaged than the
    group has (the others stopped early or failed), the marker is hollow and larger, and the
    figure's data says how many (``seeds`` per epoch, ``of`` the group's most). ``colours``: the
    sweep's strategy colours (:func:`~counterarg.analysis.colours.strategy_colours`; default: of the
    groups drawn)."""
    values = epoch_values(records, metric)
    colours = colours or strategy_colours(values)
    curves: dict[str, dict[str, Any]] = {}  # per group: its series, seeds per epoch, colour
    for g, v in values.items():
        series = _series(v)
        seeds = [len(v[e]) for e in series["epochs"]]
        curves[g] = {**series, "seeds": seeds, "of": max(seeds)}
    fig, ax = plt.subplots(figsize=(8, 5))
    fewer = False
    for g in sorted(curves):
        c = curves[g]
        c["colour"] = colours[g]
        ax.plot(c["epochs"], c["mean"], marker="o", ms=3, label=g, color=c["colour"])
        ax.fill_between(c["epochs"], c["min"], c["max"], color=c["colour"], alpha=0.2)
        thin = [i for i, n in enumerate(c["seeds"]) if n < c["of"]]
        if thin:
            fewer = True
            ax.plot(
                [c["epochs"][i] for i in thin],
                [c["mean"][i] for i in thin],
                linestyle="none",
                marker="o",
                ms=7,
                markerfacecolor="white",
                markeredgecolor=c["colour"],
                color=c["colour"],
            )
    if fewer:  # one legend entry explains the hollow markers
        ax.plot(
            [],
            [],
            linestyle="none",
            marker="o",
            ms=7,
            markerfacecolor="white",
            markeredgecolor="gray",
            label="fewer seeds averaged (others stopped)",
        )
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
    save_figure(fig, path, {"metric": metric, "curves": curves, ZERO_SHOT: (baseline or {}).get(metric)}, dpi=120)


#: the mining telemetry a sweep plots (training/loop.py writes these every epoch; sampling.mining.mining_telemetry)
TELEMETRY = {
    "mining/share_points": "negatives that are points",
    "mining/share_hard": "hard (mined) negatives",
    "mining/share_same_debate_same_side": "from the anchor's debate, same side",
    "mining/share_same_debate_other_side": "from the anchor's debate, other side",
    "mining/share_other_theme": "from another theme",
    "mining/share_in_eval_splits": "negatives whose text validation/test hold",
    "mining/dist_negative": "mean anchor-negative distance",
}


#: telemetry that is a distance in the mining space, whose scale depends on the trial's eval_metric
#: (cosine: unit vectors, at most 2; l2: the raw similarity space): one panel per metric, never one axis
DISTANCES = {"mining/dist_negative"}
#: what a distance panel's title adds per eval_metric
METRIC_SPACES = {"l2": "L2, eval_metric l2", "cosine": "unit vectors, eval_metric cosine"}


def _eval_metric(rec: TrialRecord) -> str:
    return str(rec.config.get("eval_metric", Config().eval_metric))


def plot_telemetry(records: Sequence[TrialRecord], path: Path, colours: dict[str, str] | None = None) -> bool:
    """The mining telemetry per epoch per group (mean over seeds), one panel per quantity, and a
    distance once per eval_metric (``<key> (<metric>)``: L2 distances and distances of unit vectors
    differ in scale); False (nothing written) when no trial reported any."""
    panels = []  # (drawn key, title, the records it draws)
    for k in TELEMETRY:
        if not any(k in r for rec in records for r in rec.history):
            continue
        if k not in DISTANCES:
            panels.append((k, TELEMETRY[k], records))
            continue
        for m in sorted({_eval_metric(rec) for rec in records if any(k in r for r in rec.history)}):
            panels.append(
                (
                    f"{k} ({m})",
                    f"{TELEMETRY[k]}\n({METRIC_SPACES.get(m, m)})",
                    [rec for rec in records if _eval_metric(rec) == m],
                )
            )
    if not panels:
        return False
    cols = (len(panels) + 1) // 2
    fig, axes = plt.subplots(2, cols, figsize=(4.2 * cols, 7), squeeze=False)
    drawn = {}
    groups = dict(zip([r.trial_id for r in records], group_labels([r.config for r in records])))  # one name
    names = sorted(set(groups.values()))  # per strategy in every panel
    color = colours or strategy_colours(names)  # ... and the sweep's colours
    for ax, (name, title, recs) in zip(axes.flat, panels):
        key = name.split(" (")[0]
        curves = drawn[name] = {g: _series(v) for g, v in epoch_values(recs, key, groups).items()}
        for g in sorted(curves):
            ax.plot(curves[g]["epochs"], curves[g]["mean"], marker=".", label=g, color=color[g])
        ax.set_title(title, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles = [Line2D([], [], marker=".", color=color[g], label=g) for g in names]
    if len(panels) < axes.size:  # one legend of every strategy, in the empty cell when there is one
        axes.flat[-1].legend(handles=handles, fontsize=7, loc="center")
    else:
        axes.flat[0].legend(handles=handles, fontsize=7)
    fig.suptitle("Mining telemetry per epoch (mean over seeds)")
    fig.tight_layout()
    save_figure(fig, path, drawn, dpi=110)
    return True


def plot_task_bars(
    rows: Sequence[dict[str, Any]],
    path: Path,
    baseline: dict[str, float] | None = None,
    colours: dict[str, str] | None = None,
) -> None:
    """Test acc@1 per task per group at the best epoch, one panel per view: mean bars, std error bars;
    the legend beside the panels, never over the bars."""
    views = [v for v in VIEWS if any(r.get(test_acc1_keys(view=v)[-1]) is not None for r in rows)] or ["all"]
    colours = colours or strategy_colours(r["group"] for r in rows)
    fig, axes = plt.subplots(len(views), 1, figsize=(13, 4.5 * len(views)), squeeze=False)
    drawn: dict[str, Any] = {view: _task_bars(ax, rows, view, baseline, colours) for ax, view in zip(axes[:, 0], views)}
    drawn["colours"] = {g: colours[g] for v in views for g in drawn[v]}
    fig.tight_layout()
    save_figure(fig, path, drawn, dpi=120)


def _task_bars(
    ax, rows: Sequence[dict[str, Any]], view: str, baseline: dict[str, float] | None, colours: dict[str, str]
) -> dict[str, dict[str, list[float]]]:
    """One view's panel; returns what it drew: group -> metric key -> [mean, std] (std 0 for one seed)."""
    keys = test_acc1_keys(view=view)
    stats = group_stats(rows, keys)
    groups = sorted(stats)
    width = 0.8 / max(1, len(groups))
    drawn: dict[str, dict[str, list[float]]] = {}
    for i, g in enumerate(groups):
        xs, ms, ss = [], [], []
        for j, k in enumerate(keys):
            if k in stats[g]:
                m, s = stats[g][k]
                xs.append(j + (i - (len(groups) - 1) / 2) * width)
                ms.append(m)
                ss.append(0.0 if math.isnan(s) else s)
                drawn.setdefault(g, {})[k] = [m, ss[-1]]
        ax.bar(xs, ms, width, yerr=ss, capsize=2, label=g, color=colours[g])
    if baseline and all(k in baseline for k in keys):
        ax.scatter(
            range(len(keys)), [baseline[k] for k in keys], marker="_", s=900, color="black", zorder=3, label=ZERO_SHOT
        )
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([k.split("/")[1] for k in keys])
    ax.set_ylabel("test acc@1 (best epoch)")
    ax.set_title(f"Test acc@1 per task, {VIEW_TITLES[view]} (mean ± std over seeds)")
    ax.grid(axis="y", alpha=0.3)
    if groups:  # outside the axes, right of them: the bars stay visible
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return drawn


def plot_verdicts(comparisons: Sequence[Any], verdict: dict, path: Path) -> bool:
    """Which differences are significant: per view a grid of strategies x tasks, each cell the gap in
    test acc@1 to that task's best strategy with its Holm-adjusted seed-aware p-value; a cell is dark
    where the best strategy is significantly better, pale where the seeds do not separate them, and
    the best strategy's cell says ``best`` (``best *`` where it beats every other). Nothing to draw
    (fewer than two strategies, or a partial sweep, which makes no verdict: analysis/verdicts.py): False."""
    if any(v.partial for v in verdict.values()):
        return False
    views = [v for v in VIEWS if any(key[1] == v for key in verdict)]
    tasks = [*task_names(), "mean"]
    drawn: dict[str, dict[str, dict[str, Any]]] = {}
    for view in views:
        cells: dict[str, dict[str, Any]] = {}
        for t in tasks:
            v = verdict.get((t, view))
            if v is None or v.runner_up is None:
                continue
            cells.setdefault(v.best, {})[t] = {"gap": 0.0, "p_holm": None, "best": True, "significant": v.significant}
            for c in comparisons:
                if (c.task, c.view, c.strategy_a) == (t, view, v.best) and c.strategy_b != ZERO_SHOT:
                    cells.setdefault(c.strategy_b, {})[t] = {
                        "gap": -c.diff,
                        "p_holm": c.p_holm,
                        "best": False,
                        "significant": c.significant,
                    }
        if cells:
            drawn[view] = cells
    if not drawn:
        return False
    n_rows = max(len(c) for c in drawn.values())
    fig, axes = plt.subplots(len(drawn), 1, figsize=(12, 0.55 * n_rows * len(drawn) + 1.6 * len(drawn)), squeeze=False)
    for ax, (view, cells) in zip(axes[:, 0], drawn.items()):
        groups = sorted(cells)
        scale = max([abs(c["gap"]) for g in groups for c in cells[g].values()] + [1e-6])
        for i, g in enumerate(groups):
            for j, t in enumerate(tasks):
                c = cells[g].get(t)
                if c is None:
                    continue
                shade = 0.15 + 0.75 * abs(c["gap"]) / scale if c["significant"] or c["best"] else 0.12
                colour = (0.2, 0.6, 0.2, 0.35 if c["best"] else shade) if c["best"] else (0.8, 0.2, 0.2, shade)
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, color=colour))
                if c["best"]:
                    text = "best *" if c["significant"] else "best"
                else:
                    p = c["p_holm"]
                    text = f"{c['gap']:+.3f}\n" + (
                        "p n/a"
                        if p is None
                        else ("p<.0001" if p < 1e-4 else f"p={p:.4f}" if p < 1e-3 else f"p={p:.3f}")
                    )
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=7,
                    fontweight="bold" if c["significant"] and not c["best"] else "normal",
                )
        ax.set_xlim(-0.5, len(tasks) - 0.5)
        ax.set_ylim(len(groups) - 0.5, -0.5)
        ax.set_xticks(range(len(tasks)))
        ax.set_xticklabels(tasks)
        ax.set_yticks(range(len(groups)))
        ax.set_yticklabels(groups, fontsize=8)
        ax.set_title(
            f"Gap to the best strategy per task, {VIEW_TITLES[view]}\n(test acc@1; dark/bold: significantly "
            "worse, seed-aware test, Holm; pale: the seeds do not separate them)",
            fontsize=9,
        )
    fig.tight_layout()
    save_figure(fig, path, drawn, dpi=110)
    return True


def plot_race(
    state: Mapping[str, Any], path: Path, metric: str = DEFAULT_METRIC, colours: dict[str, str] | None = None
) -> None:
    """A race (:mod:`counterarg.sweep.race`) per round: each strategy's validation mean over its runs
    so far with its 95% t-interval, an ``x`` where it was eliminated."""
    drawn: dict[str, dict[str, list]] = {}
    for rnd in state["rounds"]:
        for s in rnd["standings"]:
            if s["value"] is None:
                continue
            d = drawn.setdefault(s["strategy"], {"round": [], "mean": [], "ci_low": [], "ci_high": [], "seeds": []})
            d["round"].append(rnd["round"])
            d["mean"].append(s["value"])
            d["ci_low"].append(None if math.isnan(s["ci_low"]) else s["ci_low"])
            d["ci_high"].append(None if math.isnan(s["ci_high"]) else s["ci_high"])
            d["seeds"].append(s["seeds"])
    left = {g: v["round"] for g, v in state["left"].items()}
    colours = colours or strategy_colours([*state.get("strategies", []), *drawn])
    fig, ax = plt.subplots(figsize=(8, 5))
    n = max(1, len(drawn))
    for i, g in enumerate(sorted(drawn)):
        d = drawn[g]
        xs = [r + (i - (n - 1) / 2) * 0.06 for r in d["round"]]  # side by side within a round
        lo = [m - (c if c is not None else m) for m, c in zip(d["mean"], d["ci_low"])]
        hi = [(c if c is not None else m) - m for m, c in zip(d["mean"], d["ci_high"])]
        ax.errorbar(xs, d["mean"], yerr=[lo, hi], marker="o", ms=4, capsize=3, label=g, color=colours[g])
        if g in left and left[g] in d["round"]:
            j = d["round"].index(left[g])
            ax.plot([xs[j]], [d["mean"][j]], marker="x", ms=12, mew=2, color=colours[g])
    rounds = sorted({r for d in drawn.values() for r in d["round"]}) or [1]
    ax.set_xticks(rounds)  # whole rounds only, also when a single round is drawn
    ax.set_xlim(rounds[0] - 0.5, rounds[-1] + 0.5)
    ax.set_xlabel("round")
    ax.set_ylabel(f"{metric} (runs so far)")
    ax.set_title("Race: mean over seeds, 95% interval; x = eliminated")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(
        fig,
        path,
        {
            "metric": metric,
            "strategies": drawn,
            "eliminated_in_round": left,
            "colours": {g: colours[g] for g in drawn},
            "x_ticks": [float(t) for t in ax.get_xticks()],
        },
        dpi=110,
    )
