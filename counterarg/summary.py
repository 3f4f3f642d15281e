"""Summary statistics and plots of a sweep, without Ray.

Why a separate module: the numbers in summary.csv / summary.md are what people quote, so they are
computed here from plain data (one :class:`TrialRecord` per trial: its flat config, its per-epoch
metric rows, its status) where tests can check them by hand. ``counterarg.tune`` turns a Ray Tune
``ResultGrid`` into these records; nothing here imports Ray.

Conventions:

* A trial's *best epoch* is the epoch with the best ``validation/mean/acc@1`` (ties: the earliest);
  its validation and test metrics are reported at that epoch (model selection on validation only).
* A trial's *group* names what it was run with apart from its seed: the strategy (the short label
  of its schedule and the fields that schedule reads, from the registry in :mod:`counterarg.schedules`) plus any other Config field that varies
  across the sweep (e.g. ``margin=0.5 lr=0.001``). Seeds are the repeats within a group.
* ``std`` is the sample standard deviation over seeds (ddof=1); with one seed it is undefined and
  shown as "n/a".
* Ray overhead of a trial = 1 - (time spent inside ``train()``) / (the trial's wall time in Tune),
  summed over all trials for the sweep figure.
* Two views of the test split: all queries (``test/...``) and the unseen queries, whose texts occur
  nowhere in training (``test_unseen/...``). A winner is bolded only where it beats every other
  strategy at p < 0.05 in a paired test over queries (:mod:`counterarg.significance`), using the
  per-query ranks each trial keeps from its best epoch (``TrialRecord.ranks``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import schedules
from .config import Config, FIELD_NAMES
from .significance import PairedTest, SIGNIFICANCE_COLUMNS, compare, verdicts
from .tasks import task_names

DEFAULT_METRIC = Config().select_metric
#: the two views of the test split: name -> metric-key prefix
VIEWS = {"all": "test", "unseen": "test_unseen"}
#: the label of the untrained encoder's row (pooled output, cosine retrieval) in tables and plots
ZERO_SHOT = "zero-shot encoder"
VIEW_TITLES = {"all": "all test queries", "unseen": "unseen test queries (neither text occurs in training)"}
DEFAULT_MODE = "max"
TRAIN_TIME_KEY = "time/train_total_s"  # reported by the trainable: cumulative seconds inside train()
WALL_TIME_KEY = "time_total_s"  # Tune's own cumulative trial time

#: Fields that never name a group: repeats, placement and paths that do not change the method.
NON_GROUP_FIELDS = {"seed", "device", "cache_dir", "embed_batch_size"}


@dataclass
class TrialRecord:
    """One trial as plain data: enough for every number and plot in the summary."""

    trial_id: str
    config: dict[str, Any]  # flat Config fields
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch, epoch ascending
    status: str = "TERMINATED"  # TERMINATED | ERROR | RUNNING | PENDING | PAUSED
    error: str | None = None  # short message for errored trials
    path: str | None = None
    ranks: dict[str, np.ndarray] | None = None  # best_ranks.npz of its checkpoint (train.BestRanks)
    best_checkpoint: str | None = None  # where its best epoch's checkpoint is kept (None: not kept)


# ---------------------------------------------------------------------------------------- labels
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def strategy_label(config: dict[str, Any]) -> str:
    """The short label of a config's random_rate strategy, e.g. ``decay 0.8-0.02`` or ``random``.

    Derived from the config alone through the schedule registry (:func:`schedules.short_label`),
    so a trial's strategy is recoverable from its Config with no side channel. summary.md and the
    console use it; summary.csv also carries every field (:func:`strategy_fields_label`).
    """
    return schedules.short_label(config)


def strategy_fields_label(config: dict[str, Any]) -> str:
    """Every field the strategy's schedule reads: ``decay(rate_start=0.8, rate_step=0.02, rate_floor=0)``."""
    return schedules.full_label(config)


def varying_fields(configs: Sequence[dict[str, Any]]) -> list[str]:
    """Config fields whose value differs between at least two of ``configs`` (sorted)."""
    keys = sorted({k for c in configs for k in c})
    out = []
    for k in keys:
        values = {repr(c.get(k)) for c in configs}
        if len(values) > 1:
            out.append(k)
    return out


