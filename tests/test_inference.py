"""A checkpoint outside training (counterarg.inference): the whole encoder with the trained part put
back gives the features training saw; the similarity head read as an affine map; the candidate cache;
writing embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from counterarg.checkpoint import read_checkpoint, restore_run
from counterarg.config import Config, ConfigError
from counterarg.inference import TrainedModel, candidate_embeddings, save_embeddings
from counterarg.model import EncoderError
from counterarg.run import Run
from counterarg.train import train


@pytest.fixture(scope="module")
def checkpoint(tiny_encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = Config(encoder=tiny_encoder, epochs=1, max_length=32, finetune="top:1", encoder_lr=1e-2, batch_size=16)
    train(cfg, out, progress=False)
    return out / "checkpoint"


def test_trained_model_embeds_texts_as_the_run_did(checkpoint):
    tm = TrainedModel.load(checkpoint)
    state = read_checkpoint(checkpoint)
    run = Run(tm.config, progress=False, eval_splits=[])
    restore_run(run, state)
    tids = run.table.splits["validation"].point[:5]
    with torch.no_grad():
        want_h = run.features.embed(tids)  # [5, H] from float16 cached states + trained top layer
        want_s = run.heads.similarity(want_h)
    h, s = tm.embed([run.table.texts[t] for t in tids])
    run.close()
    np.testing.assert_allclose(h.numpy(), want_h.numpy(), atol=2e-2)
    np.testing.assert_allclose(s.numpy(), want_s.numpy(), atol=5e-2)
    assert tm.epoch == 1 and tm.history[0]["epoch"] == 1 and len(tm.fingerprint()) == 64


def test_similarity_head_as_an_affine_map_and_a_head_that_is_not(checkpoint):
    tm = TrainedModel.load(checkpoint)
    w, b = tm.similarity_as_affine()
    x = torch.randn(4, tm.hidden)
    torch.testing.assert_close(x @ w.T + b, tm.heads.similarity(x).detach(), atol=1e-5, rtol=1e-5)
    real = tm.heads.similarity
    tm.heads.similarity = lambda h: torch.tanh(real(h))
    with pytest.raises(EncoderError, match="not affine"):
        tm.similarity_as_affine()
    tm.source = None
    with pytest.raises(EncoderError, match="not loaded from a checkpoint"):
        tm.fingerprint()


def test_candidate_embeddings_are_cached_by_weights_and_texts(checkpoint, tmp_path):
    tm = TrainedModel.load(checkpoint)
    texts = ["one candidate", "another candidate text", "a third"]
    h, s, cached = candidate_embeddings(tm, texts, progress=False, cache_dir=str(tmp_path))
    assert not cached and h.shape == (3, tm.hidden) and s.shape[0] == 3
    h2, s2, cached2 = candidate_embeddings(tm, texts, progress=False, cache_dir=str(tmp_path))
    assert cached2 and torch.equal(h, h2) and torch.equal(s, s2)
    assert not candidate_embeddings(tm, texts[:2], progress=False, cache_dir=str(tmp_path))[2]  # other texts


def test_save_embeddings_writes_float32_npy_and_refuses_to_overwrite(tmp_path):
    out = save_embeddings(tmp_path / "sub" / "e.npy", np.ones((2, 3), dtype=np.float64))
    assert np.load(out).dtype == np.float32 and np.load(out).shape == (2, 3)
    with pytest.raises(ConfigError, match="exists; pass --force"):
        save_embeddings(out, np.zeros((1, 1)))
    save_embeddings(out, np.zeros((1, 1)), force=True)
    assert np.load(out).shape == (1, 1)
    with pytest.raises(ConfigError, match=r"must end in \.npy"):
        save_embeddings(tmp_path / "e.txt", np.zeros((1, 1)))


def _rank_entry_file(cache):
    """The candidate cache's one entry file to tamper with (its ``s`` array)."""
    entries = [p for p in (cache / "rank").iterdir() if not p.name.endswith(".lock")]
    assert len(entries) == 1
    return entries[0] / "s.npy" if entries[0].is_dir() else entries[0]


@pytest.mark.parametrize("tamper", ["flip", "same_shape"])
def test_a_damaged_or_replaced_candidate_cache_is_rebuilt(checkpoint, tmp_path, capsys, tamper):
    """Issue 22 item 5: one flipped byte, or a same-shape array put in its place, is caught (sha256)
    and the entry rebuilt: rank gives the same embeddings as before, never an error or other ranks."""
    tm = TrainedModel.load(checkpoint)
    texts = ["one candidate", "another candidate text", "a third"]
    _, s, _ = candidate_embeddings(tm, texts, progress=False, cache_dir=str(tmp_path))
    f = _rank_entry_file(tmp_path)
    if tamper == "flip":
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0x10
        f.write_bytes(bytes(data))
    elif f.suffix == ".npy":
        np.save(f, np.zeros(s.shape, dtype=np.float32))
    else:  # the single-file cache of before
        np.savez(f, h=np.zeros((3, tm.hidden), np.float32), s=np.zeros(s.shape, np.float32))
    capsys.readouterr()
    _, s2, cached = candidate_embeddings(tm, texts, progress=False, cache_dir=str(tmp_path))
    assert not cached and torch.equal(s, s2)
    assert "rebuilding" in capsys.readouterr().out
    assert candidate_embeddings(tm, texts, progress=False, cache_dir=str(tmp_path))[2]  # healed


def test_a_candidate_cache_on_a_full_disk_still_ranks(checkpoint, tmp_path, capsys, monkeypatch):
    """Issue 22 item 8: rank printed no ranking when its cache write failed; now it says so and
    goes on with the encoded texts, leaving no half entry."""
    import errno

    from counterarg import io

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(io, "_fsync_file", full)
    tm = TrainedModel.load(checkpoint)
    h, s, cached = candidate_embeddings(tm, ["one", "two"], progress=False, cache_dir=str(tmp_path))
    assert not cached and s.shape[0] == 2
    assert "candidate cache not written (disk full" in capsys.readouterr().out
    assert [p.suffix for p in (tmp_path / "rank").iterdir()] == [".lock"]


def test_a_checkpoints_machine_fields_are_this_machines(tiny_encoder, tmp_path, monkeypatch):
    """Issue 22 item 6: cache_dir, device, ... of the machine that trained are not taken."""
    from counterarg.config import MACHINE_FIELDS

    elsewhere = tmp_path / "their-node" / "cache"
    train(Config(encoder=tiny_encoder, epochs=1, max_length=32, cache_dir=str(elsewhere), device="cpu",
                 embed_batch_size=3, index="balltree"), tmp_path / "run", progress=False)
    tm = TrainedModel.load(tmp_path / "run" / "checkpoint")
    defaults = Config()
    assert {k: getattr(tm.config, k) for k in MACHINE_FIELDS} == {k: getattr(defaults, k) for k in MACHINE_FIELDS}
    assert tm.config.encoder == tiny_encoder and tm.config.max_length == 32  # the model's own fields stay
    import shutil

    shutil.rmtree(tmp_path / "their-node")
    monkeypatch.setenv("COUNTERARG_CACHE", str(tmp_path / "mine"))
    candidate_embeddings(tm, ["a", "b"], progress=False)
    assert (tmp_path / "mine" / "rank").is_dir() and not (tmp_path / "their-node").exists()
