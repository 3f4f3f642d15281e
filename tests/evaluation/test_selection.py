"""Model selection (counterarg.evaluation.selection): the best epoch of a history by hand, its ranks kept
across resumes, patience."""

from __future__ import annotations

import math

import numpy as np
import pytest

from counterarg.config import Config
from counterarg.evaluation.selection import BestRanks, best_epoch, best_row, early_stop, read_best_ranks
from counterarg.model.checkpoint import read_checkpoint
from counterarg.retrieval.pools import pools_from_labels
from counterarg.training.loop import train
from counterarg.training.trainer import Trainer, TrainingError


def test_best_epoch_is_the_best_metric_earliest_on_ties():
    m = Config.select_metric
    history = [{"epoch": 1, m: 0.2}, {"epoch": 2, m: 0.5}, {"epoch": 3, m: 0.5}, {"epoch": 4, m: 0.1}]
    assert best_row(history)["epoch"] == 2  # the default metric is Config's select_metric; ties: earliest
    assert best_row(history, m, mode="min")["epoch"] == 4
    assert best_row([{"epoch": 1, m: math.nan}, {"epoch": 2}, {"epoch": 3, m: None}]) is None  # no value: none
    assert best_row([{"epoch": 1, m: math.nan}, {"epoch": 2, m: 0.0}])["epoch"] == 2  # NaN is skipped
    assert best_row([]) is None
    assert best_row(history, "validation/mean/mrr") is None  # a metric the rows do not hold


@pytest.mark.slow
def test_best_epoch_ranks_are_kept_in_the_checkpoint_and_survive_resume(cfg, tmp_path):
    straight = train(cfg, tmp_path / "a", progress=False)
    best = best_row(straight, cfg.select_metric)
    kept = read_best_ranks(tmp_path / "a" / "checkpoint")
    assert int(kept["epoch"]) == best["epoch"]
    for split in ("validation", "test"):
        for task in ("sdoc", "epa"):
            r = kept[f"{split}/{task}"]
            assert float((r <= 1).mean()) == pytest.approx(best[f"{split}/{task}/acc@1"])
            if f"{split}_unseen/{task}/acc@1" in best:  # the demo corpus's texts are all unseen
                unseen = kept[f"{split}/unseen"]
                assert float((r[unseen] <= 1).mean()) == pytest.approx(best[f"{split}_unseen/{task}/acc@1"])
    train(cfg.replace(epochs=1), tmp_path / "b", progress=False)
    train(cfg, tmp_path / "b", resume_from=tmp_path / "b" / "checkpoint", progress=False)
    again = read_best_ranks(tmp_path / "b" / "checkpoint")
    assert sorted(again) == sorted(kept)
    assert all(np.array_equal(again[k], kept[k]) for k in kept)


@pytest.mark.slow
def test_patience_stops_and_best_holds_the_best_epoch(cfg, tmp_path, monkeypatch):
    script = iter([0.1, 0.3, 0.2, 0.25, 0.9, 0.9])  # best at epoch 2; epochs 3 and 4 do not beat it
    monkeypatch.setattr(Trainer, "evaluate", lambda self, epoch: {cfg.select_metric: next(script)})
    h = train(cfg.replace(epochs=6, patience=2), tmp_path / "p", progress=False)
    assert [r["epoch"] for r in h] == [1, 2, 3, 4]
    assert [r["select/best_epoch"] for r in h] == [1, 2, 2, 2]
    assert read_checkpoint(tmp_path / "p" / "best")["epoch"] == 2
    assert read_checkpoint(tmp_path / "p" / "checkpoint")["epoch"] == 4
    # resuming with more patience goes on from epoch 5 and keeps the best
    script2 = iter([0.35, 0.1])
    monkeypatch.setattr(Trainer, "evaluate", lambda self, epoch: {cfg.select_metric: next(script2)})
    h2 = train(
        cfg.replace(epochs=6, patience=3), tmp_path / "p", resume_from=tmp_path / "p" / "checkpoint", progress=False
    )
    assert [r["epoch"] for r in h2] == [1, 2, 3, 4, 5, 6] and h2[-1]["select/best_epoch"] == 5
    assert read_checkpoint(tmp_path / "p" / "best")["epoch"] == 5