def method_label(config: dict[str, Any]) -> str | None:
    """``reference`` when the config trains the reference method (config.method_fields), ``recipe``
    when it trains the default recipe (those fields at their Config defaults), else None."""
    from .config import method_fields

    def norm(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    defaults = Config().to_dict()
    full = {**defaults, **config}
    ref = method_fields()
    if all(norm(full[k]) == norm(v) for k, v in ref.items()):
        return "reference"
    if all(norm(full[k]) == norm(defaults[k]) for k in ref):
        return "recipe"
    return None


def group_label(config: dict[str, Any], varying: Iterable[str]) -> str:
    """Strategy plus every other varying field except the repeat (seed) fields; where the sweep
    mixes methods, prefixed by ``reference``/``recipe`` instead of their fields, e.g.
    ``reference: decay 0.8-0.02`` or ``recipe: fixed 0``."""
    from .config import method_fields

    strategy_fields = schedules.all_fields()
    named = set(method_fields())
    method = method_label(config) if named & set(varying) else None  # only where methods differ
    extra = [k for k in varying if k not in strategy_fields and k not in NON_GROUP_FIELDS and k not in named]
    parts = [f"{method}: {strategy_label(config)}" if method else strategy_label(config)]
    parts += [f"{k}={_fmt(config.get(k))}" for k in extra]
    return " ".join(parts)


# ---------------------------------------------------------------------------------------- tables
def dedupe_history(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch (the last one seen wins: an epoch repeated after a restore), ascending."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for r in rows:
        if r.get("epoch") is None or (isinstance(r["epoch"], float) and math.isnan(r["epoch"])):
            continue
        by_epoch[int(r["epoch"])] = r
    return [by_epoch[e] for e in sorted(by_epoch)]


def best_row(history: Sequence[dict[str, Any]], metric: str = DEFAULT_METRIC,
             mode: str = DEFAULT_MODE) -> dict[str, Any] | None:
    """The epoch row with the best ``metric`` (earliest on ties), or None if none has it."""
    best = None
    for r in history:
        v = r.get(metric)
        if v is None or not isinstance(v, (int, float)) or math.isnan(v):
            continue
        if best is None or (v > best[metric] if mode == "max" else v < best[metric]):
            best = r
    return best


def metric_keys(history: Sequence[dict[str, Any]]) -> list[str]:
    """The validation and test keys (both views) present in ``history``, in a stable order."""
    keys = {k for r in history for k in r
            if k.startswith(("validation/", "test/", "validation_unseen/", "test_unseen/"))}
    return sorted(keys)


def summary_rows(records: Sequence[TrialRecord], metric: str = DEFAULT_METRIC,
                 mode: str = DEFAULT_MODE) -> list[dict[str, Any]]:
    """summary.csv: one row per trial with config, status, best epoch and its val/test metrics."""
    configs = [r.config for r in records]
    varying = varying_fields(configs)
    rows = []
    for rec in records:
        hist = dedupe_history(rec.history)
        best = best_row(hist, metric, mode)
        last = hist[-1] if hist else {}
        row: dict[str, Any] = {
            "trial_id": rec.trial_id,
            "status": rec.status,
            "group": group_label(rec.config, varying),
            "strategy": strategy_label(rec.config),
            "strategy_fields": strategy_fields_label(rec.config),
            "seed": rec.config.get("seed", Config().seed),
            "epochs_done": int(last.get("epoch", 0)) if hist else 0,
            "best_epoch": int(best["epoch"]) if best else None,
            "best_checkpoint": rec.best_checkpoint or "",
            "error": rec.error or "",
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


def group_stats(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per group: n (seeds with a value) and mean/std of each key over its trials' best epochs.

    Trials without a best epoch (errored before the first one) are left out of the statistics.
    """
    out: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    for g, members in groups.items():
        stats: dict[str, Any] = {"n": 0, "trials": len(members)}
        for k in keys:
            vals = [m[k] for m in members if isinstance(m.get(k), (int, float))
                    and not math.isnan(m[k])]
            if vals:
                stats[k] = _mean_std(vals)
                stats["n"] = max(stats["n"], len(vals))
        out[g] = stats
    return out


def test_acc1_keys(ks_task: Sequence[str] | None = None, k: int = 1, view: str = "all") -> list[str]:
    prefix = VIEWS[view]
    return [f"{prefix}/{t}/acc@{k}" for t in (ks_task or task_names())] + [f"{prefix}/mean/acc@{k}"]


# ---------------------------------------------------------------------------------------- significance
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


def best_per_group(rows: Sequence[dict[str, Any]], metric: str = DEFAULT_METRIC) -> dict[str, dict[str, Any]]:
    """Per group, the trial with the highest ``metric`` at its best epoch (ties: lower seed)."""
    out: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: (str(r.get("seed")), r["trial_id"])):
        v = r.get(metric)
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


def _pm(ms: tuple[float, float] | None) -> str:
    if ms is None:
        return "–"
    m, s = ms
    return f"{m:.4f} ± {'n/a' if math.isnan(s) else f'{s:.4f}'}"


def _p(p: float | None) -> str:
    return "n/a" if p is None else ("p < 0.0001" if p < 1e-4 else f"p = {p:.4f}")


def _verdict_cell(v) -> str:
    if v is None:
        return "–"
    if v.runner_up is None:
        return f"{v.best} (only strategy)"
    if v.significant:
        return f"**{v.best}** ({_p(v.p_runner_up)} vs {v.runner_up})"
    return f"no significant winner (best {v.best}, {_p(v.p_runner_up)} vs {v.runner_up})"


def summary_markdown(rows: Sequence[dict[str, Any]], *, title: str = "Sweep summary",
                     metric: str = DEFAULT_METRIC, sweep_wall_s: float | None = None,
                     verdict: dict | None = None, notes: Sequence[str] = (),
                     baseline: dict[str, float] | None = None) -> str:
    """summary.md: per group mean ± std over seeds of each test task's acc@1 in both views; a cell
    is bold only where its group beats every other at p < 0.05 (``verdict`` from :func:`significance`)."""
    verdict = verdict or {}
    lines = [f"# {title}", "",
             f"Test acc@1 at each trial's best epoch by {metric}; mean ± std (sample, ddof=1) over seeds. "
             "Each distinct text counts once in every pool. A value in bold beats every other strategy at p < 0.05 "
             "(paired sign-flip test over test queries, 10,000 resamples, hits averaged over seeds).", ""]
    for view in VIEWS:
        keys = test_acc1_keys(view=view)
        stats = group_stats(rows, keys + [metric])
        if not any(k in s for s in stats.values() for k in keys):
            continue
        lines += [f"## {VIEW_TITLES[view].capitalize()}", ""]
        header = ["strategy", "seeds", metric] + [k.split("/")[1] for k in keys]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for g in sorted(stats):
            st = stats[g]
            cells = [g, f"{st['n']}/{st['trials']}", _pm(st.get(metric))]
            for k in keys:
                c = _pm(st.get(k))
                v = verdict.get((k.split("/")[1], view))
                if v is not None and v.significant and v.best == g:
                    c = f"**{c}**"
                cells.append(c)
            lines.append("| " + " | ".join(cells) + " |")
        if baseline and all(k in baseline for k in keys):
            lines.append("| " + " | ".join([ZERO_SHOT, "–", f"{baseline[metric]:.4f}" if metric in baseline else "–"]
                                           + [f"{baseline[k]:.4f}" for k in keys]) + " |")
        lines.append("")
    if verdict:
        lines += ["## Significance (acc@1, test)", "",
                  "Best strategy per task and view; bold where it beats every other at p < 0.05, with its "
                  "p-value against the runner-up. All pairs are in `significance.csv`.", "",
                  "| task | " + " | ".join(VIEW_TITLES[v].split(" (")[0] for v in VIEWS) + " |",
                  "|---|" + "---|" * len(VIEWS)]
        for t in (*task_names(), "mean"):
            lines.append(f"| {t} | " + " | ".join(_verdict_cell(verdict.get((t, v))) for v in VIEWS) + " |")
        lines.append("")
    best = best_per_group(rows, metric)
    if best:
        lines += ["## Best checkpoint per strategy", "",
                  f"The trial with the highest {metric}, at its best epoch (its state mirrored into the trial's best/ "
                  "folder; `counterarg evaluate|rank|export --checkpoint PATH` take it).", "",
                  "| strategy | seed | best epoch | " + metric + " | checkpoint |", "|---|---|---|---|---|"]
        for g in sorted(best):
            r = best[g]
            lines.append(f"| {g} | {r['seed']} | {r['best_epoch']} | {r[metric]:.4f} | "
                         f"{('`' + r['best_checkpoint'] + '`') if r.get('best_checkpoint') else 'not kept'} |")
        lines.append("")
    for n in notes:
        lines.append(f"- note: {n}")
    errored = [r for r in rows if r["status"] == "ERROR"]
    unfinished = [r for r in rows if r["status"] not in ("TERMINATED", "ERROR")]
    lines.append(f"Trials: {len(rows)} ({len(errored)} errored, {len(unfinished)} unfinished).")
    for r in errored:
        lines.append(f"- ERROR {r['trial_id']} ({r['group']}, seed {r['seed']}, "
                     f"{r['epochs_done']} epochs done): {r['error']}")
    for r in unfinished:
        lines.append(f"- {r['status']} {r['trial_id']} ({r['group']}, seed {r['seed']})")
    ov = overhead(rows)
    lines.append("")
    if ov["overhead"] is not None:
        lines.append(f"Ray overhead: {100 * ov['overhead']:.1f}% of trial wall time outside train() "
                     f"({ov['wall_s'] - ov['train_s']:.1f} s of {ov['wall_s']:.1f} s).")
    if sweep_wall_s is not None:
        lines.append(f"Sweep wall time: {sweep_wall_s:.1f} s.")
    return "\n".join(lines) + "\n"


def console_table(rows: Sequence[dict[str, Any]], *, metric: str = DEFAULT_METRIC, verdict: dict | None = None,
                  baseline: dict[str, float] | None = None) -> str:
    """The sweep's result for a terminal: per strategy, test acc@1 per task (mean over seeds) in
    both views; ``*`` marks a strategy that beats every other at p < 0.05. The full table (± std,
    p-values) is in summary.md."""
    verdict = verdict or {}
    names = [*task_names(), "mean"]
    out = []
    for view in VIEWS:
        keys = test_acc1_keys(view=view)
        stats = group_stats(rows, keys + [metric])
        if not any(k in st for st in stats.values() for k in keys):
            continue
        w = max([len("strategy"), len(ZERO_SHOT)] + [len(g) for g in stats])
        out.append(f"test acc@1, {VIEW_TITLES[view]} (mean over seeds; * = significantly best, p < 0.05)")
        out.append(f"{'strategy':<{w}}  seeds  {'val':>6}" + "".join(f"{n:>7}" for n in names))
        for g in sorted(stats):
            st = stats[g]
            val = f"{st[metric][0]:.3f}" if metric in st else "-"
            cells = []
            for t, k in zip(names, keys):
                v = verdict.get((t, view))
                mark = "*" if v is not None and v.significant and v.best == g else " "
                cells.append(f"{st[k][0]:.3f}{mark}".rjust(7) if k in st else f"{'-':>7}")
            out.append(f"{g:<{w}}  {st['n']:>2}/{st['trials']:<2}  {val:>6}" + "".join(cells))
        if baseline and all(k in baseline for k in keys):
            val = f"{baseline[metric]:.3f}" if metric in baseline else "-"
            out.append(f"{ZERO_SHOT:<{w}}  {'':>5}  {val:>6}" + "".join(f"{baseline[k]:.3f} ".rjust(7) for k in keys))
        out.append("")
    return "\n".join(out)


def write_csv(rows: Sequence[dict[str, Any]], path: Path, columns: Sequence[str] | None = None) -> None:
    import pandas as pd

    from .io import atomic_write_text

    frame = pd.DataFrame(list(rows), columns=list(columns) if columns else None)
    atomic_write_text(Path(path), frame.to_csv(index=False))


# ---------------------------------------------------------------------------------------- plots
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    from matplotlib.ticker import MaxNLocator

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
             "mining/dist_negative": "mean anchor-negative distance"}


def plot_telemetry(records: Sequence[TrialRecord], path: Path) -> bool:
    """The mining telemetry per epoch per group (mean over seeds), one panel per quantity; False
    (nothing written) when no trial reported any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def write_summary(records: Sequence[TrialRecord], out_dir: Path, *, title: str,
                  metric: str = DEFAULT_METRIC, mode: str = DEFAULT_MODE,
                  sweep_wall_s: float | None = None, baseline: dict[str, float] | None = None) -> dict[str, Any]:
    """Write summary.csv, summary.md, significance.csv and the two plots into ``out_dir``.

    Returns {"rows", "markdown", "paths", "comparisons", "verdicts"}.
    """
    from .io import atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(records, metric, mode)
    comparisons, verdict, notes = significance(records, rows)
    md = summary_markdown(rows, title=title, metric=metric, sweep_wall_s=sweep_wall_s, verdict=verdict,
                          notes=notes, baseline=baseline)
    paths = {"csv": out_dir / "summary.csv", "md": out_dir / "summary.md",
             "significance": out_dir / "significance.csv",
             "curves": out_dir / "validation_mean_acc1.png", "bars": out_dir / "test_acc1_per_task.png"}
    write_csv(rows, paths["csv"])
    write_csv(significance_rows(comparisons), paths["significance"], columns=SIGNIFICANCE_COLUMNS)
    atomic_write_text(paths["md"], md)
    plot_curves(records, paths["curves"], metric, baseline)
    plot_task_bars(rows, paths["bars"], baseline)
    if plot_telemetry(records, out_dir / "mining_telemetry.png"):
        paths["telemetry"] = out_dir / "mining_telemetry.png"
    if baseline:
        from .io import atomic_write_json

        paths["baseline"] = out_dir / "zero_shot.json"
        atomic_write_json(paths["baseline"], baseline)
    return {"rows": rows, "markdown": md, "paths": paths, "comparisons": comparisons, "verdicts": verdict,
            "baseline": baseline}


__all__ = ["TrialRecord", "strategy_label", "group_label", "varying_fields", "summary_rows",
           "group_stats", "overhead", "best_per_group", "console_table", "summary_markdown", "write_summary", "significance",
           "strategy_hits", "VIEWS",
           "best_row", "dedupe_history", "DEFAULT_METRIC", "DEFAULT_MODE", "FIELD_NAMES"]
