"""Texts outside training (counterarg.serving.inference): rank's candidate cache (by weights and texts, healed
when damaged, skipped on a full disk, in this machine's cache) and embed's .npy output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from counterarg.config import ConfigError
from counterarg.model.biencoder import BiEncoder
from counterarg.serving.inference import candidate_embeddings, save_embeddings


@pytest.fixture(scope="module")
def checkpoint(top1_checkpoint):
    return top1_checkpoint


def test_candidate_embeddings_are_cached_by_weights_and_texts(checkpoint, tmp_path):
    model = BiEncoder.from_checkpoint(checkpoint)
    texts = ["one candidate", "another candidate text", "a third"]
    h, s, cached = candidate_embeddings(model, texts, progress=False, cache_dir=str(tmp_path))
    assert not cached and h.shape == (3, model.hidden) and s.shape[0] == 3
    h2, s2, cached2 = candidate_embeddings(model, texts, progress=False, cache_dir=str(tmp_path))
    assert cached2 and torch.equal(h, h2) and torch.equal(s, s2)
    assert not candidate_embeddings(model, texts[:2], progress=False, cache_dir=str(tmp_path))[2]  # other texts


def test_save_embeddings_writes_float32_npy_and_refuses_to_overwrite(tmp_path):
    out = save_embeddings(tmp_path / "sub" / "e.npy", np.ones((2, 3), dtype=np.float64))
    assert np.load(out).dtype == np.float32 and np.load(out).shape == (2, 3)
    with pytest.raises(ConfigError, match="exists; pass --force"):
        save_embeddings(out, np.zeros((1, 1)))
    save_embeddings(out, np.zeros((1, 1)), force=True)
    assert np.load(out).shape == (1, 1)
    with pytest.raises(ConfigError, match=r"must end in \.npy"):
        save_embeddings(tmp_path / "e.txt", np.zeros((1, 1)))


def _rank_entry_file(cache):
    """The candidate cache's one entry file to tamper with (its ``s`` array)."""
    entries = [p for p in (cache / "rank").iterdir() if not p.name.endswith(".lock")]
    assert len(entries) == 1
    return entries[0] / "s.npy" if entries[0].is_dir() else entries[0]


@pytest.mark.parametrize("tamper", ["flip", "same_shape"])
def test_a_damaged_or_replaced_candidate_cache_is_rebuilt(checkpoint, tmp_path, capsys, tamper):
    """One flipped byte, or a same-shape array put in its place, is caught (sha256)
    and the entry rebuilt: rank gives the same embeddings as before, never an error or other ranks."""
    model = BiEncoder.from_checkpoint(checkpoint)
    texts = ["one candidate", "another candidate text", "a third"]
    _, s, _ = candidate_embeddings(model, texts, progress=False, cache_dir=str(tmp_path))
    f = _rank_entry_file(tmp_path)
    if tamper == "flip":
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0x10
        f.write_bytes(bytes(data))
    elif f.suffix == ".npy":
        np.save(f, np.zeros(s.shape, dtype=np.float32))
    else:  # the single-file cache of before
        np.savez(f, h=np.zeros((3, model.hidden), np.float32), s=np.zeros(s.shape, np.float32))
    capsys.readouterr()
    _, s2, cached = candidate_embeddings(model, texts, progress=False, cache_dir=str(tmp_path))
    assert not cached and torch.equal(s, s2)
    assert "rebuilding" in capsys.readouterr().out
    assert candidate_embeddings(model, texts, progress=False, cache_dir=str(tmp_path))[2]  # healed


def test_a_candidate_cache_on_a_full_disk_still_ranks(checkpoint, tmp_path, capsys, monkeypatch):
    """Rank printed no ranking when its cache write failed; now it says so and
    goes on with the encoded texts, leaving no half entry."""
    import errno

    from counterarg.core import io

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(io, "_fsync_file", full)
    model = BiEncoder.from_checkpoint(checkpoint)
    h, s, cached = candidate_embeddings(model, ["one", "two"], progress=False, cache_dir=str(tmp_path))
    assert not cached and s.shape[0] == 2
    assert "candidate cache not written (disk full" in capsys.readouterr().out
    assert [p.suffix for p in (tmp_path / "rank").iterdir()] == [".lock"]
