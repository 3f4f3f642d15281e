"""Encoder loading (model.py): pooler weights, damaged weight files, devices, text clipping."""

import shutil

import numpy as np
import pytest
import torch

from counterarg.model import CHARS_PER_TOKEN, EncoderError, encode_texts, load_encoder, pick_device


@pytest.fixture
def no_pooler_encoder(tiny_encoder, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "no-pooler"
    shutil.copytree(tiny_encoder, folder)
    weights = next(folder.glob("*.safetensors"))
    state = {k: v for k, v in load_file(weights).items() if not k.startswith("pooler.")}
    save_file(state, weights, metadata={"format": "pt"})
    return str(folder)


def test_pooler_pooling_without_saved_pooler_weights_is_a_named_error(no_pooler_encoder, tiny_encoder, tmp_path,
                                                                      capsys):
    """Finding 3: transformers would draw a random pooler at every load; refuse and say what to use."""
    with pytest.raises(EncoderError, match=r"without pooler weights.*pooler\.dense.*pooling=cls or pooling=mean"):
        load_encoder(no_pooler_encoder, "pooler")
    load_encoder(no_pooler_encoder, "mean")  # other poolings do not need it
    load_encoder(tiny_encoder, "pooler")  # saved with its pooler: fine
    from counterarg.cli import main

    assert main(["train", "--out", str(tmp_path / "r"), "--epochs", "1", "--quiet", "--set",
                 f"encoder={no_pooler_encoder}", "--set", "pooling=pooler"]) == 2
    assert "pooling=cls or pooling=mean" in capsys.readouterr().err


def test_damaged_weight_file_is_a_named_error(tiny_encoder, tmp_path):
    """Finding 8: a corrupt safetensors encoder gives EncoderError naming it, not a traceback."""
    folder = tmp_path / "broken"
    shutil.copytree(tiny_encoder, folder)
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(EncoderError, match=f"cannot load encoder.*{folder.name}.*damaged"):
        load_encoder(str(folder))


def test_unavailable_mps_device_is_a_named_error():
    """Finding 8: device=mps on a machine without it is an EncoderError, not a torch traceback."""
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(EncoderError, match="device 'mps'"):
        pick_device("mps")


def test_texts_are_clipped_by_characters_before_tokenising(tiny_encoder):
    """Finding 6: a huge text is cut to max_length * CHARS_PER_TOKEN characters before the tokenizer
    sees it, and the features are those of the uncut text (only max_length tokens count)."""
    model, tok = load_encoder(tiny_encoder)
    seen = []

    class Spy:
        def __getattr__(self, name):
            return getattr(tok, name)

        def __call__(self, texts, **kw):
            seen.extend(len(t) for t in texts)
            return tok(texts, **kw)

    huge = "taxes hurt growth " * 200_000  # 3.6 M characters
    max_length = 32
    clipped = encode_texts(model, Spy(), [huge], pooling="mean", max_length=max_length, batch_size=1,
                           device=torch.device("cpu"))
    assert max(seen) == max_length * CHARS_PER_TOKEN
    uncut = encode_texts(model, tok, [huge[: 10 * max_length * CHARS_PER_TOKEN]], pooling="mean",
                         max_length=max_length, batch_size=1, device=torch.device("cpu"))
    np.testing.assert_allclose(clipped, uncut, atol=1e-6)
