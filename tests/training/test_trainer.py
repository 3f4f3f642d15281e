"""One run's epoch work (counterarg.training.trainer.Trainer): loss checks, the fused weight picked on validation,
which splits are scored when."""

from __future__ import annotations

import json

import pytest

from counterarg.cli import main
from counterarg.training.loop import train
from counterarg.training.trainer import TrainingError


def test_nan_loss_names_epoch_and_step(cfg, tmp_path):
    with pytest.raises(TrainingError, match=r"epoch 1, step \d+"):
        train(
            cfg.replace(
                lr=1e30, grad_clip=0.0, optimizer="adam", margin=1e30, loss="combined", head="linear", sim_dim=128
            ),
            tmp_path / "n",
            progress=False,
        )


def test_fused_weight_is_picked_on_validation_and_used_by_evaluate(cfg, tmp_path, capsys):
    c = cfg.replace(epochs=2, batch_size=16, loss="infonce+pair_ce", eval_mode="fused", fused_grid=(0.0, 0.5, 5.0))
    h = train(c, tmp_path / "f", progress=False)
    assert all(r["eval/fused_w"] in (0.0, 0.5, 5.0) for r in h)
    from counterarg.model.biencoder import BiEncoder

    assert BiEncoder.from_checkpoint(tmp_path / "f" / "checkpoint").fused_w == h[-1]["eval/fused_w"]  # one home
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(tmp_path / "f" / "checkpoint"),
                "--split",
                "test",
                "--quiet",
                "--json",
                str(tmp_path / "t.json"),
            ]
        )
        == 0
    )
    assert "test/mean/acc@1" in json.loads((tmp_path / "t.json").read_text())
    # a checkpoint trained without fused needs an explicit weight
    train(cfg.replace(epochs=1, batch_size=16), tmp_path / "r", progress=False)
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(tmp_path / "r" / "checkpoint"),
                "--split",
                "test",
                "--quiet",
                "--set",
                "eval_mode=fused",
            ]
        )
        == 2
    )
    assert "fused_w" in capsys.readouterr().err


@pytest.mark.parametrize("epochs, every, due", [(3, 2, [2, 3]), (4, 3, [3, 4]), (3, 0, []), (2, 1, [1, 2])])
def test_test_split_is_scored_only_on_due_epochs_and_the_last(cfg, tmp_path, epochs, every, due):
    h = train(cfg.replace(epochs=epochs, test_every=every, schedule="fixed"), tmp_path / "r", progress=False)
    assert [r["epoch"] for r in h if "test/sdoc/acc@1" in r] == due
    assert [r["epoch"] for r in h if "test/mean/acc@1" in r] == due
    assert all("validation/mean/acc@1" in r for r in h)  # validation every epoch regardless


def test_eval_training_adds_training_split_metrics(cfg, tmp_path):
    off = train(cfg.replace(epochs=1), tmp_path / "off", progress=False)
    on = train(cfg.replace(epochs=1, eval_training=True), tmp_path / "on", progress=False)
    assert not any(k.startswith("training") for k in off[0])
    for task in ("sdoc", "sdc", "epa", "mean"):
        assert 0 <= on[0][f"training/{task}/acc@1"] <= 1, sorted(on[0])
    assert on[0]["validation/mean/acc@1"] == off[0]["validation/mean/acc@1"]  # scoring does not change training
