"""The feature modes behind one interface (counterarg.model.features): which mode a config gets, what each
trains, and that a checkpoint's trained part put into a whole encoder gives the features training saw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from counterarg.config import Config
from counterarg.data.corpus import TextTable, load_corpus
from counterarg.model.features import EncoderFeatures, HiddenStateFeatures, PooledFeatures, feature_class, make_features
from counterarg.nn.encoder import encode_texts, load_encoder
from counterarg.training.loop import train
from counterarg.training.trainer import Trainer


@pytest.mark.slow
@pytest.mark.parametrize(
    "finetune, mode", [("none", PooledFeatures), ("top:1", HiddenStateFeatures), ("all", EncoderFeatures)]
)
def test_each_finetune_mode_gets_its_own_feature_class(tiny_encoder, finetune, mode):
    cfg = Config(encoder=tiny_encoder, finetune=finetune, max_length=32)
    assert feature_class(cfg) is mode
    table = TextTable.from_corpus(load_corpus(None))
    feats = make_features(cfg, table, torch.device("cpu"), progress=False)
    assert type(feats) is mode and feats.trains_encoder == (finetune != "none")
    feats.eval()  # as embed runs: dropout off
    h = feats.embed(np.arange(5))  # [5, H]
    assert h.shape == (5, feats.hidden) and torch.isfinite(h).all()
    torch.testing.assert_close(feats(torch.arange(5)).detach(), h, atol=1e-5, rtol=0)  # eval: no dropout
    n_params = sum(p.numel() for p in feats.trainable_parameters())
    assert (n_params > 0) == feats.trains_encoder
    assert set(feats.checkpoint_state()) == set(feats.trainable.state_dict())
    if finetune == "none":
        with pytest.raises(ValueError, match="no lengths"):
            feats.row_lengths(np.zeros((2, 3), dtype=np.int64))
    else:
        tids = np.array([[0, 1, 2], [3, 4, 5]])
        assert feats.row_lengths(tids).tolist() == feats.text_lengths(tids).max(axis=1).tolist()
        assert (feats.text_lengths(tids) <= 32).all() and (feats.text_lengths(tids) > 0).all()


@pytest.mark.parametrize("finetune, atol", [("top:1", 2e-2), ("all", 1e-4)])
def test_trained_part_put_into_a_whole_encoder_gives_the_training_features(tiny_encoder, finetune, atol):
    """What rank/embed/export compute for a text (the whole encoder with the checkpoint's weights put in
    by load_into_encoder) is what training saw for it (float16 cached states for top:N)."""
    cfg = Config(encoder=tiny_encoder, finetune=finetune, max_length=32)
    table = TextTable.from_corpus(load_corpus(None))
    feats = make_features(cfg, table, torch.device("cpu"), progress=False)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in feats.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))  # as if trained
    state = {k: v.clone() for k, v in feats.checkpoint_state().items()}
    model, tok = load_encoder(tiny_encoder)
    untouched = encode_texts(
        model, tok, table.texts[:6], pooling=cfg.pooling, max_length=32, batch_size=4, device=torch.device("cpu")
    )
    feature_class(cfg).load_into_encoder(model, state, cfg)
    whole = encode_texts(
        model, tok, table.texts[:6], pooling=cfg.pooling, max_length=32, batch_size=4, device=torch.device("cpu")
    )  # [6, H]
    seen = feats.embed(np.arange(6)).numpy()  # [6, H]
    np.testing.assert_allclose(whole, seen, atol=atol)
    assert np.abs(untouched - seen).max() > 10 * atol, "the trained weights must matter"


@pytest.mark.slow
@pytest.mark.parametrize("finetune", ["none", "top:1", "all"])
def test_finetuning_changes_exactly_the_trainable_weights(cfg, finetune):
    run = Trainer(cfg.replace(finetune=finetune, encoder_lr=1e-2, lr=1e-2), progress=False)
    base = run.model.features._base[0] if getattr(run.model.features, "_base", None) else None
    trainable = {id(p) for p in run.model.features.trainable.parameters()}
    before = {n: p.detach().clone() for n, p in (base.named_parameters() if base is not None else [])}
    heads_before = {n: p.detach().clone() for n, p in run.model.heads.named_parameters()}
    run.train_epoch(0)
    assert all(not torch.equal(p, heads_before[n]) for n, p in run.model.heads.named_parameters()), "heads must train"
    if base is None:  # finetune=none: only the heads exist
        return
    changed = {n for n, p in base.named_parameters() if not torch.equal(p, before[n])}
    frozen = {n for n, p in base.named_parameters() if id(p) not in trainable}
    assert not (changed & frozen), f"frozen weights changed: {sorted(changed & frozen)[:3]}"
    if finetune == "top:1":
        assert frozen and any(".layer.1." in n for n in changed) and not any(".layer.0." in n for n in changed)
    else:
        assert any(".layer.0." in n for n in changed) and any("embeddings" in n for n in changed)


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["cls", "pooler"])
def test_cls_and_pooler_pooling_give_their_own_features_and_train(cfg, tmp_path, pooling):
    """The cached features are the [CLS] vector / BERT's pooler output, computed here directly with
    transformers, and differ from mean pooling; a run (frozen and top:1) trains with them."""
    from transformers import AutoTokenizer, BertModel

    feats = {}
    for p in ("mean", pooling):
        run = Trainer(cfg.replace(pooling=p), progress=False)
        tids = run.table.splits["validation"].point[:6]
        feats[p] = run.model.features.embed(tids).cpu()
        run.close()
    texts = [run.table.texts[t] for t in tids]
    model = BertModel.from_pretrained(cfg.encoder).eval()
    tok = AutoTokenizer.from_pretrained(cfg.encoder)
    with torch.no_grad():
        out = model(**tok(texts, max_length=cfg.max_length, truncation=True, padding=True, return_tensors="pt"))
    want = out.last_hidden_state[:, 0] if pooling == "cls" else out.pooler_output
    np.testing.assert_allclose(feats[pooling].numpy(), want.numpy(), atol=5e-3)
    assert (feats[pooling] - feats["mean"]).abs().max() > 0.1, "pooling made no difference"
    for finetune in ("none", "top:1"):
        h = train(
            cfg.replace(pooling=pooling, epochs=1, finetune=finetune),
            tmp_path / finetune.replace(":", ""),
            progress=False,
        )
        assert np.isfinite(h[0]["train/loss"]) and 0 <= h[0]["validation/mean/acc@1"] <= 1
