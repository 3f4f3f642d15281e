"""Tune's results as trial records (counterarg.sweep.records), from a hand-made ResultGrid."""

from __future__ import annotations

from types import SimpleNamespace as NS

from counterarg.config import REFERENCE_METHOD
from counterarg.sweep.records import collect_records
from counterarg.sweep.spaces import REFERENCE_FIELDS


def test_a_trial_that_never_started_keeps_its_strategy_in_the_summary():
    """After Ctrl-C, Tune's result for a trial that never started has no config; its strategy comes
    from Tune's trial list (not the Config defaults), and the sweep's shared fields from ``base``."""
    from types import SimpleNamespace as NS

    variant = {**REFERENCE_FIELDS, "schedule": "random", "seed": 0}
    res = NS(config=None, path="/x/exp/trial_ab12_random_seed0", metrics_dataframe=None, error=None, metrics={},
             filesystem=None, best_checkpoints=[], checkpoint=None)

    class Grid(list):
        _experiment_analysis = NS(trials=[NS(trial_id="ab12", config=variant)])

    rec, = collect_records(Grid([res]), base={"epochs": 7})
    assert rec.config["schedule"] == "random" and rec.config["loss"] == REFERENCE_METHOD["loss"]
    assert rec.config["epochs"] == 7 and rec.status == "UNFINISHED" and rec.history == []
