"""The trained model's one home (counterarg.model.biencoder.BiEncoder): loaded for inference it embeds texts as
the run did; its similarity head read as an affine map; this machine's fields; a model-only save that
keeps fused_w; the scorer and its weight."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from counterarg.config import Config, ConfigError
from counterarg.model.biencoder import BiEncoder
from counterarg.model.checkpoint import read_checkpoint
from counterarg.nn.encoder import EncoderError
from counterarg.serving.inference import candidate_embeddings
from counterarg.training.loop import train
from counterarg.training.trainer import Trainer, TrainingError


@pytest.mark.slow
def test_trained_model_embeds_texts_as_the_run_did(top1_checkpoint):
    model = BiEncoder.from_checkpoint(top1_checkpoint)
    run = Trainer(model.config, progress=False, eval_splits=[])
    run.restore(read_checkpoint(top1_checkpoint))
    tids = run.table.splits["validation"].point[:5]
    with torch.no_grad():
        want_h = run.model.features.embed(tids)  # [5, H] from float16 cached states + trained top layer
        want_s = run.model.heads.similarity(want_h)
    h, s = model.embed([run.table.texts[t] for t in tids])
    run.close()
    np.testing.assert_allclose(h.numpy(), want_h.numpy(), atol=2e-2)
    np.testing.assert_allclose(s.numpy(), want_s.numpy(), atol=5e-2)
    assert model.epoch == 1 and model.history[0]["epoch"] == 1 and len(model.fingerprint()) == 64


def test_similarity_head_as_an_affine_map_and_a_head_that_is_not(top1_checkpoint):
    model = BiEncoder.from_checkpoint(top1_checkpoint)
    w, b = model.similarity_as_affine()
    x = torch.randn(4, model.hidden)
    torch.testing.assert_close(x @ w.T + b, model.heads.similarity(x).detach(), atol=1e-5, rtol=1e-5)
    real = model.heads.similarity
    model.heads.similarity = lambda h: torch.tanh(real(h))
    with pytest.raises(EncoderError, match="not affine"):
        model.similarity_as_affine()
    model.source = None
    with pytest.raises(EncoderError, match="not loaded from a checkpoint"):
        model.fingerprint()


def test_a_model_only_save_keeps_weights_and_fused_w(top1_checkpoint, tmp_path):
    """save -> from_checkpoint gives the same model (weights, trained encoder part, picked weight);
    such a folder holds no trainer state, so a resume from it is refused by name."""
    model = BiEncoder.from_checkpoint(top1_checkpoint)
    model.fused_w = 0.2
    model.save(tmp_path / "model")
    back = BiEncoder.from_checkpoint(tmp_path / "model")
    assert back.fused_w == 0.2 and back.epoch == model.epoch
    assert back.config == model.config
    for (k, a), (_, b) in zip(model.heads.state_dict().items(), back.heads.state_dict().items()):
        assert torch.equal(a, b), k
    texts = ["a text", "another"]
    torch.testing.assert_close(back.embed(texts)[1], model.embed(texts)[1])
    run = Trainer(model.config, progress=False, eval_splits=[])
    with pytest.raises(TrainingError, match="model only"):
        run.restore(read_checkpoint(tmp_path / "model"))
    run.close()


def test_scoring_weight_is_the_configs_else_the_picked_one(top1_checkpoint):
    model = BiEncoder.from_checkpoint(top1_checkpoint)
    model.config = model.config.replace(eval_mode="fused", fused_w=None)
    model.fused_w = None
    assert model.scoring_weight() == 0.0  # training before the first pick
    with pytest.raises(ConfigError, match="pass --set fused_w=W"):
        model.scoring_weight(strict=True)
    model.fused_w = 0.05
    assert model.scoring_weight(strict=True) == 0.05
    model.config = model.config.replace(fused_w=1.0)
    assert model.scoring_weight() == 1.0
    model.config = model.config.replace(eval_mode="rerank")
    assert model.scoring_weight(strict=True) == 0.0 and not model.scorer.picks_weight and model.scorer.needs_classifier


@pytest.mark.slow
def test_a_checkpoints_machine_fields_are_this_machines(tiny_encoder, tmp_path, monkeypatch):
    """Cache_dir, device, ... of the machine that trained are not taken."""
    from counterarg.config import MACHINE_FIELDS

    elsewhere = tmp_path / "their-node" / "cache"
    train(
        Config(
            encoder=tiny_encoder,
            epochs=1,
            max_length=32,
            cache_dir=str(elsewhere),
            device="cpu",
            embed_batch_size=3,
            index="balltree",
        ),
        tmp_path / "run",
        progress=False,
    )
    model = BiEncoder.from_checkpoint(tmp_path / "run" / "checkpoint")
    defaults = Config()
    assert {k: getattr(model.config, k) for k in MACHINE_FIELDS} == {k: getattr(defaults, k) for k in MACHINE_FIELDS}
    assert model.config.encoder == tiny_encoder and model.config.max_length == 32  # the model's own fields stay
    import shutil

    shutil.rmtree(tmp_path / "their-node")
    monkeypatch.setenv("COUNTERARG_CACHE", str(tmp_path / "mine"))
    candidate_embeddings(model, ["a", "b"], progress=False)
    assert (tmp_path / "mine" / "rank").is_dir() and not (tmp_path / "their-node").exists()
