"""Checkpoints (counterarg.model.checkpoint): plain data only, sealed by sha256, refused when planted or
damaged or of the older format, readable without training, and a resume with another model refused."""

from __future__ import annotations

import pytest
import torch
from conftest import each_field_changed, rows, training_loaded_by

from counterarg.cli import main
from counterarg.config import EVAL, HYPER, MODEL, RESUME, Config, fields_with
from counterarg.model.checkpoint import CheckpointError, check_resumable, read_checkpoint, resumed_changes
from counterarg.training.loop import train


class _Planted:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_planted_pickle_checkpoint_is_refused_not_run(tiny_encoder, tmp_path, capsys):
    """A state.pt whose unpickling would run a command is refused with a named error."""
    marker = tmp_path / "ran"
    folder = tmp_path / "evil"
    folder.mkdir()
    torch.save(
        {"epoch": 1, "model": {"config": {}, "heads": {}, "encoder": {}}, "history": [], "x": _Planted(marker)},
        folder / "state.pt",
    )
    assert main(["rank", "--checkpoint", str(folder), "--text", "anything"]) == 2
    err = capsys.readouterr().err
    assert "refusing to load" in err and "state.pt" in err
    assert not marker.exists()
    assert main(["evaluate", "--checkpoint", str(folder), "--quiet"]) == 2
    assert not marker.exists()


def test_checkpoint_holds_tensors_and_plain_data_only(cfg, tmp_path):
    train(cfg.replace(epochs=1), tmp_path / "r", progress=False)
    state = torch.load(tmp_path / "r" / "checkpoint" / "state.pt", weights_only=True)  # no allowlist needed
    assert state["epoch"] == 1 and isinstance(state["history"][0]["mining/hard"], int)
    assert set(state) == {"epoch", "history", "model", "trainer"}
    assert set(state["model"]) == {"config", "heads", "encoder", "fused_w"}
    assert set(state["trainer"]) == {"optimizer", "scaler", "rng"}


def test_cut_short_and_bit_flipped_checkpoints_are_named(cfg, tmp_path, capsys):
    """Truncated/garbage checkpoints and bit flips give a named error with file and last epoch."""

    run = tmp_path / "r"
    train(cfg.replace(epochs=2), run, progress=False)
    state = run / "checkpoint" / "state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0x01
    state.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"state\.pt.*sha256.*epoch 2.*last epoch recorded .* is 2"):
        read_checkpoint(run / "checkpoint")
    args = ["train", "--out", str(run), "--quiet", "--resume", "--epochs", "3", "--set", f"encoder={cfg.encoder}"]
    assert main(args + ["--set", "schedule=decay", "--set", "rate_step=0.3", "--set", "eval_mode=rerank"]) == 2
    assert "sha256" in capsys.readouterr().err
    assert len(rows(run)) == 2  # nothing already written is lost
    (run / "checkpoint" / "manifest.json").unlink()  # without a manifest: cut short / garbage
    state.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*state\.pt.*last epoch recorded .* is 2"):
        read_checkpoint(run / "checkpoint")
    state.write_bytes(b"garbage, not a checkpoint at all")
    with pytest.raises(CheckpointError, match="state.pt"):
        read_checkpoint(run / "checkpoint")


def test_checkpoint_of_the_older_format_is_refused_by_name(tmp_path):
    """The format before {"model", "trainer"} (heads and config at the top level) is no longer read:
    it is named, not half-loaded."""
    torch.save({"epoch": 1, "config": {}, "heads": {}, "history": []}, tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match="older counterarg"):
        read_checkpoint(tmp_path)


@pytest.mark.slow
def test_reading_a_checkpoint_imports_no_training(cfg, tmp_path):
    """checkpoint.py and biencoder.py are below training: loading a model for inference never
    imports the trainer, the training loop, mining or batches (loss.py is read by Config validation
    for the loss names)."""
    train(cfg.replace(epochs=1), tmp_path / "r", progress=False)
    checkpoint = str(tmp_path / "r" / "checkpoint")
    printed, loaded = training_loaded_by(
        f"from counterarg.model.biencoder import BiEncoder; print(BiEncoder.from_checkpoint({checkpoint!r}).epoch)"
    )
    assert (printed.split()[-1:], loaded) == (["1"], []), printed


def test_resume_with_other_model_is_refused(cfg, tmp_path):
    train(cfg.replace(epochs=1), tmp_path / "a", progress=False)
    with pytest.raises(CheckpointError, match="different config.*sim_dim"):
        train(cfg.replace(sim_dim=16), tmp_path / "a", resume_from=tmp_path / "a" / "checkpoint", progress=False)


def test_resume_accepts_exactly_the_resume_role_and_names_an_architecture_change(tmp_path):
    """A field of the ``resume`` role may differ from the checkpoint, any other is refused; a field of
    the ``model`` role (architecture) is named as such; the hyperparameters a resume changed are listed."""
    accepted, listed = set(), set()
    for name, start, changed in each_field_changed(Config()):
        try:
            check_resumable(changed, start.to_dict(), tmp_path)
            accepted.add(name)
        except CheckpointError as e:
            assert name in str(e) and (("architecture" in str(e)) == (name in fields_with(MODEL))), str(e)
        if resumed_changes(changed, start.to_dict()):
            listed.add(name)
    assert accepted == set(fields_with(RESUME)) and listed == set(fields_with(HYPER))
    assert not set(fields_with(MODEL)) & (set(fields_with(RESUME)) | set(fields_with(EVAL)))


def test_check_resumable_allows_only_the_resumable_fields_and_says_what_changed(tmp_path):
    saved = Config(lr=1e-3, margin=0.5).to_dict()
    check_resumable(Config(lr=2e-3, margin=0.5, epochs=9, patience=1), saved, tmp_path)  # lr, epochs, patience
    with pytest.raises(CheckpointError, match=r"different config \(sim_dim: checkpoint 128 vs now 64\)"):
        check_resumable(Config(sim_dim=64), {**saved, "sim_dim": 128}, tmp_path)
    assert resumed_changes(Config(lr=2e-3, margin=0.5), saved) == "lr 0.001 -> 0.002"
    assert resumed_changes(Config(lr=1e-3, margin=0.5), saved) == ""
    old = {k: v for k, v in saved.items() if k != "head_reg"}  # a field newer than the checkpoint
    check_resumable(Config(lr=1e-3, margin=0.5), old, tmp_path)
