"""Where rank's candidates come from (counterarg.serving.candidates): a corpus split's counters, a text or
.jsonl file, a .npy with its texts; their embeddings from the cheapest place; one argument ranked as the
model ranks. The command end to end (output, the feature cache of a frozen checkpoint): tests/test_cli.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from counterarg.config import ConfigError
from counterarg.model.biencoder import BiEncoder
from counterarg.serving.candidates import CandidateSource, embed_candidates, rank_text, read_candidates


@pytest.fixture(scope="module")
def model(top1_checkpoint):
    """A trained checkpoint (top:1 of the encoder trained, eval_mode fused) with the whole encoder."""
    return BiEncoder.from_checkpoint(top1_checkpoint)


def test_a_text_or_jsonl_file_names_each_candidate_by_its_line(model, tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("  first counter \n\nsecond counter\n")
    got = read_candidates(model, CandidateSource(str(f)))
    assert got.texts == ["first counter", "second counter"]
    assert got.sources == [f"{f}:1", f"{f}:3"]  # the file's own line numbers
    assert got.given is None and got.base is None
    j = tmp_path / "c.jsonl"
    j.write_text(json.dumps({"body": "a"}) + "\n" + json.dumps({"body": "b"}) + "\n")
    assert read_candidates(model, CandidateSource(str(j), field="body")).texts == ["a", "b"]
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ConfigError, match="holds no non-empty lines"):
        read_candidates(model, CandidateSource(str(tmp_path / "empty.txt")))


def test_a_corpus_splits_counters_each_text_once(model):
    got = read_candidates(model, CandidateSource(split="validation"))
    split = got.base.corpus.split("validation")
    assert got.texts == list(dict.fromkeys(p.counter.text for p in split.pairs))
    assert len(got.sources) == len(got.texts) and got.base.table.texts  # the model's corpus, its table
    assert got.base.device == model.device
    copies = [s for s in got.sources if "verbatim copies" in s]
    assert len(got.texts) + sum(int(s.split("(and ")[1].split()[0]) for s in copies) == len(split.pairs)


def test_a_npy_is_ranked_as_given_by_a_scorer_without_the_classifier(model, tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("first\nsecond\n")
    npy = tmp_path / "c.npy"
    s = np.random.default_rng(0).normal(size=(2, model.heads.sim_dim)).astype(np.float32)
    np.save(npy, s)
    with pytest.raises(ConfigError, match="--candidate-texts FILE"):
        read_candidates(model, CandidateSource(str(npy)))
    np.save(tmp_path / "bad.npy", s[:, :3])
    with pytest.raises(ConfigError, match=r"shape \(2, 3\); expected \[2, "):
        read_candidates(model, CandidateSource(str(tmp_path / "bad.npy"), str(texts)))
    with pytest.raises(ConfigError, match="classifier of eval_mode=fused.*--set eval_mode=retrieval"):
        read_candidates(model, CandidateSource(str(npy), str(texts)))
    plain = BiEncoder.from_checkpoint(model.source)
    plain.config = plain.config.replace(eval_mode="retrieval")
    got = read_candidates(plain, CandidateSource(str(npy), str(texts)))
    assert got.sources == [f"{texts}:1", f"{texts}:2"]
    h, sc, how = embed_candidates(plain, got)
    assert h is None and how == "from the .npy" and torch.equal(sc, torch.from_numpy(s))


def test_texts_are_encoded_once_then_read_from_the_cache_and_ranked_as_the_model_ranks(model, tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("banks pay more tax\ngrowth needs lower taxes\nschools need funding\n")
    cands = read_candidates(model, CandidateSource(str(f)))
    first = rank_text(model, "Taxes on banks hurt growth", cands, 2, progress=False)
    again = rank_text(model, "Taxes on banks hurt growth", cands, 2, progress=False)
    assert (first.how, again.how) == ("encoded", "from cache")
    assert first.ids.tolist() == again.ids.tolist() and len(first.ids) == 2 and first.seconds > 0
    hq, sq = model.embed(["Taxes on banks hurt growth"])
    hc, sc = model.embed(cands.texts)
    ids, scores = model.rank((hq[0], sq[0]), (hc, sc), k=2)
    assert first.ids.tolist() == ids.tolist()
    np.testing.assert_allclose(first.scores, scores, atol=1e-5)
