"""The summary files (counterarg.analysis.summary): summary.md/.csv, significance.csv, zero-shot rows."""

from __future__ import annotations

import re

import numpy as np
import pytest

from counterarg.analysis.plots import read_plot_data
from counterarg.analysis.summary import console_table, summary_markdown, write_summary
from counterarg.analysis.trials import summary_rows
from counterarg.retrieval.tasks import TASKS

from .conftest import ranked_records, summary_records


def test_summary_csv_keeps_every_strategy_field(tmp_path):
    out = write_summary(summary_records(), tmp_path, title="t")
    by = {r["trial_id"]: r for r in out["rows"]}
    assert by["a0"]["strategy"] == "fixed 0.8" and by["a0"]["strategy_fields"] == "fixed(rate=0.8)"
    import pandas as pd

    df = pd.read_csv(out["paths"]["csv"])
    assert "decay(rate_start=0.8, rate_step=0.02, rate_floor=0)" in set(df["strategy_fields"])
    assert "decay 0.8-0.02" in out["markdown"]


def test_markdown_and_files(tmp_path):
    recs = summary_records()
    out = write_summary(recs, tmp_path, title="t", sweep_wall_s=12.0)
    md = out["markdown"]
    assert "0.5000 ± n/a" in md and "**" not in md  # no per-query ranks: nothing is called a winner
    assert "0.3000 ± 0.1414" in md  # fixed: mean ± sample std of 0.4 and 0.2
    assert "no per-query ranks kept" in md
    assert "ERROR c0" in md and "nan at epoch 1" in md
    assert "Ray overhead: 8.8%" in md
    import pandas as pd

    df = pd.read_csv(out["paths"]["csv"])
    assert len(df) == 4 and set(df["status"]) == {"TERMINATED", "ERROR"}
    by_trial = df.set_index("trial_id")
    assert by_trial.loc["a0", "best_epoch"] == 2 and by_trial.loc["a1", "best_epoch"] == 1  # tie: the first
    assert by_trial.loc["a0", "test/sdoc/acc@1"] == pytest.approx(0.40)  # its best epoch's row
    # the figures, read back: the numbers they draw, against the records computed by hand
    curves = read_plot_data(out["paths"]["curves"])
    assert curves["metric"] == "validation_unseen/mean/acc@1"
    by_epochs = {tuple(c["epochs"]): c for c in curves["curves"].values()}
    assert set(by_epochs) == {(1, 2, 3), (1,)}  # fixed (2 seeds, 3 and 2 epochs) and random; the errored none
    fixed = by_epochs[(1, 2, 3)]
    assert fixed["mean"] == pytest.approx([0.5, 0.55, 0.45])
    assert fixed["min"] == pytest.approx([0.4, 0.5, 0.45]) and fixed["max"] == pytest.approx([0.6, 0.6, 0.45])
    assert by_epochs[(1,)]["mean"] == pytest.approx([0.3])
    bars = read_plot_data(out["paths"]["bars"])["all"]
    assert len(bars) == 2
    fixed_bars = next(b for b in bars.values() if b["test/sdoc/acc@1"][0] < 0.45)
    assert fixed_bars["test/sdoc/acc@1"] == pytest.approx([0.30, 0.1414], abs=1e-4)  # best epochs 2 and 1
    assert fixed_bars["test/epa/acc@1"] == pytest.approx([0.37, 0.1414], abs=1e-4)
    random_bars = next(b for b in bars.values() if b is not fixed_bars)
    assert random_bars["test/sdoc/acc@1"] == pytest.approx([0.50, 0.0])  # one seed: no error bar
    assert summary_markdown(summary_rows(recs)).count("| ") > 10


