"""What a running sweep prints (counterarg.sweep.console), from hand-made trials."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from counterarg.config import method_fields
from counterarg.sweep.console import DropRestoreHint, SweepReporter


def _trial(tid, config, status, epoch=None, best=None):
    return SimpleNamespace(trial_id=tid, config=config, status=status,
                           last_result={"epoch": epoch} if epoch else {},
                           metric_analysis={"m": {"max": best}} if best is not None else {})


def test_status_table_names_strategy_seed_state_epoch_and_best():
    rep = SweepReporter("m", every_s=3600)
    trials = [_trial("a", {"schedule": "decay", "seed": 1}, "RUNNING", 2, 0.25),
              _trial("b", {**method_fields(), "schedule": "random", "seed": 0}, "PENDING"),
              _trial("c", {"schedule": "no-such"}, "ERROR"),
              _trial("d", {"seed": 2}, "TERMINATED", 9, 0.5)]
    assert rep.should_report(trials)
    table = rep.table(trials)
    lines = table.splitlines()
    assert "1 error, 1 pending, 1 running, 1 terminated" in lines[0]
    assert lines[1].split() == ["strategy", "seed", "state", "epoch", "best", "m"]
    # the one trial label (counterarg.sweep.methods.trial_label): the default recipe is "recipe"
    assert any(ln.split() == ["recipe:", "decay", "0.8-0.02", "1", "running", "2", "0.2500"] for ln in lines)
    assert any(ln.split() == ["reference:", "random", "0", "pending", "-", "-"] for ln in lines)
    assert any(ln.split() == ["recipe", "2", "terminated", "9", "0.5000"] for ln in lines)
    assert any(ln.startswith("?") for ln in lines)  # a config that does not parse: no label, no crash
    rep.report(trials, done=False)
    assert not rep.should_report(trials)  # nothing changed, within every_s
    trials[1].status = "RUNNING"
    assert rep.should_report(trials)


def test_the_restore_hint_is_dropped():
    keep = logging.LogRecord("ray.tune.tune", logging.INFO, "", 0, "Trial finished", None, None)
    drop = logging.LogRecord("ray.tune.tune", logging.INFO, "", 0, "Resume with Tuner.restore(path)", None, None)
    assert DropRestoreHint().filter(keep) and not DropRestoreHint().filter(drop)
