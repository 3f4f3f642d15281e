"""The plain-torch BERT inference pass (counterarg.nn.plain_bert): the same tokens, hidden states and
pooled features as transformers' BertModel, and transformers' own load for any folder it does not
reproduce."""

import json
import shutil

import numpy as np
import pytest
import torch

from counterarg.nn.encoder import EncoderError, encode_texts, load_encoder, resolve_encoder
from counterarg.nn.plain_bert import PlainBert, load_plain_bert

#: texts beside the demo corpus's: accents, CJK, an emoji, control characters, an empty text, and one
#: cut by max_length
ODD_TEXTS = ["Ünïcödé café naïve — 東京 🙂 tab\tnew\nline", "", "a " * 400, "[CLS] [SEP] [PAD] ##ing"]


@pytest.fixture(scope="module")
def texts():
    from counterarg.data.corpus import TextTable, load_corpus

    return TextTable.from_corpus(load_corpus(None)).texts[:120] + ODD_TEXTS


def _copy(folder, tmp_path, name="enc"):
    out = tmp_path / name
    shutil.copytree(folder, out)
    return out


@pytest.mark.parametrize("which", ["tiny", "minilm"])
def test_tokens_and_pooled_features_equal_transformers_bertmodel(tiny_encoder, texts, which):
    """Each pooling of the tiny random BERT and the embedded MiniLM: token ids, hidden states and
    pooled features of the plain pass equal transformers' (padded batches, texts cut at max_length)."""
    loc = tiny_encoder if which == "tiny" else resolve_encoder(None)
    hf, hf_tok = load_encoder(loc, "mean")
    plain, plain_tok = load_encoder(loc, "mean", forward_only=True)
    assert type(hf).__name__ == "BertModel" and isinstance(plain, PlainBert)
    kw = {"truncation": True, "max_length": 48}
    assert plain_tok(texts, **kw)["input_ids"] == hf_tok(texts, **kw)["input_ids"]
    batch = hf_tok(texts[:16], padding=True, return_tensors="pt", **kw)
    assert batch["attention_mask"].min() == 0  # padded: the attention mask is used
    mine = plain_tok(texts[:16], padding=True, return_tensors="pt", **kw)
    assert {k: v.tolist() for k, v in mine.items()} == {k: batch[k].tolist() for k in mine}
    with torch.no_grad():
        want = hf(**batch).last_hidden_state
        got = plain(**mine).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    cpu = torch.device("cpu")
    for pooling in ("mean", "cls", "pooler"):
        run = {"pooling": pooling, "max_length": 48, "batch_size": 16, "device": cpu}
        np.testing.assert_allclose(
            encode_texts(plain, plain_tok, texts, **run), encode_texts(hf, hf_tok, texts, **run), atol=1e-5, rtol=1e-5
        )


def test_a_checkpoints_trained_layer_loads_as_into_bertmodel(top1_checkpoint):
    """A finetune=top:1 checkpoint: its trained top layer goes into the plain encoder as into
    BertModel, and both embed (h and s) alike."""
    from counterarg.model.biencoder import BiEncoder

    hf = BiEncoder.from_checkpoint(top1_checkpoint)
    plain = BiEncoder.from_checkpoint(top1_checkpoint, forward_only=True)
    assert type(hf.encoder).__name__ == "BertModel" and isinstance(plain.encoder, PlainBert)
    assert hf.trained_state(), "the checkpoint should hold a trained layer"
    texts = ["Taxes on banks hurt growth", "schools need funding", "a longer text " * 10]
    for got, want in zip(plain.embed(texts), hf.embed(texts)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "change",
    ["not bert", "relative positions", "unknown activation", "no tokenizer.json", "fp16 weights", "no pooler"],
)
def test_a_folder_it_does_not_reproduce_loads_through_transformers(tiny_encoder, tmp_path, change):
    """load_plain_bert declines (None) what it does not compute exactly as transformers does, and
    load_encoder(forward_only=True) then gives transformers' model."""
    from safetensors.torch import load_file, save_file

    folder = _copy(tiny_encoder, tmp_path)
    weights = folder / "model.safetensors"
    if change == "not bert":
        _edit_json(folder / "config.json", model_type="roberta")
    elif change == "relative positions":
        _edit_json(folder / "config.json", position_embedding_type="relative_key")
    elif change == "unknown activation":
        _edit_json(folder / "config.json", hidden_act="quick_gelu")
    elif change == "no tokenizer.json":
        (folder / "tokenizer.json").unlink()
    elif change == "fp16 weights":
        save_file({k: v.half() for k, v in load_file(weights).items()}, weights, metadata={"format": "pt"})
    else:
        state = {k: v for k, v in load_file(weights).items() if not k.startswith("pooler.")}
        save_file(state, weights, metadata={"format": "pt"})
    assert load_plain_bert(str(folder)) is None
    if change in ("not bert", "relative positions", "unknown activation"):
        return  # a config transformers may read otherwise; the point is that the plain pass declines it
    model, _ = load_encoder(str(folder), "mean", forward_only=True)
    assert type(model).__name__ == "BertModel"


def test_the_plain_load_keeps_transformers_errors(tiny_encoder, tmp_path):
    """pooling=pooler without saved pooler weights, and a damaged weight file, are still the named
    errors of transformers' load (the plain pass declines both)."""
    from safetensors.torch import load_file, save_file

    folder = _copy(tiny_encoder, tmp_path, "no-pooler")
    weights = folder / "model.safetensors"
    save_file({k: v for k, v in load_file(weights).items() if not k.startswith("pooler.")}, weights)
    with pytest.raises(EncoderError, match="without pooler weights"):
        load_encoder(str(folder), "pooler", forward_only=True)
    broken = _copy(tiny_encoder, tmp_path, "broken")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(EncoderError, match="cannot load encoder"):
        load_encoder(str(broken), "mean", forward_only=True)
