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


# ---------------------------------------------------------------- similarity heads: where each starts
from counterarg.evaluate import query_ranks  # noqa: E402
from counterarg.model import HEAD_STARTS, Heads  # noqa: E402
from counterarg.pools import pools_from_labels  # noqa: E402


@pytest.fixture
def pooled():
    g = torch.Generator().manual_seed(0)
    q = 24
    pools = pools_from_labels("test", [f"t{i % 2}/d{i % 4}" for i in range(q)], ["pro", "con"] * (q // 2))
    return pools, torch.randn(q, 16, generator=g), torch.randn(q, 16, generator=g)


@pytest.mark.parametrize("head", ["identity", "residual"])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_identity_start_reproduces_zero_shot_ranks(pooled, head, metric):
    pools, hp, hc = pooled
    heads = Heads(16, 0, head)
    zero_shot = query_ranks(pools, hp, hc, mode="retrieval", metric=metric)
    with torch.no_grad():
        before = query_ranks(pools, heads.similarity(hp), heads.similarity(hc), mode="retrieval", metric=metric)
    for task, ranks in zero_shot.items():
        torch.testing.assert_close(before[task], ranks)


def test_orthogonal_start_keeps_distances(pooled):
    _, hp, hc = pooled
    torch.manual_seed(1)
    heads = Heads(16, 16, "orthogonal")
    with torch.no_grad():
        torch.testing.assert_close(torch.cdist(heads.similarity(hp), heads.similarity(hc)), torch.cdist(hp, hc),
                                   atol=1e-4, rtol=1e-4)


def test_sim_dim_zero_is_the_encoder_width_and_identity_can_project():
    assert Heads(16, 0, "linear").sim_dim == 16
    h = torch.randn(3, 16)
    torch.testing.assert_close(Heads(16, 4, "identity").similarity(h), h[:, :4])
    with pytest.raises(ValueError, match="residual"):
        Heads(16, 8, "residual")


@pytest.mark.parametrize("head", sorted(HEAD_STARTS))
def test_drift_is_zero_at_the_start_and_grows_with_the_change(head):
    torch.manual_seed(2)
    heads = Heads(8, 8, head)
    assert heads.drift().item() == 0.0
    with torch.no_grad():
        heads.sim.weight[0, 0] += 0.5
    assert heads.drift().item() == pytest.approx(0.25)


def test_linear_head_keeps_the_reference_random_start():
    torch.manual_seed(3)
    ref = torch.nn.Linear(8, 4)
    torch.manual_seed(3)
    heads = Heads(8, 4, "linear")
    torch.testing.assert_close(heads.sim.weight, ref.weight)


def test_cached_hidden_states_plus_top_layers_equal_full_encoder(tiny_encoder):
    from counterarg.model import hidden_states, pool, run_layers

    model, tok = load_encoder(tiny_encoder)
    texts = ["a short one", "a much longer text about taxes and the rich " * 5, "middle length text here"]
    full = encode_texts(model, tok, texts, pooling="mean", max_length=64, batch_size=2, device=torch.device("cpu"))
    states, lengths = hidden_states(model, tok, texts, layer=1, max_length=64, batch_size=2,
                                    device=torch.device("cpu"))  # [3, 64, H] float16, [3]
    assert states.shape[:2] == (3, 64) and states.dtype == np.float16 and lengths.dtype == np.int32
    assert lengths[1] > lengths[2] > lengths[0] and not states[0, lengths[0]:].any()  # zero past the tokens
    t = int(lengths.max())
    mask = (torch.arange(t)[None] < torch.as_tensor(lengths)[:, None]).long()
    with torch.no_grad():
        h = run_layers(model, model.encoder.layer[1:], torch.from_numpy(states[:, :t].astype(np.float32)), mask)
        top = pool(h, mask, "mean")
    np.testing.assert_allclose(top.numpy(), full, atol=2e-2)  # float16 cache


def test_configs_default_encoder_is_the_embedded_one():
    """Config's default ``encoder`` (written there so that importing config needs no torch) names the
    embedded encoder this module loads (model.DEFAULT_ENCODER)."""
    from counterarg.config import Config
    from counterarg.model import DEFAULT_ALIASES, DEFAULT_ENCODER

    assert Config().encoder == DEFAULT_ENCODER and DEFAULT_ENCODER in DEFAULT_ALIASES
