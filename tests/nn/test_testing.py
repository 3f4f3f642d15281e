"""The tiny test encoder (counterarg.nn.testing): loads like any encoder, reused only while its files are intact."""

from __future__ import annotations

import torch

from counterarg.nn.encoder import load_encoder
from counterarg.nn.testing import make_tiny_encoder


def test_tiny_encoder_is_made_once_and_remade_when_a_file_changed(tmp_path):
    folder = make_tiny_encoder(tmp_path / "bert", layers=1, hidden=16)
    model, tok = load_encoder(folder)
    assert len(model.encoder.layer) == 1 and model.config.hidden_size == 16 and tok("a text")["input_ids"]
    before = {k: v.clone() for k, v in model.state_dict().items()}  # the loaded weights map the file
    weights = next((tmp_path / "bert").glob("*.safetensors"))
    stamp = weights.stat().st_mtime_ns
    assert make_tiny_encoder(tmp_path / "bert", layers=1, hidden=16) == folder
    assert weights.stat().st_mtime_ns == stamp  # intact: reused, not saved again
    weights.write_bytes(weights.read_bytes()[:-10])  # cut short
    make_tiny_encoder(tmp_path / "bert", layers=1, hidden=16)
    again, _ = load_encoder(folder)
    for k, v in again.state_dict().items():
        assert torch.equal(v, before[k]), k  # remade from the same seed
    make_tiny_encoder(tmp_path / "bert", layers=2, hidden=16)  # another shape: made anew
    assert len(load_encoder(folder)[0].encoder.layer) == 2
