"""Encoder loading (counterarg.nn.encoder): pooler weights, damaged weight files, devices, text clipping."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from counterarg.nn.encoder import CHARS_PER_TOKEN, EncoderError, encode_texts, load_encoder, pick_device


@pytest.fixture
def no_pooler_encoder(tiny_encoder, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "no-pooler"
    shutil.copytree(tiny_encoder, folder)
    weights = next(folder.glob("*.safetensors"))
    state = {k: v for k, v in load_file(weights).items() if not k.startswith("pooler.")}
    save_file(state, weights, metadata={"format": "pt"})
    return str(folder)


def test_pooler_pooling_without_saved_pooler_weights_is_a_named_error(
    no_pooler_encoder, tiny_encoder, tmp_path, capsys
):
    """Transformers would draw a random pooler at every load; refuse and say what to use."""
    with pytest.raises(EncoderError, match=r"without pooler weights.*pooler\.dense.*pooling=cls or pooling=mean"):
        load_encoder(no_pooler_encoder, "pooler")
    load_encoder(no_pooler_encoder, "mean")  # other poolings do not need it
    load_encoder(tiny_encoder, "pooler")  # saved with its pooler: fine
    from counterarg.cli import main

    assert (
        main(
            [
                "train",
                "--out",
                str(tmp_path / "r"),
                "--epochs",
                "1",
                "--quiet",
                "--set",
                f"encoder={no_pooler_encoder}",
                "--set",
                "pooling=pooler",
            ]
        )
        == 2
    )
    assert "pooling=cls or pooling=mean" in capsys.readouterr().err


def test_damaged_weight_file_is_a_named_error(tiny_encoder, tmp_path):
    """A corrupt safetensors encoder gives EncoderError naming it, not a traceback."""
    folder = tmp_path / "broken"
    shutil.copytree(tiny_encoder, folder)
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(EncoderError, match=f"cannot load encoder.*{folder.name}.*damaged"):
        load_encoder(str(folder))


def test_unavailable_mps_device_is_a_named_error():
    """Device=mps on a machine without it is an EncoderError, not a torch traceback."""
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(EncoderError, match="device 'mps'"):
        pick_device("mps")


def test_texts_are_clipped_by_characters_before_tokenising(tiny_encoder):
    """A huge text is cut to max_length * CHARS_PER_TOKEN characters before the tokenizer
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
    clipped = encode_texts(
        model, Spy(), [huge], pooling="mean", max_length=max_length, batch_size=1, device=torch.device("cpu")
    )
    assert max(seen) == max_length * CHARS_PER_TOKEN
    uncut = encode_texts(
        model,
        tok,
        [huge[: 10 * max_length * CHARS_PER_TOKEN]],
        pooling="mean",
        max_length=max_length,
        batch_size=1,
        device=torch.device("cpu"),
    )
    np.testing.assert_allclose(clipped, uncut, atol=1e-6)


def test_cached_hidden_states_plus_top_layers_equal_full_encoder(tiny_encoder):
    from counterarg.nn.encoder import hidden_states, pool, run_layers

    model, tok = load_encoder(tiny_encoder)
    texts = ["a short one", "a much longer text about taxes and the rich " * 5, "middle length text here"]
    full = encode_texts(model, tok, texts, pooling="mean", max_length=64, batch_size=2, device=torch.device("cpu"))
    states, lengths = hidden_states(
        model, tok, texts, layer=1, max_length=64, batch_size=2, device=torch.device("cpu")
    )  # [3, 64, H] float16, [3]
    assert states.shape[:2] == (3, 64) and states.dtype == np.float16 and lengths.dtype == np.int32
    assert lengths[1] > lengths[2] > lengths[0] and not states[0, lengths[0] :].any()  # zero past the tokens
    t = int(lengths.max())
    mask = (torch.arange(t)[None] < torch.as_tensor(lengths)[:, None]).long()
    with torch.no_grad():
        h = run_layers(model, model.encoder.layer[1:], torch.from_numpy(states[:, :t].astype(np.float32)), mask)
        top = pool(h, mask, "mean")
    np.testing.assert_allclose(top.numpy(), full, atol=2e-2)  # float16 cache


def test_configs_default_encoder_is_the_embedded_one():
    """Config's default ``encoder`` (written there so that importing config needs no torch) names the
    embedded encoder this module loads (nn.encoder.DEFAULT_ENCODER)."""
    from counterarg.config import Config
    from counterarg.nn.encoder import DEFAULT_ALIASES, DEFAULT_ENCODER

    assert Config().encoder == DEFAULT_ENCODER and DEFAULT_ENCODER in DEFAULT_ALIASES


def test_an_encoder_in_object_storage_is_fetched_checked_and_a_missing_one_named(
    s3_server, s3_bucket, tmp_path, tiny_encoder, monkeypatch
):
    """``encoder=s3://.../my-bert`` (a folder sealed by its manifest) loads from this machine's cache;
    a folder that is not there is an EncoderError naming the URI."""
    from counterarg.core.remote import filesystem, put_sealed_dir
    from counterarg.nn.encoder import resolve_encoder

    monkeypatch.setenv("COUNTERARG_CACHE", str(tmp_path / "cache"))
    fs, path = filesystem(f"s3://{s3_bucket}/models/tiny")
    put_sealed_dir(Path(tiny_encoder), fs, path)
    local = Path(resolve_encoder(f"s3://{s3_bucket}/models/tiny"))
    assert local.is_relative_to(tmp_path / "cache")
    assert (local / "config.json").read_bytes() == (Path(tiny_encoder) / "config.json").read_bytes()
    with pytest.raises(EncoderError, match=f"s3://{s3_bucket}/models/nope"):
        resolve_encoder(f"s3://{s3_bucket}/models/nope")
