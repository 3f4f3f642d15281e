"""The HParams table of a sweep (counterarg.sweep.hparams_table): columns, their order, metrics."""

from __future__ import annotations

from counterarg.analysis.methods import labelled
from counterarg.config import FROZEN_RECIPE
from counterarg.sweep.hparams_table import column_values, metric_keys, table_columns


def test_a_search_names_its_method_and_puts_its_searched_fields_after_the_schedule():
    cfg = labelled({**FROZEN_RECIPE, "lr": 0.0011, "margin": 0.3, "seed": 2}, "recipe")  # as the search makes it
    columns = table_columns([cfg], ["lr", "margin", "seed", "device"])
    assert [c.name for c in columns] == [
        "01 method",
        "02 strategy",
        "03 seed",
        "04 schedule",
        "05 rate",
        "06 lr",
        "07 margin",
        "08 ended",
    ]  # seed once, placement left out
    values = column_values(columns, cfg)
    # the method its other fields train (the summary's group: "recipe lr=0.0011 margin=0.3"), not "none"
    assert values == {
        "01 method": "recipe",
        "02 strategy": "fixed 0",
        "03 seed": "2",
        "04 schedule": "fixed",
        "05 rate": 0.0,
        "06 lr": 0.0011,
        "07 margin": 0.3,
    }


def test_metrics_start_with_the_sweep_metric_and_the_unseen_test_mean():
    keys = metric_keys("validation/mean/mrr")
    assert keys[:3] == ["validation/mean/mrr", "test_unseen/mean/acc@1", "validation/mean/acc@1"]
    assert metric_keys("test_unseen/mean/acc@1")[:2] == ["test_unseen/mean/acc@1", "test/mean/acc@1"]
    assert len(keys) == len(set(keys)) and "validation_unseen/sdoc/acc@1" in keys