@pytest.mark.slow
def test_summary_bolds_only_a_significant_winner(tmp_path):
    recs = ranked_records()
    out = write_summary(recs, tmp_path, title="t")
    md = out["markdown"]
    assert "## All test queries" in md and "## Unseen test queries" in md
    assert "| sdoc | **recipe: fixed 0.5** (Holm p < 0.0001 vs recipe: fixed 0.6, 2+2 seeds)" in md
    import pandas as pd

    sig = pd.read_csv(out["paths"]["significance"])
    assert list(sig.columns) == [
        "task",
        "view",
        "strategy_a",
        "strategy_b",
        "n_seeds_a",
        "n_seeds_b",
        "diff",
        "ci_low",
        "ci_high",
        "p_value",
        "p_holm",
        "seeds_needed",
        "query_limited",
        "p_value_queries",
        "ci_low_queries",
        "ci_high_queries",
        "significant",
    ]
    assert len(sig) == 9 * 2 * 3  # (8 tasks + mean) x 2 views x 3 pairs
    assert set(sig["n_seeds_a"]) == set(sig["n_seeds_b"]) == {2}
    # the two identical strategies alone: no significant winner, nothing bold
    alone = [r for r in recs if not r.trial_id.startswith("good")]
    md2 = write_summary(alone, tmp_path / "b", title="t")["markdown"]
    assert "no significant winner at 2+2 seeds" in md2 and "**" not in md2.split("## Which strategy")[0]


@pytest.mark.slow
def test_a_partial_sweep_says_so_and_crowns_no_one(tmp_path):
    recs = ranked_records()
    recs[-1].ended = "interrupted"  # Ctrl-C stopped one bad2 trial (Tune calls it TERMINATED too)
    out = write_summary(recs, tmp_path, title="t")
    md = out["markdown"]
    assert "> partial: 5 of 6 trials finished." in md
    assert "**" not in md.split("## Which strategy")[0]  # no bold cell
    assert "| bad2 | 1/2 (1 unfinished) |" in md.replace("recipe: fixed 0.7", "bad2")
    assert "no verdict (partial sweep)" in md and "UNFINISHED (interrupted)" in md
    assert "verdicts" not in out["paths"] and not (tmp_path / "verdicts.png").exists()  # no figure of one either
    console = console_table(out["rows"], verdict=out["verdicts"])
    assert console.startswith("partial: 5 of 6 trials finished") and not re.search(r"\d\*", console)
    assert " 1/2 (1 unfinished) " in console
    # against a zero-shot encoder that misses every query: bold once every trial has finished, not before
    n = len(recs[0].ranks["test/sdoc"])
    zero = {**{f"test/{t}": np.full(n, 5) for t in TASKS}, "test/unseen": recs[0].ranks["test/unseen"]}
    partial_md = write_summary(recs, tmp_path / "p", title="t", baseline_ranks=zero)["markdown"]
    assert "## Against the zero-shot encoder" in partial_md and "**" not in partial_md
    recs[-1].ended = "epochs"
    assert "**+" in write_summary(recs, tmp_path / "f", title="t", baseline_ranks=zero)["markdown"]


def test_zero_shot_baseline_in_tables_and_files(tmp_path):
    recs = ranked_records()
    base = {f"test/{t}/acc@1": 0.123 for t in (*TASKS, "mean")}
    base |= {f"test_unseen/{t}/acc@1": 0.111 for t in (*TASKS, "mean")}
    base["validation/mean/acc@1"] = base["validation_unseen/mean/acc@1"] = 0.5
    out = write_summary(recs, tmp_path, title="t", baseline=base)
    md = out["markdown"]
    assert "| zero-shot encoder | – | 0.5000 | 0.1230 |" in md and "| zero-shot encoder | – | 0.5000 | 0.1110 |" in md
    import json

    assert json.loads(out["paths"]["baseline"].read_text()) == base

    assert "zero-shot encoder" in console_table(out["rows"], baseline=base)


def test_summary_names_checkpoints_relative_to_the_sweep_folder(tmp_path):
    """summary.md named each best checkpoint by this machine's absolute path."""
    from counterarg.core.paths import absolute_paths_in

    recs = summary_records()
    for r in recs:
        r.best_checkpoint = str(tmp_path / f"trial_{r.trial_id}" / "best")
    md = write_summary(recs, tmp_path, title="t")["markdown"]
    assert "`trial_a1/best`" in md and "`trial_b0/best`" in md  # a1: fixed's best seed
    assert not absolute_paths_in(md), absolute_paths_in(md)