def test_patience_needs_the_selection_metric(cfg, tmp_path, monkeypatch):

    monkeypatch.setattr(Trainer, "evaluate", lambda self, epoch: {})
    with pytest.raises(TrainingError, match="select"):
        train(
            cfg.replace(epochs=2, patience=1, select_metric="validation_unseen/mean/acc@1"),
            tmp_path / "q",
            progress=False,
        )


def test_early_stop_and_best_epoch_follow_the_earliest_best_row():
    cfg = Config(patience=2, select_metric="validation/mean/acc@1")
    m = cfg.select_metric
    history = [{"epoch": 1, m: 0.2}, {"epoch": 2, m: 0.5}, {"epoch": 3, m: 0.5}, {"epoch": 4, m: 0.4}]
    assert best_epoch(history, m) == 2  # a tie keeps the earlier epoch
    assert early_stop(cfg, history[:3], 3) is None  # one epoch since the best
    assert early_stop(cfg, history, 4)["epoch"] == 2  # two epochs since the best: stop before epoch 5
    assert early_stop(cfg.replace(patience=0), history, 4) is None
    assert best_epoch([{"epoch": 1}], m) is None and early_stop(cfg, [], 0) is None


def test_best_ranks_take_only_a_strictly_better_finite_row(tmp_path):
    pools = {"validation": pools_from_labels("validation", ["d/a", "d/a"], ["pro", "con"], unseen=[True, False])}
    best = BestRanks("validation/mean/acc@1")
    first = {"sdoc": np.array([1, 2], dtype=np.int32)}
    assert best.update({"epoch": 1, "validation/mean/acc@1": 0.5}, {"validation": first}, pools)
    assert not best.update(
        {"epoch": 2, "validation/mean/acc@1": 0.5}, {"validation": {"sdoc": np.array([2, 2])}}, pools
    )
    assert not best.update({"epoch": 3, "validation/mean/acc@1": float("nan")}, {"validation": first}, pools)
    assert not best.update({"epoch": 4}, {"validation": first}, pools)
    best.save(tmp_path)
    kept = read_best_ranks(tmp_path)
    assert int(kept["epoch"]) == 1 and kept["validation/sdoc"].tolist() == [1, 2]
    assert kept["validation/unseen"].tolist() == [True, False]
    assert read_best_ranks(tmp_path / "none") is None


def test_best_is_repaired_after_a_kill_between_its_renames(cfg, tmp_path, capsys):
    """A kill between best/'s two renames left .best.old and a fill folder, and a
    kill before its manifest left .best.XXXX forever; reading R/best and --resume repair both."""
    import shutil

    from counterarg.core.io import write_manifest

    out = tmp_path / "run"
    train(cfg.replace(epochs=1), out, progress=False)
    want = read_checkpoint(out / "best")["epoch"]
    (out / "best").rename(out / ".best.old")  # the first rename done, the second not
    shutil.copytree(out / ".best.old", out / ".best.cut0shrt")
    (out / ".best.cut0shrt" / "manifest.json").unlink()  # a fill that never got its manifest
    assert read_checkpoint(out / "best")["epoch"] == want  # export/evaluate --checkpoint R/best work
    assert "rolled back to .best.old" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir() if "best" in p.name) == ["best"]

    (out / "best").rename(out / ".best.old")
    (out / ".best.x1y2z3w4").mkdir()
    (out / ".best.x1y2z3w4" / "state.pt").write_bytes(b"half")
    write_manifest(out / ".best.x1y2z3w4", epoch=1)  # sealed, yet ...
    (out / ".best.x1y2z3w4" / "state.pt").write_bytes(b"hal")  # ... cut short after: not swapped in
    train(cfg.replace(epochs=1), out, progress=False, resume_latest=True)
    assert sorted(p.name for p in out.iterdir() if "best" in p.name) == ["best"]  # repaired by the resume
    assert read_checkpoint(out / "best")["epoch"] == want


def test_best_ranks_that_cannot_be_read_are_left_out_with_a_warning(tmp_path, capsys):
    """An object array in best_ranks.npz gave a ValueError traceback."""
    np.savez(tmp_path / BestRanks.FILE, epoch=np.array(1), **{"test/sdoc": np.array([{"x": 1}], dtype=object)})
    assert read_best_ranks(tmp_path) is None
    (tmp_path / BestRanks.FILE).write_bytes(b"PK\x03\x04 cut")
    assert read_best_ranks(tmp_path) is None
    out = capsys.readouterr().out
    assert out.count(f"per-query ranks {tmp_path / BestRanks.FILE} cannot be read") == 2
