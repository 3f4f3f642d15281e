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
    res = NS(config=None, path="/x/exp/trial_ab12_random_seed0", metrics_dataframe=None, error=None, metrics={},
             filesystem=None, best_checkpoints=[], checkpoint=None)

    class Grid(list):
        _experiment_analysis = NS(trials=[NS(trial_id="ab12", config=variant)])

    rec, = collect_records(Grid([res]), base={"epochs": 7})
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
    return NS(config={"seed": 0, "epochs": 1}, path=str(tmp_path / name), error=None,
              metrics={"trial_id": name}, filesystem=pyarrow.fs.LocalFileSystem(),
              metrics_dataframe=pd.DataFrame([{"epoch": 1, m: 0.5}]), best_checkpoints=[],
              checkpoint=NS(path=str(ckpt), filesystem=pyarrow.fs.LocalFileSystem()))


def test_a_bad_trial_file_skips_that_trials_ranks_with_a_warning(tmp_path, capsys):
    """Issue 22 item 5: one trial's cut-short best_ranks.npz (or one holding an object array) made
    every --resume end in BadZipFile with no summary; now that trial has no ranks, with a warning
    naming its file, and the other trials keep theirs."""
    from io import BytesIO

    import numpy as np

    def npz(**arrays):
        buf = BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    good = npz(epoch=np.array(1), **{"test/sdoc": np.array([1, 2, 1])})
    grid = [_trial(tmp_path, "good", good), _trial(tmp_path, "cut", good[: len(good) // 2]),
            _trial(tmp_path, "objects", npz(epoch=np.array(1), **{"test/sdoc": np.array([{"x": 1}], dtype=object)}))]
    recs = {r.trial_id: r for r in collect_records(grid)}
    assert recs["cut"].ranks is None and recs["objects"].ranks is None
    assert recs["good"].ranks["test/sdoc"].tolist() == [1, 2, 1]
    out = capsys.readouterr().out
    for name in ("cut", "objects"):
        assert f"per-query ranks of trial {name} ({tmp_path / name / 'checkpoint_000001' / 'best_ranks.npz'}) " \
               "cannot be read" in out


def test_an_early_stopped_trial_that_tune_ended_is_finished_even_without_a_done_row():
    """A trial that stopped early (patience) before its planned epochs, whose last row Tune restored
    without its ``done`` flag (a resumed sweep), is finished by Tune's own status, not unfinished:
    else its strategy loses its verdict."""
    import pandas as pd

    m = "validation_unseen/mean/acc@1"
    rows = pd.DataFrame([{"epoch": e, m: 0.5} for e in (1, 2, 3)])
    res = NS(config={"seed": 0, "epochs": 20}, path="/x/exp/trial_cd34_recipe_seed0", metrics_dataframe=rows,
             error=None, metrics={"trial_id": "cd34"}, filesystem=None, best_checkpoints=[], checkpoint=None)

    for tune_status, ours in (("TERMINATED", "TERMINATED"), ("PAUSED", "UNFINISHED")):
        class Grid(list):
            _experiment_analysis = NS(trials=[NS(trial_id="cd34", config={}, status=tune_status)])

        rec, = collect_records(Grid([res]))
        assert rec.status == ours, tune_status
