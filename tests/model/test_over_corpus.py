"""Corpus → table → device → model in one place (counterarg.model.over_corpus): what it loads and says,
the device and threads it sets, and the fresh model, the checkpoint's model and the features it builds
over the table, each as built by hand before."""

from __future__ import annotations

import pytest
import torch

from counterarg.config import Config
from counterarg.data.corpus import CorpusError, TextTable, load_corpus
from counterarg.model.biencoder import BiEncoder
from counterarg.model.checkpoint import read_checkpoint
from counterarg.model.over_corpus import over_corpus
from counterarg.nn.encoder import EncoderError


@pytest.fixture
def config(tiny_encoder):
    return Config(encoder=tiny_encoder, max_length=32, finetune="none", seed=3)  # the demo corpus


def test_the_corpus_its_table_and_the_device(config, capsys, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("COUNTERARG_THREADS", "1")
    try:
        base = over_corpus(config)
        assert torch.get_num_threads() == 1  # as a Tune trial asks
    finally:
        torch.set_num_threads(before)
    said = capsys.readouterr().out
    assert "DEMO corpus" in said and f"corpus {base.corpus.source}" in said
    assert base.table.texts == TextTable.from_corpus(load_corpus(None)).texts
    assert base.device == torch.device("cpu") and base.corpus.is_demo
    again = over_corpus(config, corpus=base.corpus, device=torch.device("cpu"), announce=False)
    assert again.corpus is base.corpus and capsys.readouterr().out == ""  # given as is, said nothing
    quiet = over_corpus(config, progress=False)
    assert quiet.table.texts == base.table.texts
    assert capsys.readouterr().out.count("\n") == 1  # the demo warning alone: said even when quiet
    if not torch.cuda.is_available():  # the device is the config's, checked as by hand
        with pytest.raises(EncoderError, match="CUDA is not available"):
            over_corpus(config.replace(device="cuda"), announce=False)
    with pytest.raises(CorpusError):
        over_corpus(config.replace(corpus="/nonexistent/corpus.zip"))


def test_the_models_it_builds_are_those_built_by_hand(config, tmp_path):
    base = over_corpus(config, announce=False, progress=False)
    model = base.build(config, progress=False)
    by_hand = BiEncoder.build(config, TextTable.from_corpus(base.corpus), torch.device("cpu"), progress=False)
    assert model.table is base.table and model.device == base.device
    for a, b in zip(model.heads.state_dict().values(), by_hand.heads.state_dict().values()):
        assert torch.equal(a, b)  # the same seed, the same heads
    ids = base.table.splits["validation"].point[:4]
    assert torch.equal(model.features.embed(ids), by_hand.features.embed(ids))  # [4, H], the same features
    with torch.no_grad():
        next(model.heads.parameters()).add_(1.0)
    model.fused_w = 0.25
    saved = read_checkpoint(model.save(tmp_path / "ck"))
    loaded = base.load(saved, source=tmp_path / "ck", progress=False)
    assert loaded.table is base.table and loaded.fused_w == 0.25 and loaded.source == tmp_path / "ck"
    for a, b in zip(loaded.heads.state_dict().values(), model.heads.state_dict().values()):
        assert torch.equal(a, b)
    assert loaded.config == model.config
    scoring = base.load(saved, config.replace(eval_mode="retrieval"), progress=False)
    assert scoring.config.eval_mode == "retrieval"
    features = base.features(config, progress=False)
    assert torch.equal(features.embed(ids), model.features.embed(ids))
