"""Embeddings of texts outside training: ``rank``'s candidates (cached) and ``embed``'s ``.npy`` output.

The model itself is biencoder.BiEncoder (loaded with ``from_checkpoint``, whole encoder); here are
the caches ``rank`` reads to avoid encoding candidates again (the feature cache training built, or a
cache of the encoded candidates keyed by the checkpoint's weights and the texts) and how ``embed``
writes its file. Where ``rank``'s candidates come from, and the ranking itself: candidates.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..model.features import feature_class

if TYPE_CHECKING:
    from ..model.biencoder import BiEncoder
    from ..model.over_corpus import OverCorpus


def cached_pooled(model: BiEncoder, base: OverCorpus, texts: list[str]) -> torch.Tensor | None:
    """``h [C, H]`` of ``texts`` (texts of ``base``'s corpus) from the pooled-feature cache training built,
    when the checkpoint's encoder is frozen (``finetune=none``: its pooled output is exactly what
    training cached) and that cache is built; else None (then the texts must be encoded).

    The first ``rank`` against a corpus split then runs only the heads over cached vectors instead of
    the encoder over every candidate (1,292 ArguAna test counters: about a minute on 2 cores)."""
    from ..data.feature_cache import load_built
    from ..model.features import PooledFeatures, cache_folder

    if feature_class(model.config) is not PooledFeatures:
        return None
    arrays = load_built(*cache_folder(model.config, base.table))
    if arrays is None or "pooled" not in arrays:
        return None
    index = {t: i for i, t in enumerate(base.table.texts)}
    if any(t not in index for t in texts):
        return None
    pooled = arrays["pooled"][np.array([index[t] for t in texts], dtype=np.int64)]  # [C, H]
    return torch.from_numpy(np.ascontiguousarray(pooled, dtype=np.float32)).to(model.device)


def candidate_embeddings(
    model: BiEncoder, texts: list[str], *, progress: bool = True, cache_dir: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(h [C, H], s [C, sim_dim], from_cache)`` of candidate texts, cached by content.

    The key is the checkpoint's weights (sha256 of its state file) and the texts themselves, so a
    second ``counterarg rank`` against the same collection loads them instead of re-encoding (the
    first encodes with a progress bar). The entry ``$COUNTERARG_CACHE/rank/<key>/`` (``h.npy``,
    ``s.npy``) is a cache entry like the feature cache's (feature_cache.load_or_build): sealed with
    sha256, its shapes checked, rebuilt on any read error. A cache that cannot be written (full
    disk) is said so and the ranking goes on from the encoded texts.
    """
    import hashlib

    from ..core.io import DiskFullError, cache_root
    from ..data.feature_cache import load_or_build

    h = hashlib.sha256(model.fingerprint().encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    folder = cache_root(cache_dir or model.config.cache_dir) / "rank" / h.hexdigest()[:24]
    encoded: list[tuple[torch.Tensor, torch.Tensor]] = []

    def build(tmp: Path) -> None:
        encoded.append(model.embed(texts, progress=progress))
        np.save(tmp / "h.npy", encoded[0][0].cpu().numpy())
        np.save(tmp / "s.npy", encoded[0][1].cpu().numpy())

    def check(arrays: dict) -> str | None:
        want = {"h": (len(texts), model.hidden), "s": (len(texts), model.heads.sim_dim)}
        got = {k: tuple(arrays[k].shape) if k in arrays else None for k in want}
        bad = [f"{k}.npy has shape {got[k]}, expected {want[k]}" for k in want if got[k] != want[k]]
        bad += [
            f"{k}.npy is {arrays[k].dtype}, not float32" for k in want if k in arrays and arrays[k].dtype != np.float32
        ]
        return "; ".join(bad) or None

    try:
        arrays = load_or_build(folder, {"kind": "rank", "n_texts": len(texts)}, build, check, what="candidate cache")
    except DiskFullError as e:
        if not encoded:
            raise
        print(f"[counterarg] candidate cache not written ({e}); ranking from the encoded texts", flush=True)
        return encoded[0][0], encoded[0][1], False
    if encoded:
        return encoded[0][0], encoded[0][1], False
    return torch.from_numpy(arrays["h"]).to(model.device), torch.from_numpy(arrays["s"]).to(model.device), True


def save_embeddings(out: str | Path, s: np.ndarray, force: bool = False) -> Path:
    """Write ``s`` as ``.npy`` (refusing an existing file unless ``force``, and a folder always)."""
    from ..config import ConfigError
    from ..core.io import atomic_write

    out = Path(out)
    if out.suffix != ".npy":
        raise ConfigError(f"--out must end in .npy, got {out}")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a .npy file name (--force replaces files only)")
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(s, dtype=np.float32))

    atomic_write(out, write)
    return out
