"""What a running sweep prints (counterarg.sweep.console), from hand-made trials."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from counterarg.analysis.methods import labelled
from counterarg.config import method_fields
from counterarg.sweep.console import DropRestoreHint, SweepReporter


def _trial(tid, config, status, epoch=None, best=None):
    return SimpleNamespace(trial_id=tid, config=config, status=status,
                           last_result={"epoch": epoch} if epoch else {},
                           metric_analysis={"m": {"max": best}} if best is not None else {})


def test_status_table_names_strategy_seed_state_epoch_and_best():
    rep = SweepReporter("m", every_s=3600)
    trials = [_trial("a", labelled({"schedule": "decay", "seed": 1}, "recipe"), "RUNNING", 2, 0.25),
              _trial("b", labelled({**method_fields(), "schedule": "random", "seed": 0}, "reference"), "PENDING"),
              _trial("c", {"schedule": "no-such"}, "ERROR"),
              _trial("d", labelled({"seed": 2}, "recipe"), "TERMINATED", 9, 0.5)]
    assert rep.should_report(trials)
    table = rep.table(trials)
    lines = table.splitlines()
    assert "1 error, 1 pending, 1 running, 1 terminated" in lines[0]
    assert lines[1].split() == ["strategy", "seed", "state", "epoch", "best", "m"]
    # the name each trial carries (made with its variant, methods.variant_label): the default recipe is "recipe"
    assert any(ln.split() == ["recipe:", "decay", "0.8-0.02", "1", "running", "2", "0.2500"] for ln in lines)
    assert any(ln.split() == ["reference:", "random", "0", "pending", "-", "-"] for ln in lines)
    assert any(ln.split() == ["recipe", "2", "terminated", "9", "0.5000"] for ln in lines)
    assert any(ln.startswith("?") for ln in lines)  # a config that does not parse: no label, no crash
    rep.report(trials, done=False)
    assert not rep.should_report(trials)  # nothing changed, within every_s
    trials[1].status = "RUNNING"
    assert rep.should_report(trials)


def test_a_search_names_its_trials_by_their_drawn_values_too():
    rep = SweepReporter("m", fields=["lr", "finetune", "seed"])
    table = rep.table([_trial("a", labelled({"lr": 0.000922011, "finetune": "top:1", "seed": 0}, "recipe"),
                              "RUNNING", 1, 0.2)])
    # named by the search's method (the name its start carries) plus the drawn values
    assert table.splitlines()[2].split()[:4] == ["recipe", "lr=0.000922", "finetune=top:1", "0"]


def test_the_restore_hint_is_dropped():
    keep = logging.LogRecord("ray.tune.tune", logging.INFO, "", 0, "Trial finished", None, None)
    drop = logging.LogRecord("ray.tune.tune", logging.INFO, "", 0, "Resume with Tuner.restore(path)", None, None)
    assert DropRestoreHint().filter(keep) and not DropRestoreHint().filter(drop)


def test_tunes_stop_signal_warning_is_said_in_our_words(capsys):
    """Issue 23 item 5: Ctrl-C printed Ray's "Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray
    Tune run ..." warning; it is one line of ours that says what is kept and how to go on."""
    stop = logging.LogRecord("ray.tune.tune", logging.WARNING, "", 0,
                             "Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run. This will try "
                             "to checkpoint the experiment state one last time.", None, None)
    assert not DropRestoreHint().filter(stop)
    err = capsys.readouterr().err
    assert err.startswith("[sweep] Ctrl-C: stopping the trials") and "--resume continues" in err


def test_trials_without_results_are_not_reported_as_a_failure(capsys):
    """Issue 23, item 5: on Ctrl-C and on resume Tune warned "Failed to fetch metrics for N trial(s)"
    for trials that had simply not reported an epoch yet; other read failures are said in our words."""
    import logging

    from counterarg.sweep.console import TrialsWithoutResults

    def record(text):
        return logging.LogRecord("ray.tune.analysis.experiment_analysis", logging.WARNING, "x", 1, text, None, None)

    pending = ("Failed to fetch metrics for 2 trial(s):\n- trainable_a: FileNotFoundError('Could not fetch metrics "
               "for trainable_a: both result.json and progress.csv were not found at /r/trial_a')\n- trainable_b: "
               "FileNotFoundError('... both result.json and progress.csv were not found at /r/trial_b')")
    f = TrialsWithoutResults()
    assert f.filter(record(pending)) is False and capsys.readouterr().out == ""
    torn = "Failed to fetch metrics for 1 trial(s):\n- trainable_c: ParserError('Error tokenizing data')"
    assert f.filter(record(torn)) is False
    assert capsys.readouterr().out == ("[sweep] could not read a trial's results: "
                                       "trainable_c: ParserError('Error tokenizing data')\n")
    assert f.filter(record("Restoring the run from the latest experiment state file")) is True


def test_the_token_auth_notice_of_a_local_ray_is_dropped_and_its_disabled_warning_kept():
    from counterarg.sweep.console import DropTokenAuthNotice

    def record(text):
        return logging.LogRecord("ray._private.authentication.authentication_token_setup", logging.WARNING, "x", 1,
                                 text, None, None)

    f = DropTokenAuthNotice()
    assert not f.filter(record("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled"))
    assert f.filter(record("Token authentication is disabled for this Ray cluster. Anyone with network access"))