def test_strategies_are_tested_against_the_zero_shot_ranks(tmp_path):
    recs = ranked_records(gap=0.3)
    bad = recs[2].ranks  # the zero-shot encoder ranks like "bad": good beats it, bad2 ties it
    base_ranks = {k: v for k, v in bad.items() if k != "epoch"}
    out = write_summary(recs, tmp_path, title="t", baseline_ranks=base_ranks)
    zs = [c for c in out["comparisons"] if c.strategy_b == "zero-shot encoder"]
    assert len(zs) == 9 * 2 * 3 and {c.n_seeds_b for c in zs} == {0}
    good = next(c for c in zs if (c.task, c.view, c.strategy_a) == ("sdoc", "all", "recipe: fixed 0.5"))
    tie = next(c for c in zs if (c.task, c.view, c.strategy_a) == ("sdoc", "all", "recipe: fixed 0.7"))
    assert good.significant and good.diff == pytest.approx(0.3, abs=0.08) and tie.diff == 0 and tie.p_value == 1.0
    assert "## Against the zero-shot encoder" in out["markdown"]
    verdicts_only = {c.strategy_b for c in out["comparisons"]} - {"zero-shot encoder"}
    assert out["verdicts"][("sdoc", "all")].best == "recipe: fixed 0.5" and verdicts_only


def test_one_seed_per_strategy_gives_one_line_not_a_table_of_n_a(tmp_path):
    recs = [r for r in ranked_records() if r.trial_id.endswith("0")]  # seed 0 of each strategy
    bad = recs[1].ranks
    out = write_summary(recs, tmp_path, title="t", baseline_ranks={k: v for k, v in bad.items() if k != "epoch"})
    md = out["markdown"]
    assert "No verdict: the seed-aware test needs at least 2 finished seeds per strategy" in md
    assert "no significant winner" not in md and "## Against the zero-shot encoder" not in md


def test_a_sweep_of_two_methods_says_which_schedule_wins_under_each(tmp_path):
    from counterarg.analysis.methods import labelled
    from counterarg.config import method_fields

    recs = ranked_records()
    for r in recs[4:]:  # "bad2" trains the reference method: a family of one, no verdict of its own
        r.config = labelled({**r.config, **method_fields()}, "reference")
    for r in recs[:4]:
        r.config = labelled({**r.config, "rate": {"good": 0.5, "bad": 0.6}[r.trial_id[:-1]]}, "recipe")
    out = write_summary(recs, tmp_path, title="t")
    md = out["markdown"]
    assert "## Which schedule wins under each method" in md and "### recipe" in md and "### reference" not in md
    section = md.split("### recipe")[1].split("##")[0]
    assert "| sdoc | **recipe: fixed 0.5** (Holm p < 0.0001 vs recipe: fixed 0.6, 2+2 seeds)" in section


def test_the_arguana_like_views_headline_is_a_column_where_trials_report_it(tmp_path):
    """summary.md's per-view tables gain an `arguana ndcg@10` column (mean ± std over seeds of the best
    epoch's value, and the zero-shot encoder's), and only when the trials' rows carry the key."""
    recs = ranked_records()
    assert "arguana ndcg@10" not in write_summary(recs, tmp_path / "a", title="t")["markdown"]
    for rec in recs:
        for row in rec.history:
            row["test/arguana/ndcg@10"], row["test_unseen/arguana/ndcg@10"] = 0.625, 0.5
    base = {f"{s}/{t}/acc@1": 0.1 for s in ("test", "test_unseen") for t in (*TASKS, "mean")}
    base |= {"test/arguana/ndcg@10": 0.52, "test_unseen/arguana/ndcg@10": 0.51}
    md = write_summary(recs, tmp_path / "b", title="t", baseline=base)["markdown"]
    tables = [ln for ln in md.splitlines() if ln.startswith("| strategy | seeds |")]
    assert len(tables) == 2 and all(ln.rstrip(" |").endswith("arguana ndcg@10") for ln in tables)
    assert "0.6250 ± 0.0000" in md and "0.5000 ± 0.0000" in md
    zero = [ln for ln in md.splitlines() if ln.startswith("| zero-shot encoder |")]
    assert zero[0].endswith("| 0.5200 |") and zero[1].endswith("| 0.5100 |")
