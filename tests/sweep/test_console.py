"""What a running sweep prints (counterarg.sweep.console), from hand-made trials."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from counterarg.analysis.methods import labelled
from counterarg.config import method_fields
from counterarg.sweep.console import DropRestoreHint, SweepReporter


def _trial(tid, config, status, epoch=None, best=None):
    return SimpleNamespace(
        trial_id=tid,
        config=config,
        status=status,
        last_result={"epoch": epoch} if epoch else {},
        metric_analysis={"m": {"max": best}} if best is not None else {},
    )


def test_progress_is_one_line_when_a_trial_ends_or_once_a_minute():
    """Tune's 26-line status table came 79 times in the main job; now one line, on a trial's end (at
    most every 10 s) or once a minute, naming the trials by state, the epochs and the best trial."""
    now = [1000.0]
    rep = SweepReporter("m", clock=lambda: now[0])
    trials = [
        _trial("a", labelled({"schedule": "decay", "seed": 1, "epochs": 3}, "recipe"), "RUNNING", 2, 0.25),
        _trial(
            "b", labelled({**method_fields(), "schedule": "random", "seed": 0, "epochs": 3}, "reference"), "PENDING"
        ),
        _trial("c", {"schedule": "no-such", "epochs": 3}, "ERROR"),
        _trial("d", labelled({"seed": 2, "epochs": 3}, "recipe"), "TERMINATED", 3, 0.5),
    ]
    assert rep.should_report(trials)  # the first
    now[0] += 90
    line = rep.line(trials)
    assert "\n" not in line and line.startswith("[sweep] 1.5 min: 2/4 trials ended (1 error), 1 pending, 1 running")
    assert "epochs 5/12" in line and line.endswith("best 0.5000 (recipe, seed 2)")
    rep.report(trials, done=False)
    assert not rep.should_report(trials)  # nothing ended, within the minute
    trials[0].status = "TERMINATED"
    now[0] += 5
    assert not rep.should_report(trials)  # a trial ended, but 5 s after the last line
    now[0] += 5
    assert rep.should_report(trials)
    rep.report(trials, done=False)
    now[0] += 59
    assert not rep.should_report(trials) and rep.should_report(trials, done=True)
    now[0] += 1
    assert rep.should_report(trials)


def test_a_search_names_its_best_trial_by_its_drawn_values_too():
    rep = SweepReporter("m", fields=["lr", "finetune", "seed"])
    line = rep.line(
        [_trial("a", labelled({"lr": 0.000922011, "finetune": "top:1", "seed": 0}, "recipe"), "RUNNING", 1, 0.2)]
    )
    # named by the search's method (the name its start carries) plus the drawn values
    assert line.endswith("best 0.2000 (recipe lr=0.000922 finetune=top:1, seed 0)")
    assert "?" in SweepReporter("m").label(_trial("c", {"schedule": "no-such"}, "ERROR"))  # no label, no crash


def test_the_restore_hint_and_tunes_end_notes_are_dropped():
    def record(text):
        return logging.LogRecord("ray.tune.tune", logging.INFO, "", 0, text, None, None)

    assert DropRestoreHint().filter(record("Trial finished"))
    for text in (
        "Resume with Tuner.restore(path)",
        "Total run time: 42.11 seconds (41.91 seconds for the tuning loop).",
        "Wrote the latest version of all result files and experiment state to '/x' in 0.17s.",
    ):
        assert not DropRestoreHint().filter(record(text)), text


def test_tunes_stop_signal_warning_is_said_in_our_words(capsys):
    """Ctrl-C printed Ray's "Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray
    Tune run ..." warning; it is one line of ours that says what is kept and how to go on."""
    stop = logging.LogRecord(
        "ray.tune.tune",
        logging.WARNING,
        "",
        0,
        "Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run. This will try "
        "to checkpoint the experiment state one last time.",
        None,
        None,
    )
    assert not DropRestoreHint().filter(stop)
    err = capsys.readouterr().err
    assert err.startswith("[sweep] Ctrl-C: stopping the trials") and "--resume continues" in err


def test_trials_without_results_are_not_reported_as_a_failure(capsys):
    """On Ctrl-C and on resume Tune warned "Failed to fetch metrics for N trial(s)"
    for trials that had simply not reported an epoch yet; other read failures are said in our words."""
    import logging

    from counterarg.sweep.console import TrialsWithoutResults

    def record(text):
        return logging.LogRecord("ray.tune.analysis.experiment_analysis", logging.WARNING, "x", 1, text, None, None)

    pending = (
        "Failed to fetch metrics for 2 trial(s):\n- trainable_a: FileNotFoundError('Could not fetch metrics "
        "for trainable_a: both result.json and progress.csv were not found at /r/trial_a')\n- trainable_b: "
        "FileNotFoundError('... both result.json and progress.csv were not found at /r/trial_b')"
    )
    f = TrialsWithoutResults()
    assert f.filter(record(pending)) is False and capsys.readouterr().out == ""
    torn = "Failed to fetch metrics for 1 trial(s):\n- trainable_c: ParserError('Error tokenizing data')"
    assert f.filter(record(torn)) is False
    assert capsys.readouterr().out == (
        "[sweep] could not read a trial's results: trainable_c: ParserError('Error tokenizing data')\n"
    )
    assert f.filter(record("Restoring the run from the latest experiment state file")) is True


def test_the_token_auth_notice_of_a_local_ray_is_dropped_and_its_disabled_warning_kept():
    from counterarg.sweep.console import DropTokenAuthNotice

    def record(text):
        return logging.LogRecord(
            "ray._private.authentication.authentication_token_setup", logging.WARNING, "x", 1, text, None, None
        )

    f = DropTokenAuthNotice()
    assert not f.filter(record("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled"))
    assert f.filter(record("Token authentication is disabled for this Ray cluster. Anyone with network access"))
