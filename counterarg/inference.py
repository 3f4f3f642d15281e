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
        from .checkpoint import read_checkpoint

        state = read_checkpoint(checkpoint)
        tm = cls(Config.from_dict(state["config"]), state, device)
        tm.source = Path(checkpoint)
        return tm

    def fingerprint(self) -> str:
        """sha256 of the checkpoint's weights file (what the model computes depends on nothing else
        but the config, which is inside it)."""
        import hashlib

        if self.source is None:
            raise EncoderError("this model was not loaded from a checkpoint folder; nothing to fingerprint")
        from .checkpoint import STATE_FILE

        f = self.source / STATE_FILE if self.source.is_dir() else self.source
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

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
    first encodes with a progress bar). Files: ``$COUNTERARG_CACHE/rank/<key>.npz``.
    """
    import hashlib

    from .io import _atomic, cache_root

    h = hashlib.sha256(tm.fingerprint().encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    path = cache_root(cache_dir or tm.config.cache_dir) / "rank" / f"{h.hexdigest()[:24]}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                hc, sc = torch.from_numpy(z["h"]), torch.from_numpy(z["s"])
            if hc.shape[0] == len(texts):
                return hc.to(tm.device), sc.to(tm.device), True
        except (OSError, ValueError, KeyError) as e:
            print(f"[counterarg] candidate cache {path} unreadable ({e}); encoding again", flush=True)
    hc, sc = tm.embed(texts, progress=progress)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, h=hc.cpu().numpy(), s=sc.cpu().numpy())

    _atomic(path, write)
    return hc, sc, False


def save_embeddings(out: str | Path, s: np.ndarray, force: bool = False) -> Path:
    """Write ``s`` as ``.npy`` (refusing an existing file unless ``force``)."""
    from .config import ConfigError
    from .io import _atomic

    out = Path(out)
    if out.suffix != ".npy":
        raise ConfigError(f"--out must end in .npy, got {out}")
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(s, dtype=np.float32))

    _atomic(out, write)
    return out
