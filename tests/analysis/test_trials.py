"""A sweep's trials as plain data (counterarg.analysis.trials) against hand-computed values (no Ray, no training)."""

from __future__ import annotations

import math

import pytest

from counterarg.analysis.methods import labelled
from counterarg.analysis.trials import (
    dedupe_history,
    group_label,
    group_labels,
    group_stats,
    overhead,
    strategy_fields_label,
    strategy_label,
    summary_rows,
    varying_fields,
)
from counterarg.config import method_fields
from counterarg.evaluation.selection import best_row

from .conftest import epoch_row, summary_records


def test_strategy_labels_come_from_config_fields():
    assert strategy_label({"schedule": "fixed", "rate": 0.5}) == "fixed 0.5"
    assert strategy_label({"schedule": "random", "rate": 0.3}) == "random"  # rate unused by random
    assert strategy_label({"schedule": "decay"}) == "decay 0.8-0.02"
    # a field outside the short form shows where it is not the default: labels never collide
    assert strategy_label({"schedule": "decay", "rate_floor": 0.1}) == "decay 0.8-0.02 rate_floor=0.1"
    assert strategy_label({"schedule": "table", "rate_table": [0.8, 0.6, 0.4]}) == "table 0.8,0.6,0.4"
    assert strategy_label({"schedule": "table", "rate_table": [0.8, 0.8, 0.8, 0.2]}) == "table 0.8*3,0.2"
    assert strategy_fields_label({"schedule": "decay"}) == "decay(rate_start=0.8, rate_step=0.02, rate_floor=0)"


def test_group_label_is_the_carried_name_plus_other_varying_settings():
    """The name a config carries (made with its variant, methods.labelled) plus every other varying
    setting; a config no sweep named shows its schedule."""
    ref = method_fields()
    assert group_label(labelled({}, "recipe"), ["seed", "label", "method"]) == "recipe"
    assert group_label(labelled({"margin": 0.5}, "recipe"), ["margin", "seed", "device"]) == "recipe margin=0.5"
    # the seed and every machine field (the index and its options too: every backend gives the same
    # neighbours) never name a group: their roles say so
    assert (
        group_label(
            labelled({"index": "balltree", "leaf_size": 8}, "recipe"),
            ["index", "leaf_size", "block_size", "shards", "cache_dir", "seed"],
        )
        == "recipe"
    )
    assert (
        group_label(labelled({**ref, "schedule": "decay"}, "reference"), ["schedule", "seed"])
        == "reference: decay 0.8-0.02"
    )
    assert group_label(labelled({"schedule": "decay"}, "recipe"), ["schedule"]) == "recipe: decay 0.8-0.02"
    lr_search = labelled({**ref, "schedule": "fixed", "rate": 0.8}, "reference")  # a search over lr and margin
    lr_search.update(lr=0.002, margin=0.7)
    assert group_label(lr_search, ["lr", "margin"]) == "reference: fixed 0.8 lr=0.002 margin=0.7"
    assert (
        group_label(
            {**ref, "schedule": "fixed", "rate": 0.8, "lr": 0.002, "margin": 0.7, "head": "identity"}, ["lr", "margin"]
        )
        == "fixed 0.8 lr=0.002 margin=0.7"
    )  # named by no sweep: its schedule
    # the groups among configs: the settings that vary among the configs of one name, not across names
    methods = [
        labelled({**ref, "schedule": "fixed", "rate": 0.8}, "reference"),
        labelled({"schedule": "decay"}, "recipe"),
    ]
    assert group_labels(methods) == ["reference: fixed 0.8", "recipe: decay 0.8-0.02"]
    axis = [labelled({"margin": m, "seed": s}, "recipe") for m in (0.5, 1.0) for s in (0, 1)]
    assert group_labels(axis) == ["recipe margin=0.5"] * 2 + ["recipe margin=1"] * 2


def test_best_epoch_and_dedupe():
    hist = dedupe_history([epoch_row(2, 0.1, 0), epoch_row(1, 0.2, 0), epoch_row(2, 0.7, 0)])  # epoch 2 rerun
    assert [r["epoch"] for r in hist] == [1, 2] and hist[1]["validation/mean/acc@1"] == 0.7
    assert best_row(hist)["epoch"] == 2
    assert best_row([epoch_row(1, 0.5, 0), epoch_row(2, 0.5, 0)])["epoch"] == 1  # ties: earliest
    assert best_row([]) is None


def test_dedupe_history_keeps_the_last_report_of_each_epoch():
    rows = [
        {"epoch": 1, "v": 0.1},
        {"epoch": 2, "v": 0.2},
        {"epoch": 3, "v": 0.3},
        {"epoch": 3, "v": 0.35},
        {"epoch": 4, "v": 0.4},
    ]
    assert [(r["epoch"], r["v"]) for r in dedupe_history(rows)] == [(1, 0.1), (2, 0.2), (3, 0.35), (4, 0.4)]


def test_rows_and_stats_by_hand():
    recs = summary_records()
    assert varying_fields([r.config for r in recs]) == ["label", "rate", "schedule", "seed"]
    rows = summary_rows(recs)
    by = {r["trial_id"]: r for r in rows}
    assert by["a0"]["best_epoch"] == 2 and by["a0"]["test/mean/acc@1"] == pytest.approx(0.40)
    assert by["a1"]["best_epoch"] == 1 and by["a1"]["test/mean/acc@1"] == pytest.approx(0.20)
    assert by["a0"]["group"] == by["a1"]["group"] == "recipe: fixed 0.8"  # sparse configs: the recipe's fields
    assert by["a0"]["strategy"] == "fixed 0.8"  # the schedule alone
    assert by["c0"]["status"] == "ERROR" and by["c0"]["best_epoch"] is None

    stats = group_stats(rows, ["test/mean/acc@1", "test/sdoc/acc@1", "test/epa/acc@1"])
    m, s = stats["recipe: fixed 0.8"]["test/mean/acc@1"]
    assert m == pytest.approx(0.30)
    assert s == pytest.approx(math.sqrt(((0.4 - 0.3) ** 2 + (0.2 - 0.3) ** 2) / 1))  # ddof=1
    m, s = stats["recipe: random"]["test/mean/acc@1"]
    assert m == pytest.approx(0.50) and math.isnan(s)
    assert "test/mean/acc@1" not in stats["recipe: decay 0.8-0.02"]

    ov = overhead(rows)  # last rows: a0 9/10, a1 9.5/10, b0 18/20 -> 1 - 36.5/40
    assert ov["overhead"] == pytest.approx(1 - 36.5 / 40)
