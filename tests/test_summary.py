"""Summary statistics against hand-computed values (no Ray, no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from counterarg.tasks import TASKS
from counterarg.summary import (TrialRecord, best_row, dedupe_history, group_stats,
                                overhead, significance, strategy_fields_label, strategy_label, summary_markdown, summary_rows,
                                varying_fields, write_summary)


def _row(epoch, val, test_base, train_s=None, wall_s=None):
    # the selection metric (Config().select_metric, the unseen view) carries the same value as the full view
    r = {"epoch": epoch, "validation/mean/acc@1": val, "validation_unseen/mean/acc@1": val, "test/mean/acc@1": test_base}
    for i, t in enumerate(TASKS):
        r[f"test/{t}/acc@1"] = test_base + i / 100
        r[f"validation/{t}/acc@1"] = val
    if train_s is not None:
        r["time/train_total_s"] = train_s
        r["time_total_s"] = wall_s
    return r


def _records():
    # fixed: seeds 0,1 -> best epochs 2 (val .5) and 1 (val .6, tie-break irrelevant)
    fixed0 = TrialRecord("a0", {"schedule": "fixed", "rate": 0.8, "seed": 0},
                         [_row(1, 0.4, 0.30), _row(2, 0.5, 0.40, 9.0, 10.0), _row(3, 0.45, 0.90, 9.0, 10.0)])
    fixed1 = TrialRecord("a1", {"schedule": "fixed", "rate": 0.8, "seed": 1},
                         [_row(1, 0.6, 0.20, 4.5, 5.0), _row(2, 0.6, 0.99, 9.5, 10.0)])  # tie -> epoch 1
    rand0 = TrialRecord("b0", {"schedule": "random", "seed": 0}, [_row(1, 0.3, 0.50, 18.0, 20.0)])
    bad = TrialRecord("c0", {"schedule": "decay", "seed": 0}, [], status="ERROR",
                      error="TrainingError: metric train/loss is nan at epoch 1")
    return [fixed0, fixed1, rand0, bad]


def test_strategy_labels_come_from_config_fields():
    assert strategy_label({"schedule": "fixed", "rate": 0.5}) == "fixed 0.5"
    assert strategy_label({"schedule": "random", "rate": 0.3}) == "random"  # rate unused by random
    assert strategy_label({"schedule": "decay"}) == "decay 0.8-0.02"
    # a field outside the short form shows where it is not the default: labels never collide
    assert strategy_label({"schedule": "decay", "rate_floor": 0.1}) == "decay 0.8-0.02 rate_floor=0.1"
    assert strategy_label({"schedule": "table", "rate_table": [0.8, 0.6, 0.4]}) == "table 0.8,0.6,0.4"
    assert strategy_label({"schedule": "table", "rate_table": [0.8, 0.8, 0.8, 0.2]}) == "table 0.8*3,0.2"
    assert strategy_fields_label({"schedule": "decay"}) == "decay(rate_start=0.8, rate_step=0.02, rate_floor=0)"


def test_summary_csv_keeps_every_strategy_field(tmp_path):
    out = write_summary(_records(), tmp_path, title="t")
    by = {r["trial_id"]: r for r in out["rows"]}
    assert by["a0"]["strategy"] == "fixed 0.8" and by["a0"]["strategy_fields"] == "fixed(rate=0.8)"
    import pandas as pd

    df = pd.read_csv(out["paths"]["csv"])
    assert "decay(rate_start=0.8, rate_step=0.02, rate_floor=0)" in set(df["strategy_fields"])
    assert "decay 0.8-0.02" in out["markdown"]


def test_best_epoch_and_dedupe():
    hist = dedupe_history([_row(2, 0.1, 0), _row(1, 0.2, 0), _row(2, 0.7, 0)])  # epoch 2 rerun
    assert [r["epoch"] for r in hist] == [1, 2] and hist[1]["validation/mean/acc@1"] == 0.7
    assert best_row(hist)["epoch"] == 2
    assert best_row([_row(1, 0.5, 0), _row(2, 0.5, 0)])["epoch"] == 1  # ties: earliest
    assert best_row([]) is None


def test_rows_and_stats_by_hand():
    recs = _records()
    assert varying_fields([r.config for r in recs]) == ["rate", "schedule", "seed"]
    rows = summary_rows(recs)
    by = {r["trial_id"]: r for r in rows}
    assert by["a0"]["best_epoch"] == 2 and by["a0"]["test/mean/acc@1"] == pytest.approx(0.40)
    assert by["a1"]["best_epoch"] == 1 and by["a1"]["test/mean/acc@1"] == pytest.approx(0.20)
    assert by["a0"]["group"] == by["a1"]["group"] == "fixed 0.8"
    assert by["c0"]["status"] == "ERROR" and by["c0"]["best_epoch"] is None

    stats = group_stats(rows, ["test/mean/acc@1", "test/sdoc/acc@1", "test/epa/acc@1"])
    m, s = stats["fixed 0.8"]["test/mean/acc@1"]
    assert m == pytest.approx(0.30)
    assert s == pytest.approx(math.sqrt(((0.4 - 0.3) ** 2 + (0.2 - 0.3) ** 2) / 1))  # ddof=1
    m, s = stats["random"]["test/mean/acc@1"]
    assert m == pytest.approx(0.50) and math.isnan(s)
    assert "test/mean/acc@1" not in stats["decay 0.8-0.02"]

    ov = overhead(rows)  # last rows: a0 9/10, a1 9.5/10, b0 18/20 -> 1 - 36.5/40
    assert ov["overhead"] == pytest.approx(1 - 36.5 / 40)


def test_markdown_and_files(tmp_path):
    recs = _records()
    out = write_summary(recs, tmp_path, title="t", sweep_wall_s=12.0)
    md = out["markdown"]
    assert "0.5000 ± n/a" in md and "**" not in md  # no per-query ranks: nothing is called a winner
    assert "0.3000 ± 0.1414" in md  # fixed: mean ± sample std of 0.4 and 0.2
    assert "no per-query ranks kept" in md
    assert "ERROR c0" in md and "nan at epoch 1" in md
    assert "Ray overhead: 8.8%" in md
    for k in ("csv", "md", "curves", "bars"):
        assert out["paths"][k].stat().st_size > 0
    import pandas as pd

    df = pd.read_csv(out["paths"]["csv"])
    assert len(df) == 4 and set(df["status"]) == {"TERMINATED", "ERROR"}
    assert summary_markdown(summary_rows(recs)).count("| ") > 10


# ----------------------------------------------------------------------------- significance
def _ranked_records(n=200, gap=0.3, seed=0):
    """Two strategies x 2 seeds with per-query ranks at their best epoch: ``good`` hits on about
    ``gap`` more queries than ``bad``; ``bad2`` is ``bad``'s exact copy under another strategy."""
    rng = np.random.default_rng(seed)
    unseen = np.arange(n) % 2 == 0
    base = rng.random(n)
    recs = []
    for name, rate, thresh in (("good", 0.5, 0.4 + gap), ("bad", 0.6, 0.4), ("bad2", 0.7, 0.4)):
        for s in (0, 1):
            hits = base < thresh
            ranks = {f"test/{t}": np.where(hits, 1, 2) for t in TASKS}
            ranks["test/unseen"] = unseen
            ranks["epoch"] = np.array(1)
            row = _row(1, 0.5, float(hits.mean()))
            for t in TASKS:
                row[f"test/{t}/acc@1"] = float(hits.mean())
                row[f"test_unseen/{t}/acc@1"] = float(hits[unseen].mean())
            row["test_unseen/mean/acc@1"] = float(hits[unseen].mean())
            recs.append(TrialRecord(f"{name}{s}", {"schedule": "fixed", "rate": rate, "seed": s}, [row],
                                    ranks=ranks))
    return recs


