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
