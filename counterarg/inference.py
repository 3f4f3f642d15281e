"""A trained model outside training: a checkpoint's encoder and heads over any texts.

Training reads the corpus through the feature cache; ``rank``, ``embed`` and ``export`` instead need
the checkpoint's model for texts it has never seen. :class:`TrainedModel` loads the encoder named in
the checkpoint's config, puts the checkpoint's trained encoder weights into it (the feature mode it
trained with says where: features.TextFeatures.load_into_encoder), and the similarity head and pair
classifier beside it. Texts go through the full encoder in float32, longest first, batch by batch
(:func:`model.encode_texts`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .config import Config
from .features import feature_class
from .model import EncoderError, Heads, encode_texts, load_encoder, pick_device


class TrainedModel:
    """Encoder with the checkpoint's weights + :class:`model.Heads`, in eval mode."""

    def __init__(self, config: Config, state: dict, device: str | torch.device = "cpu"):
        self.config = config
        self.device = pick_device(device) if isinstance(device, str) else device
        self.epoch = int(state.get("epoch", 0))
        self.history = list(state.get("history", []))
        self.source = None  # the checkpoint folder, when loaded from one
        self.model, self.tokenizer = load_encoder(config.encoder, config.pooling)
        trained = state.get("encoder") or {}
        if trained:  # the feature mode it trained with knows where its trained part goes
            feature_class(config).load_into_encoder(self.model, trained, config)
        self.model.to(self.device).eval()
        self.hidden = int(self.model.config.hidden_size)
        self.heads = Heads(self.hidden, config.sim_dim, config.head)
        try:
            self.heads.load_state_dict(state["heads"])
        except RuntimeError as e:
            raise EncoderError(f"the checkpoint's heads do not fit encoder {config.encoder!r} "
                               f"(hidden size {self.hidden}): {str(e).splitlines()[0]}") from None
        self.heads.to(self.device).eval()

    @classmethod
    def load(cls, checkpoint: str | Path, device: str = "cpu") -> "TrainedModel":
        """The checkpoint's model on this machine: its config less the machine-local fields
        (config.MACHINE_FIELDS take this machine's defaults; a caller may then change them)."""
        from .checkpoint import read_checkpoint

        state = read_checkpoint(checkpoint)
        tm = cls(Config.from_checkpoint(state["config"]), state, device)
        tm.source = Path(checkpoint)
        return tm

    def fingerprint(self) -> str:
        """sha256 of the checkpoint's weights file (what the model computes depends on nothing else
        but the config, which is inside it)."""
        if self.source is None:
            raise EncoderError("this model was not loaded from a checkpoint folder; nothing to fingerprint")
        from .checkpoint import STATE_FILE
        from .io import sha256_file

        return sha256_file(self.source / STATE_FILE if self.source.is_dir() else self.source)

    @torch.no_grad()
    def encode(self, texts: list[str], *, progress: bool = False, batch_size: int | None = None) -> torch.Tensor:
        """Pooled encoder output ``h`` ``[N, H]`` (float32) for ``texts``."""
        h = encode_texts(self.model, self.tokenizer, list(texts), pooling=self.config.pooling,
                         max_length=self.config.max_length, batch_size=batch_size or self.config.embed_batch_size,
                         device=self.device, progress=progress, desc="embedding")
        return torch.from_numpy(h).to(self.device)

    @torch.no_grad()
    def embed(self, texts: list[str], *, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h [N, H], s [N, sim_dim])``: encoder output and its similarity-space embedding."""
        h = self.encode(texts, progress=progress)
        return h, self.heads.similarity(h)

    def similarity_as_affine(self, atol: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
        """The similarity head as ``(W [sim_dim, H], b [sim_dim])`` with ``s = h @ W.T + b``.

        Read off the head itself (its value at 0 and at the unit vectors), so any affine head works;
        a head that is not affine raises :class:`EncoderError` (it cannot be exported as a Dense layer).
        """
        with torch.no_grad():
            eye = torch.eye(self.hidden, device=self.device)  # [H, H]
            b = self.heads.similarity(torch.zeros(1, self.hidden, device=self.device))[0]  # [sim_dim]
            w = (self.heads.similarity(eye) - b).T  # [sim_dim, H]
            x = torch.randn(8, self.hidden, generator=torch.Generator().manual_seed(0)).to(self.device)  # [8, H]
            err = (self.heads.similarity(x) - (x @ w.T + b)).abs().max().item()
        if err > atol * max(1.0, float(x.abs().max())):
            raise EncoderError(f"the similarity head is not affine (max deviation {err:.2e}); it cannot be "
                               "exported as a sentence-transformers Dense layer")
        return w.cpu(), b.cpu()


def cached_pooled(tm: TrainedModel, corpus, texts: list[str]) -> torch.Tensor | None:
    """``h [C, H]`` of ``texts`` (texts of ``corpus``) from the pooled-feature cache training built,
    when the checkpoint's encoder is frozen (``finetune=none``: its pooled output is exactly what
    training cached) and that cache is built; else None (then the texts must be encoded).

    The first ``rank`` against a corpus split then runs only the heads over cached vectors instead of
    the encoder over every candidate (1,292 ArguAna test counters: about a minute on 2 cores)."""
    from .feature_cache import TextTable, load_built
    from .features import PooledFeatures, cache_folder

    if feature_class(tm.config) is not PooledFeatures:
        return None
    table = TextTable.from_corpus(corpus)
    arrays = load_built(*cache_folder(tm.config, table))
    if arrays is None or "pooled" not in arrays:
        return None
    index = {t: i for i, t in enumerate(table.texts)}
    if any(t not in index for t in texts):
        return None
    pooled = arrays["pooled"][np.array([index[t] for t in texts], dtype=np.int64)]  # [C, H]
    return torch.from_numpy(np.ascontiguousarray(pooled, dtype=np.float32)).to(tm.device)


def candidate_embeddings(tm: TrainedModel, texts: list[str], *, progress: bool = True,
                         cache_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(h [C, H], s [C, sim_dim], from_cache)`` of candidate texts, cached by content.

    The key is the checkpoint's weights (sha256 of its state file) and the texts themselves, so a
    second ``counterarg rank`` against the same collection loads them instead of re-encoding (the
    first encodes with a progress bar). The entry ``$COUNTERARG_CACHE/rank/<key>/`` (``h.npy``,
    ``s.npy``) is a cache entry like the feature cache's (feature_cache.load_or_build): sealed with
    sha256, its shapes checked, rebuilt on any read error. A cache that cannot be written (full
    disk) is said so and the ranking goes on from the encoded texts.
    """
    import hashlib

    from .feature_cache import load_or_build
    from .io import DiskFullError, cache_root

    h = hashlib.sha256(tm.fingerprint().encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    folder = cache_root(cache_dir or tm.config.cache_dir) / "rank" / h.hexdigest()[:24]
    encoded: list[tuple[torch.Tensor, torch.Tensor]] = []

    def build(tmp: Path) -> None:
        encoded.append(tm.embed(texts, progress=progress))
        np.save(tmp / "h.npy", encoded[0][0].cpu().numpy())
        np.save(tmp / "s.npy", encoded[0][1].cpu().numpy())

    def check(arrays: dict) -> str | None:
        want = {"h": (len(texts), tm.hidden), "s": (len(texts), tm.heads.sim_dim)}
        got = {k: tuple(arrays[k].shape) if k in arrays else None for k in want}
        bad = [f"{k}.npy has shape {got[k]}, expected {want[k]}" for k in want if got[k] != want[k]]
        bad += [f"{k}.npy is {arrays[k].dtype}, not float32" for k in want if k in arrays and arrays[k].dtype != np.float32]
        return "; ".join(bad) or None

    try:
        arrays = load_or_build(folder, {"kind": "rank", "n_texts": len(texts)}, build, check,
                               what="candidate cache")
    except DiskFullError as e:
        if not encoded:
            raise
        print(f"[counterarg] candidate cache not written ({e}); ranking from the encoded texts", flush=True)
        return encoded[0][0], encoded[0][1], False
    if encoded:
        return encoded[0][0], encoded[0][1], False
    return torch.from_numpy(arrays["h"]).to(tm.device), torch.from_numpy(arrays["s"]).to(tm.device), True


def save_embeddings(out: str | Path, s: np.ndarray, force: bool = False) -> Path:
    """Write ``s`` as ``.npy`` (refusing an existing file unless ``force``, and a folder always)."""
    from .config import ConfigError
    from .io import atomic_write

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
