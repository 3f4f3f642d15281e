"""Tune's results as trial records (counterarg.sweep.records), from a hand-made ResultGrid."""

from __future__ import annotations

from types import SimpleNamespace as NS

from counterarg.config import REFERENCE_METHOD
from counterarg.sweep.records import collect_records
from counterarg.sweep.spaces import REFERENCE_FIELDS


def test_a_trial_that_never_started_keeps_its_strategy_in_the_summary():
    """After Ctrl-C, Tune's result for a trial that never started has no config; its strategy comes
    from Tune's trial list (not the Config defaults), and the sweep's shared fields from ``base``."""
    variant = {**REFERENCE_FIELDS, "schedule": "random", "seed": 0}
    res = NS(
        config=None,
        path="/x/exp/trial_ab12_random_seed0",
        metrics_dataframe=None,
        error=None,
        metrics={},
        filesystem=None,
        best_checkpoints=[],
        checkpoint=None,
    )

    class Grid(list):
        _experiment_analysis = NS(trials=[NS(trial_id="ab12", config=variant)])

    (rec,) = collect_records(Grid([res]), base={"epochs": 7})
    assert rec.config["schedule"] == "random" and rec.config["loss"] == REFERENCE_METHOD["loss"]
    assert rec.config["epochs"] == 7 and rec.status == "UNFINISHED" and rec.history == []


def _trial(tmp_path, name, ranks_bytes):
    """A hand-made Tune result of one finished trial whose latest checkpoint holds ``ranks_bytes``."""
    import pandas as pd
    import pyarrow.fs

    ckpt = tmp_path / name / "checkpoint_000001"
    ckpt.mkdir(parents=True)
    (ckpt / "best_ranks.npz").write_bytes(ranks_bytes)
    m = "validation_unseen/mean/acc@1"
    return NS(
        config={"seed": 0, "epochs": 1},
        path=str(tmp_path / name),
        error=None,
        metrics={"trial_id": name},
        filesystem=pyarrow.fs.LocalFileSystem(),
        metrics_dataframe=pd.DataFrame([{"epoch": 1, m: 0.5}]),
        best_checkpoints=[],
        checkpoint=NS(path=str(ckpt), filesystem=pyarrow.fs.LocalFileSystem()),
    )


