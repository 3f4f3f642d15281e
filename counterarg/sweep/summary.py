"""The files a sweep leaves: summary.md, summary.csv, significance.csv, the plots, zero_shot.json.

Tables per strategy (mean ± std over seeds of each test task's acc@1, in both views of the test
split) for the markdown file and the terminal, from the rows of :mod:`counterarg.sweep.trials`; a
cell is bold only where its strategy beats every other at p < 0.05 in the paired test over queries
(:mod:`counterarg.sweep.significance`). The figures come from :mod:`counterarg.sweep.plots`.
No Ray here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..io import atomic_write_json, atomic_write_text
from ..tasks import task_names
from .plots import plot_curves, plot_task_bars, plot_telemetry
from .significance import SIGNIFICANCE_COLUMNS, significance, significance_rows
from .trials import (DEFAULT_METRIC, DEFAULT_MODE, VIEW_TITLES, VIEWS, ZERO_SHOT, TrialRecord, best_per_group,
                     group_stats, overhead, summary_rows, test_acc1_keys)


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
                     baseline: dict[str, float] | None = None, sections: Sequence[str] = ()) -> str:
    """summary.md: per group mean ± std over seeds of each test task's acc@1 in both views; a cell
    is bold only where its group beats every other at p < 0.05 (``verdict`` from :func:`counterarg.sweep.significance.significance`).
    ``sections``: more markdown sections a kind of sweep adds (a race's rounds), before the trial list."""
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
    for section in sections:
        lines += [section.rstrip("\n"), ""]
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
    frame = pd.DataFrame(list(rows), columns=list(columns) if columns else None)
    atomic_write_text(Path(path), frame.to_csv(index=False))


def write_summary(records: Sequence[TrialRecord], out_dir: Path, *, title: str,
                  metric: str = DEFAULT_METRIC, mode: str = DEFAULT_MODE,
                  sweep_wall_s: float | None = None, baseline: dict[str, float] | None = None,
                  sections: Sequence[str] = ()) -> dict[str, Any]:
    """Write summary.csv, summary.md, significance.csv and the two plots into ``out_dir``; ``sections``
    go into summary.md (:func:`summary_markdown`).

    Returns {"rows", "markdown", "paths", "comparisons", "verdicts"}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(records, metric, mode)
    comparisons, verdict, notes = significance(records, rows)
    md = summary_markdown(rows, title=title, metric=metric, sweep_wall_s=sweep_wall_s, verdict=verdict,
                          notes=notes, baseline=baseline, sections=sections)
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
        paths["baseline"] = out_dir / "zero_shot.json"
        atomic_write_json(paths["baseline"], baseline)
    return {"rows": rows, "markdown": md, "paths": paths, "comparisons": comparisons, "verdicts": verdict,
            "baseline": baseline}
