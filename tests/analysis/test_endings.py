"""How a trial ended, and whether that makes it a finished seed (counterarg.analysis.endings)."""

from __future__ import annotations

from counterarg.analysis.endings import ENDINGS, FINISHED_ENDINGS, is_finished, trial_ending


def test_the_patience_rule_reads_the_runs_own_best_epoch_when_earlier_rows_are_missing():
    """A callback that saw only a resumed trial's later epochs decides by the best epoch the training
    loop wrote into the last row."""
    later = [{"epoch": 6, "m": 0.1, "select/best_epoch": 3}, {"epoch": 7, "m": 0.1, "select/best_epoch": 3}]
    assert trial_ending({"epochs": 20, "patience": 4}, later) == "patience"
    assert trial_ending({"epochs": 20, "patience": 5}, later) == "interrupted"
    assert trial_ending({"epochs": 20}, later, error=True) == "error"
    assert trial_ending({"epochs": 20}, []) == "not started"
    assert trial_ending({"epochs": 7}, later) == "epochs"
    assert [e for e in ENDINGS if is_finished(e)] == list(FINISHED_ENDINGS) == ["epochs", "patience", "scheduler"]