def test_significance_finds_a_planted_gap_and_not_a_copy():
    recs = _ranked_records()
    rows = summary_rows(recs)
    comps, verdict, notes = significance(recs, rows)
    assert not notes
    by = {(c.task, c.view, c.strategy_a, c.strategy_b): c for c in comps}
    big = by[("sdoc", "all", "fixed 0.5", "fixed 0.6")]
    assert big.p_value < 0.01 and big.diff == pytest.approx(0.3, abs=0.08)
    assert big.ci_low < big.diff < big.ci_high and big.ci_low > 0
    same = [c for c in comps if {c.strategy_a, c.strategy_b} == {"fixed 0.6", "fixed 0.7"}]
    assert same and all(c.p_value == 1.0 and c.diff == 0 for c in same)
    v = verdict[("mean", "unseen")]
    assert v.best == "fixed 0.5" and v.significant and v.runner_up in ("fixed 0.6", "fixed 0.7")
    again = significance(recs, rows)[0]
    assert [c.p_value for c in again] == [c.p_value for c in comps]  # seeded


def test_summary_bolds_only_a_significant_winner(tmp_path):
    recs = _ranked_records()
    out = write_summary(recs, tmp_path, title="t")
    md = out["markdown"]
    assert "## All test queries" in md and "## Unseen test queries" in md
    assert "| sdoc | **fixed 0.5** (p < 0.0001 vs fixed 0.6)" in md
    import pandas as pd

    sig = pd.read_csv(out["paths"]["significance"])
    assert list(sig.columns) == ["task", "view", "strategy_a", "strategy_b", "diff", "ci_low", "ci_high", "p_value"]
    assert len(sig) == 9 * 2 * 3  # (8 tasks + mean) x 2 views x 3 pairs
    # the two identical strategies alone: no significant winner, nothing bold
    alone = [r for r in recs if not r.trial_id.startswith("good")]
    md2 = write_summary(alone, tmp_path / "b", title="t")["markdown"]
    assert "no significant winner" in md2 and "**" not in md2.split("## Significance")[0]


