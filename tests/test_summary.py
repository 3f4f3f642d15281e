"""Summary statistics against hand-computed values (no Ray, no training)."""

from __future__ import annotations

import math

import pytest

from counterarg.summary import (TASKS, TrialRecord, best_row, dedupe_history, group_stats,
                                overhead, strategy_label, summary_markdown, summary_rows,
                                varying_fields, winners, write_summary)


def _row(epoch, val, test_base, train_s=None, wall_s=None):
    r = {"epoch": epoch, "validation/mean/acc@1": val, "test/mean/acc@1": test_base}
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
    assert strategy_label({"schedule": "fixed", "rate": 0.5}) == "fixed(rate=0.5)"
    assert strategy_label({"schedule": "random", "rate": 0.3}) == "random"  # rate unused by random
    assert strategy_label({"schedule": "decay"}) == "decay(rate_start=0.8, rate_step=0.02, rate_floor=0)"


def test_best_epoch_and_dedupe():
    hist = dedupe_history([_row(2, 0.1, 0), _row(1, 0.2, 0), _row(2, 0.7, 0)])  # epoch 2 rerun
    assert [r["epoch"] for r in hist] == [1, 2] and hist[1]["validation/mean/acc@1"] == 0.7
    assert best_row(hist)["epoch"] == 2
    assert best_row([_row(1, 0.5, 0), _row(2, 0.5, 0)])["epoch"] == 1  # ties: earliest
    assert best_row([]) is None


def test_rows_stats_winners_by_hand():
    recs = _records()
    assert varying_fields([r.config for r in recs]) == ["rate", "schedule", "seed"]
    rows = summary_rows(recs)
    by = {r["trial_id"]: r for r in rows}
    assert by["a0"]["best_epoch"] == 2 and by["a0"]["test/mean/acc@1"] == pytest.approx(0.40)
    assert by["a1"]["best_epoch"] == 1 and by["a1"]["test/mean/acc@1"] == pytest.approx(0.20)
    assert by["a0"]["group"] == by["a1"]["group"] == "fixed(rate=0.8)"
    assert by["c0"]["status"] == "ERROR" and by["c0"]["best_epoch"] is None

    stats = group_stats(rows, ["test/mean/acc@1", "test/sdoc/acc@1", "test/epa/acc@1"])
    m, s = stats["fixed(rate=0.8)"]["test/mean/acc@1"]
    assert m == pytest.approx(0.30)
    assert s == pytest.approx(math.sqrt(((0.4 - 0.3) ** 2 + (0.2 - 0.3) ** 2) / 1))  # ddof=1
    m, s = stats["random"]["test/mean/acc@1"]
    assert m == pytest.approx(0.50) and math.isnan(s)
    assert "test/mean/acc@1" not in stats["decay(rate_start=0.8, rate_step=0.02, rate_floor=0)"]
    w = winners(stats, ["test/mean/acc@1", "test/sdoc/acc@1"])
    assert w["test/mean/acc@1"] == ["random"]  # 0.50 > 0.30
    assert w["test/sdoc/acc@1"] == ["random"]

    ov = overhead(rows)  # last rows: a0 9/10, a1 9.5/10, b0 18/20 -> 1 - 36.5/40
    assert ov["overhead"] == pytest.approx(1 - 36.5 / 40)


def test_markdown_and_files(tmp_path):
    recs = _records()
    out = write_summary(recs, tmp_path, title="t", sweep_wall_s=12.0)
    md = out["markdown"]
    assert "**0.5000 ± n/a**" in md  # random wins test mean
    assert "0.3000 ± 0.1414" in md  # fixed: mean ± sample std of 0.4 and 0.2
    assert "ERROR c0" in md and "nan at epoch 1" in md
    assert "Ray overhead: 8.8%" in md
    for k in ("csv", "md", "curves", "bars"):
        assert out["paths"][k].stat().st_size > 0
    import pandas as pd

    df = pd.read_csv(out["paths"]["csv"])
    assert len(df) == 4 and set(df["status"]) == {"TERMINATED", "ERROR"}
    assert summary_markdown(summary_rows(recs)).count("| ") > 10