def test_a_bad_trial_file_skips_that_trials_ranks_with_a_warning(tmp_path, capsys):
    """One trial's cut-short best_ranks.npz (or one holding an object array) made
    every --resume end in BadZipFile with no summary; now that trial has no ranks, with a warning
    naming its file, and the other trials keep theirs."""
    from io import BytesIO

    import numpy as np

    def npz(**arrays):
        buf = BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    good = npz(epoch=np.array(1), **{"test/sdoc": np.array([1, 2, 1])})
    grid = [
        _trial(tmp_path, "good", good),
        _trial(tmp_path, "cut", good[: len(good) // 2]),
        _trial(tmp_path, "objects", npz(epoch=np.array(1), **{"test/sdoc": np.array([{"x": 1}], dtype=object)})),
    ]
    recs = {r.trial_id: r for r in collect_records(grid)}
    assert recs["cut"].ranks is None and recs["objects"].ranks is None
    assert recs["good"].ranks["test/sdoc"].tolist() == [1, 2, 1]
    out = capsys.readouterr().out
    for name in ("cut", "objects"):
        assert (
            f"per-query ranks of trial {name} ({tmp_path / name / 'checkpoint_000001' / 'best_ranks.npz'}) "
            "cannot be read" in out
        )


def _grid(res, tune_status):
    class Grid(list):
        _experiment_analysis = NS(trials=[NS(trial_id="cd34", config={}, status=tune_status)])

    return Grid([res])


def _ended(values, *, tune_status="TERMINATED", done=False, patience=2, epochs=20):
    """How a trial with one row per value of the selection metric ended, as collect_records says."""
    import pandas as pd

    m = "validation_unseen/mean/acc@1"
    rows = pd.DataFrame([{"epoch": e, m: v, "done": False} for e, v in enumerate(values, 1)])
    res = NS(
        config={"seed": 0, "epochs": epochs, "patience": patience},
        path="/x/exp/trial_cd34_recipe_seed0",
        metrics_dataframe=rows,
        error=None,
        metrics={"trial_id": "cd34", "done": done},
        filesystem=None,
        best_checkpoints=[],
        checkpoint=None,
    )
    (rec,) = collect_records(_grid(res, tune_status))
    return rec.ended, rec.finished, rec.status


def test_a_trial_is_finished_only_when_it_trained_its_epochs_or_stopped_by_its_own_rule():
    """Tune marks the trials a Ctrl-C stopped TERMINATED too: their rows say they are unfinished (epochs
    short, no patience stop, no scheduler's ``done``); a patience stop is finished without a ``done`` row
    (a resumed sweep restores it without one), an ASHA stop by its ``done``, a paused trial is waiting."""
    assert _ended([0.1, 0.2, 0.3]) == ("interrupted", False, "UNFINISHED")  # Ctrl-C at epoch 3 of 20
    assert _ended([0.6, 0.5, 0.5]) == ("patience", True, "TERMINATED")  # 2 epochs without a new best
    assert _ended([0.6, 0.5]) == ("interrupted", False, "UNFINISHED")  # one epoch short of the patience stop
    assert _ended([0.1, 0.2, 0.3], done=True) == ("scheduler", True, "TERMINATED")  # ASHA cut it at a rung
    assert _ended([0.1, 0.2], epochs=2) == ("epochs", True, "TERMINATED")
    assert _ended([0.1, 0.2, 0.3], tune_status="PAUSED") == ("waiting", False, "UNFINISHED")  # PBT at a Ctrl-C
    assert _ended([0.1, 0.2, 0.3], patience=0) == ("interrupted", False, "UNFINISHED")  # no patience rule


def test_a_trial_holding_another_trials_last_result_keeps_its_own_id_and_config():
    """At a Ctrl-C, a pending trial just handed a finished trial's reused actor came back from Tune with
    that trial's last result (its id, its config, ``done``): the summary counted the finished trial
    twice, once as an unfinished seed of the wrong strategy. It is its own trial, not started."""
    other = {"trial_id": "aa11", "done": True, "config": {"schedule": "decay", "seed": 0}}
    res = NS(
        config=other["config"],
        path="/x/exp/trial_bb22_reference-fixed-0.8_seed0",
        metrics_dataframe=None,
        error=None,
        metrics=other,
        filesystem=None,
        best_checkpoints=[],
        checkpoint=None,
    )

    class Grid(list):
        _experiment_analysis = NS(
            trials=[NS(trial_id="bb22", config={"schedule": "fixed", "rate": 0.8, "seed": 0}, status="TERMINATED")]
        )

    (rec,) = collect_records(Grid([res]), base={"epochs": 5})
    assert rec.trial_id == "bb22" and rec.config["schedule"] == "fixed" and rec.config["rate"] == 0.8
    assert (rec.ended, rec.finished, rec.status) == ("not started", False, "UNFINISHED")


def test_a_trial_folder_names_its_id_also_where_the_id_holds_an_underscore():
    """PBT's and a search's trial ids are ``<experiment>_<index>``: the folder's first part alone named
    another id, and every PBT trial lost its config in the summary."""
    from counterarg.sweep.records import trial_id_of

    ids = ["42b21_00000", "42b21_00001", "10a9914c"]
    assert trial_id_of("trial_42b21_00001_recipe-fixed-0.3_seed0", ids) == "42b21_00001"
    assert trial_id_of("trial_10a9914c_reference-decay-0.8-0.02_seed0", ids) == "10a9914c"
    assert trial_id_of("trial_10a9914c", ids) == "10a9914c"
    assert trial_id_of("trial_ffff_recipe_seed0", ids) == ""