def test_ranks_from_another_epoch_are_left_out():
    recs = _ranked_records()
    recs[0].ranks["epoch"] = np.array(3)
    _, _, notes = significance(recs, summary_rows(recs))
    assert any("good0" in n and "epoch 3" in n for n in notes)


def test_zero_shot_baseline_in_tables_and_files(tmp_path):
    recs = _ranked_records()
    base = {f"test/{t}/acc@1": 0.123 for t in (*TASKS, "mean")}
    base |= {f"test_unseen/{t}/acc@1": 0.111 for t in (*TASKS, "mean")}
    base["validation/mean/acc@1"] = base["validation_unseen/mean/acc@1"] = 0.5
    out = write_summary(recs, tmp_path, title="t", baseline=base)
    md = out["markdown"]
    assert "| zero-shot encoder | – | 0.5000 | 0.1230 |" in md and "| zero-shot encoder | – | 0.5000 | 0.1110 |" in md
    import json

    assert json.loads(out["paths"]["baseline"].read_text()) == base
    from counterarg.summary import console_table

    assert "zero-shot encoder" in console_table(out["rows"], baseline=base)


def test_mining_telemetry_is_plotted_when_trials_report_it(tmp_path):
    import matplotlib.image as mpimg

    recs = _ranked_records()
    assert "telemetry" not in write_summary(recs, tmp_path / "none", title="t")["paths"]  # nothing to plot
    for i, r in enumerate(recs):
        r.history[0]["mining/share_points"] = 0.5 + i / 100
        r.history[0]["mining/share_hard"] = 1.0
    out = write_summary(recs, tmp_path / "some", title="t")
    img = mpimg.imread(out["paths"]["telemetry"])
    assert img.ndim == 3 and img.std() > 0.05
