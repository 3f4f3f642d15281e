"""The files a sweep leaves: summary.md, summary.csv, significance.csv, the plots, zero_shot.json.

Tables per strategy (mean ± std over finished seeds of each test task's acc@1, in both views of the
test split) for the markdown file and the terminal, from the rows of :mod:`counterarg.analysis.trials`;
a cell is bold only where its strategy beats every other in the seed-aware test, Holm-adjusted
(:mod:`counterarg.analysis.verdicts`, :mod:`counterarg.analysis.significance`). A partial sweep (trials
stopped by Ctrl-C or errored) says so in its first lines and makes no verdict. The figures come from
:mod:`counterarg.analysis.plots`. No Ray here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.io import atomic_write_json, atomic_write_text
from ..core.paths import portable_path
from ..retrieval.arguana import MAIN as ARGUANA_MAIN
from ..retrieval.arguana import VIEW as ARGUANA
from ..retrieval.metrics import metric_key
from ..retrieval.tasks import task_names
from .colours import strategy_colours
from .methods import shared_setting
from .plots import plot_curves, plot_task_bars, plot_telemetry, plot_verdicts
from .provenance import read_sessions, sweep_provenance
from .trials import (
    DEFAULT_METRIC,
    DEFAULT_MODE,
    VIEW_TITLES,
    VIEWS,
    ZERO_SHOT,
    TrialRecord,
    best_per_group,
    group_stats,
    overhead,
    summary_rows,
    test_acc1_keys,
)
from .trials import pm_text as _pm
from .verdicts import SIGNIFICANCE_COLUMNS, Comparison, significance_rows, sweep_verdicts
from .verdicts import need_text as _need
from .verdicts import p_text as _p

TEST_DESCRIPTION = (
    "seed-aware two-level Welch test: the training run is the unit, the null holds the spread "
    "of seeds and of test queries; Holm-adjusted over the pairs of each task and view"
)


def _seeds_cell(st: Mapping[str, Any]) -> str:
    cell = f"{st['n']}/{st['trials']}"
    return cell + (f" ({st['unfinished']} unfinished)" if st.get("unfinished") else "")


def _verdict_cell(v) -> str:
    if v is None:
        return "–"
    if v.partial:
        return "no verdict (partial sweep)"
    if v.runner_up is None:
        return f"{v.best} (only strategy)"
    if v.significant:
        return f"**{v.best}** (Holm {_p(v.p_runner_up)} vs {v.runner_up}, {v.n_seeds[0]}+{v.n_seeds[1]} seeds)"
    if v.p_runner_up is None:
        return f"no significant winner (best {v.best}; fewer than 2 seeds: no seed-aware test)"
    return (
        f"no significant winner at {v.n_seeds[0]}+{v.n_seeds[1]} seeds (best {v.best}, Holm "
        f"{_p(v.p_runner_up)} vs {v.runner_up}; {_need(v)})"
    )


def partial_line(rows: Sequence[dict[str, Any]]) -> str | None:
    """ "partial: N of M trials finished" when any trial is not finished, else None."""
    done = sum(bool(r["finished"]) for r in rows)
    if done == len(rows):
        return None
    return (
        f"partial: {done} of {len(rows)} trials finished. Means are over finished seeds only; no "
        "verdict is made until every trial has finished (`--resume`)."
    )


def _method_sections(by_method: dict) -> list[str]:
    """Per method, which schedule wins under it: its strategies' pairs only, Holm over those."""
    if not by_method:
        return []
    lines = [
        "## Which schedule wins under each method (acc@1, test)",
        "",
        "The same seed-aware test between the strategies of one method only, Holm-adjusted over that "
        "method's pairs (the seeds needed are those of the whole sweep's family, above).",
        "",
    ]
    for method, verdict in by_method.items():
        lines += [f"### {method}", "", *_verdict_table(verdict), ""]
    return ["\n".join(lines)]


def _verdict_table(verdict: dict) -> list[str]:
    """One row per task (and the mean), one verdict cell per view."""
    lines = [
        "| task | " + " | ".join(VIEW_TITLES[v].split(" (")[0] for v in VIEWS) + " |",
        "|---|" + "---|" * len(VIEWS),
    ]
    for t in (*task_names(), "mean"):
        lines.append(f"| {t} | " + " | ".join(_verdict_cell(verdict.get((t, v))) for v in VIEWS) + " |")
    return lines


def _baseline_table(comparisons: Sequence[Comparison], view: str, partial: bool = False) -> list[str]:
    """Each strategy's gap to the zero-shot encoder per task (Holm over strategies), one view; nothing
    bold in a ``partial`` sweep (Holm over the strategies tested so far is not the sweep's family)."""
    rows: dict[str, dict[str, Comparison]] = {}  # strategy -> task -> its test against the encoder
    for c in comparisons:
        if c.strategy_b == ZERO_SHOT and c.view == view:
            rows.setdefault(c.strategy_a, {})[c.task] = c
    if not rows or all(c.p_value is None for by_task in rows.values() for c in by_task.values()):
        return []  # one seed per strategy: no seed-aware test against it
    names = [*task_names(), "mean"]
    out = [
        f"### {VIEW_TITLES[view].capitalize()}",
        "",
        "| strategy | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for g in sorted(rows):
        cells = []
        for t in names:
            test = rows[g].get(t)
            if test is None:
                cells.append("–")
                continue
            cell = f"{test.diff:+.4f} ({_p(test.p_holm)})"
            cells.append(f"**{cell}**" if not partial and test.p_holm is not None and test.p_holm < 0.05 else cell)
        out.append(f"| {g} | " + " | ".join(cells) + " |")
    return out + [""]


def summary_markdown(
    rows: Sequence[dict[str, Any]],
    *,
    title: str = "Sweep summary",
    metric: str = DEFAULT_METRIC,
    sweep_wall_s: float | None = None,
    verdict: dict | None = None,
    notes: Sequence[str] = (),
    baseline: dict[str, float] | None = None,
    comparisons: Sequence = (),
    extra_sections: Sequence[str] = (),
    folder: Path | None = None,
    setting: str | None = None,
) -> str:
    """summary.md: per group mean ± std over finished seeds of each test task's acc@1 in both views;
    a cell is bold only where its group beats every other in the seed-aware test (``verdict`` from
    :func:`counterarg.analysis.verdicts.significance`). Checkpoint paths are shown relative to ``folder``
    (the sweep folder the file is written in)."""
    verdict = verdict or {}
    lines = [f"# {title}", ""]
    partial = partial_line(rows)
    if partial:
        lines += [f"> {partial}", ""]
    lines += [
        f"Test acc@1 at each trial's best epoch by {metric}; mean ± std (sample, ddof=1) over finished seeds. "
        "Each distinct text counts once in every pool. A value in bold beats every other strategy at "
        f"p < 0.05 ({TEST_DESCRIPTION}).",
        "",
    ]
    if setting:  # what the trials train that `counterarg train` with no flags does not
        lines += [f"Every trial trains {setting} (unlike `counterarg train`'s defaults).", ""]
    for view in VIEWS:
        keys = test_acc1_keys(view=view)
        # the ArguAna-like view's headline (retrieval/arguana.py), where the trials report it
        extra = [
            k for k in (metric_key(VIEWS[view], ARGUANA, ARGUANA_MAIN),) if any(r.get(k) is not None for r in rows)
        ]
        stats = group_stats(rows, keys + extra + [metric])
        if not any(k in s for s in stats.values() for k in keys):
            continue
        lines += [f"## {VIEW_TITLES[view].capitalize()}", ""]
        header = (
            ["strategy", "seeds", metric] + [k.split("/")[1] for k in keys] + [f"{ARGUANA} {ARGUANA_MAIN}"] * len(extra)
        )
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for g in sorted(stats):
            st = stats[g]
            cells = [g, _seeds_cell(st), _pm(st.get(metric))]
            for k in keys:
                c = _pm(st.get(k))
                v = verdict.get((k.split("/")[1], view))
                if v is not None and v.significant and v.best == g:
                    c = f"**{c}**"
                cells.append(c)
            cells += [_pm(st.get(k)) for k in extra]
            lines.append("| " + " | ".join(cells) + " |")
        if baseline and all(k in baseline for k in keys):
            lines.append(
                "| "
                + " | ".join(
                    [ZERO_SHOT, "–", f"{baseline[metric]:.4f}" if metric in baseline else "–"]
                    + [f"{baseline[k]:.4f}" for k in keys]
                    + [f"{baseline[k]:.4f}" if k in baseline else "–" for k in extra]
                )
                + " |"
            )
        lines.append("")
    untestable = bool(verdict) and all(v.p_runner_up is None and not v.partial for v in verdict.values())
    if untestable:  # e.g. PBT: every member is one seed
        lines += [
            "## Which strategy trains the better model (acc@1, test)",
            "",
            "No verdict: the seed-aware test needs at least 2 finished seeds per strategy, and no two strategies "
            "have them (replay the strategies over seeds to compare them).",
            "",
        ]
    elif verdict:
        lines += [
            "## Which strategy trains the better model (acc@1, test)",
            "",
            f"Best strategy per task and view by mean; bold where it beats every other strategy ({TEST_DESCRIPTION}), "
            "with its Holm-adjusted p-value against the runner-up and the seeds per strategy. Where no strategy "
            "wins, the seeds per strategy at which the observed gap to the runner-up would be significant with "
            "80% power at the family's Bonferroni level (0.05 / pairs, what Holm asks of the smallest p-value), "
            "from the observed between-seed variance, or that the test queries alone are too few for the gap. "
            "Every pair is in `significance.csv` "
            "(`p_value`: seed-aware; `p_value_queries`: sign-flip test over queries of the seed-averaged hits, "
            "which holds only *given these trained models*).",
            "",
            *_verdict_table(verdict),
            "",
        ]
    base_lines = [line for v in VIEWS for line in _baseline_table(comparisons, v, partial=bool(partial))]
    if base_lines:
        bold = (
            "nothing bold until every trial has finished (strategies with unfinished trials are not tested yet)"
            if partial
            else "bold at p < 0.05"
        )
        lines += [
            f"## Against the {ZERO_SHOT}",
            "",
            "Each strategy's gap in acc@1 to the untrained encoder (pooled output, cosine), seed-aware test with "
            f"the encoder as a fixed value, Holm-adjusted over the strategies; {bold}.",
            "",
        ] + base_lines
    for section in extra_sections:
        lines += [section.rstrip(), ""]
    best = best_per_group(rows, metric)
    unfinished_only = sorted({r["group"] for r in rows} - set(best) - {r["group"] for r in rows if r["finished"]})
    if best or unfinished_only:
        lines += [
            "## Best checkpoint per strategy",
            "",
            f"The finished trial with the highest {metric}, at its best epoch (its state mirrored into the "
            "trial's best/ folder; `counterarg evaluate|rank|export --checkpoint PATH` take it). An unfinished "
            "trial is never named here.",
            "",
            "| strategy | seed | best epoch | " + metric + " | checkpoint |",
            "|---|---|---|---|---|",
        ]
        for g in sorted([*best, *unfinished_only]):
            if g not in best:
                lines.append(f"| {g} | – | – | – | none: no trial of it finished |")
                continue
            r = best[g]
            ck = f"`{portable_path(r['best_checkpoint'], folder)}`" if r.get("best_checkpoint") else "not kept"
            lines.append(f"| {g} | {r['seed']} | {r['best_epoch']} | {r[metric]:.4f} | {ck} |")
        lines.append("")
    for n in notes:
        lines.append(f"- note: {n}")
    errored = [r for r in rows if r["ended"] == "error"]
    unfinished = [r for r in rows if not r["finished"] and r["ended"] != "error"]
    lines.append(f"Trials: {len(rows)} ({len(errored)} errored, {len(unfinished)} unfinished).")
    for r in errored:
        lines.append(
            f"- ERROR {r['trial_id']} ({r['group']}, seed {r['seed']}, {r['epochs_done']} epochs done): {r['error']}"
        )
    for r in rows:
        if r.get("restored"):
            lines.append(f"- RESTORED {r['trial_id']} ({r['group']}, seed {r['seed']}): {r['restores']}")
    for r in unfinished:
        lines.append(
            f"- UNFINISHED ({r['ended']}) {r['trial_id']} ({r['group']}, seed {r['seed']}, "
            f"{r['epochs_done']} of {r['epochs_planned']} epochs done)"
        )
    ov = overhead(rows)
    share, train_s, wall_s = ov["overhead"], ov["train_s"], ov["wall_s"]
    lines.append("")
    if share is not None and train_s is not None and wall_s is not None:  # all three or none
        lines.append(
            f"Ray overhead: {100 * share:.1f}% of trial wall time outside train() "
            f"({wall_s - train_s:.1f} s of {wall_s:.1f} s)."
        )
    if sweep_wall_s is not None:
        lines.append(f"Sweep wall time: {sweep_wall_s:.1f} s.")
    return "\n".join(lines) + "\n"


def console_table(
    rows: Sequence[dict[str, Any]],
    *,
    metric: str = DEFAULT_METRIC,
    verdict: dict | None = None,
    baseline: dict[str, float] | None = None,
) -> str:
    """The sweep's result for a terminal: per strategy, finished/all seeds, validation, test acc@1 per
    task (mean over finished seeds) and the mean ± std, in both views; ``*`` marks a strategy that
    beats every other in the seed-aware test. A partial sweep says so first and marks nothing."""
    verdict = verdict or {}
    names = [*task_names(), "mean"]
    out = []
    partial = partial_line(rows)
    if partial:
        out += [partial, ""]
    for view in VIEWS:
        keys = test_acc1_keys(view=view)
        stats = group_stats(rows, keys + [metric])
        if not any(k in st for st in stats.values() for k in keys):
            continue
        w = max([len("strategy"), len(ZERO_SHOT)] + [len(g) for g in stats])
        sw = max([len("seeds")] + [len(_seeds_cell(st)) for st in stats.values()])
        out.append(
            f"test acc@1, {VIEW_TITLES[view]} (mean over finished seeds; * = significantly best, seed-aware test, Holm)"
        )
        out.append(
            f"{'strategy':<{w}}  {'seeds':>{sw}}  {'val':>6}"
            + "".join(f"{n:>7}" for n in names[:-1])
            + f"  {'mean ± std':>14}"
        )
        for g in sorted(stats):
            st = stats[g]
            val = f"{st[metric][0]:.3f}" if metric in st else "-"
            cells = []
            for t, k in zip(names, keys):
                v = verdict.get((t, view))
                mark = "*" if v is not None and v.significant and v.best == g else " "
                if t == "mean":
                    sd = st[k][1] if k in st else math.nan
                    txt = f"{st[k][0]:.3f}{mark}± {'n/a' if math.isnan(sd) else f'{sd:.3f}'}" if k in st else "-"
                    cells.append(f"  {txt:>14}")
                else:
                    cells.append(f"{st[k][0]:.3f}{mark}".rjust(7) if k in st else f"{'-':>7}")
            out.append(f"{g:<{w}}  {_seeds_cell(st):>{sw}}  {val:>6}" + "".join(cells))
        if baseline and all(k in baseline for k in keys):
            val = f"{baseline[metric]:.3f}" if metric in baseline else "-"
            out.append(
                f"{ZERO_SHOT:<{w}}  {'':>{sw}}  {val:>6}"
                + "".join(f"{baseline[k]:.3f} ".rjust(7) for k in keys[:-1])
                + f"  {baseline[keys[-1]]:.3f}".rjust(16)
            )
        out.append("")
    return "\n".join(out)


def write_csv(rows: Sequence[dict[str, Any]], path: Path, columns: Sequence[str] | None = None) -> None:
    frame = pd.DataFrame(list(rows), columns=list(columns) if columns else None)
    atomic_write_text(Path(path), frame.to_csv(index=False))


def write_summary(
    records: Sequence[TrialRecord],
    out_dir: Path,
    *,
    title: str,
    metric: str = DEFAULT_METRIC,
    mode: str = DEFAULT_MODE,
    sweep_wall_s: float | None = None,
    baseline: dict[str, float] | None = None,
    baseline_ranks: Mapping[str, Any] | None = None,
    extra_sections: Sequence[str] = (),
    progress: bool = False,
) -> dict[str, Any]:
    """Write summary.csv, summary.md, significance.csv and the plots into ``out_dir``.

    ``baseline``: the zero-shot encoder's metrics; ``baseline_ranks``: its per-query test ranks
    (for the comparisons against it). ``progress``: a progress bar over the significance tests (one
    step per task and view) and the plots, the slow parts (a minute or more for 8 strategies).
    Returns {"rows", "markdown", "paths", "comparisons", "verdicts", "baseline", "wall_s" (the sweep's,
    over every recorded session; None when its first run is not recorded), "sessions"}.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(records, metric, mode)
    steps = (len(task_names()) + 1) * len(VIEWS) + len(PLOTS)
    with tqdm(
        total=steps,
        desc="[sweep] building the summary",
        unit="step",
        disable=not progress,
        bar_format="{desc}: {n_fmt}/{total_fmt} steps [{elapsed}]{postfix}",
    ) as bar:

        def tick(what: str) -> None:
            bar.set_postfix_str(what, refresh=False)
            bar.update()

        comparisons, verdict, by_method, notes = sweep_verdicts(
            records, rows, baseline_ranks=baseline_ranks, tick=lambda key: tick(f"significance {key}")
        )
        bar.n = steps - len(PLOTS)  # a view without test ranks has no tests: its steps are done
        extra_sections = [*_method_sections(by_method), *extra_sections]
        sweep_wall_s, provenance = sweep_provenance(records, rows, out_dir, sweep_wall_s)
        md = (
            summary_markdown(
                rows,
                title=title,
                metric=metric,
                sweep_wall_s=sweep_wall_s,
                verdict=verdict,
                notes=notes,
                baseline=baseline,
                comparisons=comparisons,
                extra_sections=extra_sections,
                folder=out_dir,
                setting=shared_setting([r.config for r in records]),
            )
            + "\n"
            + provenance
        )
        paths = {
            "csv": out_dir / "summary.csv",
            "md": out_dir / "summary.md",
            "significance": out_dir / "significance.csv",
            "curves": out_dir / "validation_mean_acc1.png",
            "bars": out_dir / "test_acc1_per_task.png",
        }
        write_csv(rows, paths["csv"])
        write_csv(significance_rows(comparisons), paths["significance"], columns=SIGNIFICANCE_COLUMNS)
        atomic_write_text(paths["md"], md)
        colours = strategy_colours(r["group"] for r in rows)  # one colour per strategy in every figure
        plot_curves(records, paths["curves"], metric, baseline, colours)
        tick("plots: curves")
        plot_task_bars(rows, paths["bars"], baseline, colours)
        tick("plots: tasks")
        if plot_verdicts(comparisons, verdict, out_dir / "verdicts.png"):
            paths["verdicts"] = out_dir / "verdicts.png"
        tick("plots: verdicts")
        if plot_telemetry(records, out_dir / "mining_telemetry.png", colours):
            paths["telemetry"] = out_dir / "mining_telemetry.png"
        tick("plots: telemetry")
        bar.set_postfix_str("written")
    if baseline:
        paths["baseline"] = out_dir / "zero_shot.json"
        atomic_write_json(paths["baseline"], baseline)
    return {
        "rows": rows,
        "markdown": md,
        "paths": paths,
        "comparisons": comparisons,
        "verdicts": verdict,
        "baseline": baseline,
        "wall_s": sweep_wall_s,
        "sessions": max(1, len(read_sessions(out_dir))),
    }


#: the figures :func:`write_summary` draws (one progress step each)
PLOTS = ("curves", "tasks", "verdicts", "telemetry")
