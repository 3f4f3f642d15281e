"""Encoder inputs per unique text, cached on disk, and the module that turns text ids into pooled features.

ArguAna repeats many texts (debates are filed under several themes), so everything is computed per
unique text. With a frozen encoder the pooled features are computed once and cached, keyed by the
content of the encoder's files, pooling, max_length and the corpus texts; ``top:N`` caches the
hidden states that enter the first trainable layer; ``all`` caches only the token ids. ``meta.json``
records the sha256 of every cached array; a cache whose files do not match (cut short, bit flips)
is said so and rebuilt.

The caches are built at fp32 whatever ``precision`` says: they are made once and shared by every
precision (a ``top:N`` cache of ArguAna is 1.7 GB), so their key holds no precision. Training and
the per-epoch embedding passes run the trainable layers at the configured precision.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .config import Config
from .corpus import Corpus
from .io import atomic_write_json, cache_root, sha256_file
from .model import (clip_texts, encode_texts, encoder_fingerprint, load_encoder, pool, run_layers,
                    split_layer)
from .precision import autocast, run_precision


@dataclass
class SplitIds:
    point: np.ndarray  # [Q] unique-text id of each pair's point
    counter: np.ndarray  # [Q] unique-text id of each pair's counter


@dataclass
class TextTable:
    """Unique texts of the loaded splits and, per split, the text ids of its pairs."""

    texts: list[str]
    splits: dict[str, SplitIds]
    fingerprint: str

    @classmethod
    def from_corpus(cls, corpus: Corpus) -> "TextTable":
        index: dict[str, int] = {}
        texts: list[str] = []

        def tid(text: str) -> int:
            if text not in index:
                index[text] = len(texts)
                texts.append(text)
            return index[text]

        splits = {}
        for name, split in corpus.splits.items():
            splits[name] = SplitIds(
                point=np.array([tid(p.point.text) for p in split.pairs], dtype=np.int64),
                counter=np.array([tid(p.counter.text) for p in split.pairs], dtype=np.int64),
            )
        h = hashlib.sha256()
        for t in texts:
            h.update(t.encode())
            h.update(b"\0")
        return cls(texts=texts, splits=splits, fingerprint=h.hexdigest()[:16])


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cache_folder(config: Config, table: TextTable) -> tuple[Path, dict]:
    """The cache folder for this config's encoder inputs, and the key that names it."""
    top = config.trainable_layers
    kind = {0: "pooled", None: "tokens"}.get(top, "hidden")
    key = {
        "kind": kind,
        "weights": encoder_fingerprint(config.encoder),  # by content: folder moves keep the cache
        "max_length": config.max_length,
        "texts": table.fingerprint,
        "n_texts": len(table.texts),
    }
    if kind == "pooled":
        key["pooling"] = config.pooling
    if kind == "hidden":
        key["top"] = top
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_root(config.cache_dir) / "features" / f"{kind}-{digest}", key


def cached_inputs(config: Config, table: TextTable, *, device: torch.device, progress: bool = True,
                  model=None, tokenizer=None) -> dict[str, np.ndarray]:
    """Load (or compute once, under a file lock) the encoder inputs this config trains on."""
    folder, key = cache_folder(config, table)
    done = folder / "meta.json"
    with _locked(folder.with_suffix(".lock")):
        if done.exists() and not _cache_intact(folder, done, key):
            done.unlink()
        if not done.exists():
            folder.mkdir(parents=True, exist_ok=True)
            if model is None:
                model, tokenizer = load_encoder(config.encoder, config.pooling)
            kind = key["kind"]
            if progress:
                print(f"[counterarg] building the {kind} feature cache for {len(table.texts)} unique texts "
                      f"-> {folder} (once; later runs load it)", flush=True)
            if kind == "pooled":
                feats = encode_texts(model, tokenizer, table.texts, pooling=config.pooling,
                                     max_length=config.max_length, batch_size=config.embed_batch_size,
                                     device=device, progress=progress, desc="caching features")
                np.save(folder / "pooled.npy", feats)
            elif kind == "hidden":
                layer = split_layer(model, config.trainable_layers)
                hidden, lengths = encode_texts(model, tokenizer, table.texts, pooling=config.pooling,
                                               max_length=config.max_length, batch_size=config.embed_batch_size,
                                               device=device, upto_layer=layer, progress=progress,
                                               desc=f"caching layer-{layer} states")
                np.save(folder / "hidden.npy", hidden)
                np.save(folder / "lengths.npy", lengths)
            else:
                enc = tokenizer(clip_texts(table.texts, config.max_length), truncation=True, max_length=config.max_length, padding="max_length",
                                return_tensors="np")
                np.save(folder / "input_ids.npy", enc["input_ids"].astype(np.int32))
                np.save(folder / "lengths.npy", enc["attention_mask"].sum(1).astype(np.int32))
            atomic_write_json(done, {**key, "files": _hashes(folder)})
    out = {}
    for f in folder.glob("*.npy"):
        out[f.stem] = np.load(f, mmap_mode="r" if f.stem == "hidden" else None)
    return out


def _hashes(folder: Path) -> dict[str, str]:
    return {f.name: sha256_file(f) for f in sorted(folder.glob("*.npy"))}


def _cache_intact(folder: Path, meta_path: Path, key: dict) -> bool:
    """Whether the cached arrays match the sha256 in meta.json; says why when they do not.

    A cache written before hashes were recorded is checked by loading every array whole once, and
    its hashes are then added (so a later bit flip is caught).
    """
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        print(f"[counterarg] feature cache {folder}: meta.json is unreadable; rebuilding", flush=True)
        return False
    files = meta.get("files") if isinstance(meta, dict) else None
    if files is None:
        try:
            for f in folder.glob("*.npy"):
                np.load(f, mmap_mode="r")[-1:].copy()  # header and full length, without reading it all
        except (OSError, ValueError, EOFError) as e:
            print(f"[counterarg] feature cache {folder} is damaged ({e}); rebuilding", flush=True)
            return False
        atomic_write_json(meta_path, {**key, "files": _hashes(folder)})
        return True
    if not files:
        print(f"[counterarg] feature cache {folder}: meta.json lists no files; rebuilding", flush=True)
        return False
    have = _hashes(folder)
    bad = sorted(n for n in files if have.get(n) != files[n])
    if bad:
        print(f"[counterarg] feature cache file(s) {', '.join(str(folder / b) for b in bad)} do not match "
              "their sha256 in meta.json (cut short or damaged); rebuilding the cache", flush=True)
        for f in folder.glob("*.npy"):
            f.unlink()
        return False
    return True


class TextFeatures(nn.Module):
    """Text ids -> pooled encoder output h [B, H]; holds whatever part of the encoder trains."""

    def __init__(self, config: Config, table: TextTable, device: torch.device, *, progress: bool = True):
        super().__init__()
        self.config, self.device = config, device
        self.precision = run_precision(config.precision, device)  # fp32 | bf16 | fp16
        self.top = config.trainable_layers
        model = tokenizer = None
        if self.top != 0 or config.pooling == "pooler":  # the pooler check needs the loaded weights
            model, tokenizer = load_encoder(config.encoder, config.pooling)
        inputs = cached_inputs(config, table, device=device, progress=progress, model=model, tokenizer=tokenizer)
        if self.top == 0:
            self.register_buffer("pooled", torch.from_numpy(np.array(inputs["pooled"])).to(device), persistent=False)
            self.hidden = self.pooled.shape[1]
            self.trainable = nn.ModuleDict()
            return
        self.lengths = torch.from_numpy(np.array(inputs["lengths"])).long()  # [U]
        self.hidden = model.config.hidden_size
        self._base = [model]  # outside the module tree: only the trainable part is saved
        if self.top is None:
            self.input_ids = torch.from_numpy(np.array(inputs["input_ids"])).long()  # [U, T]
            self.trainable = nn.ModuleDict({"encoder": model})
        else:
            self.states = inputs["hidden"]  # memmap [U, T, H] float16
            first = split_layer(model, self.top)
            parts = {"layers": nn.ModuleList(model.encoder.layer[first:])}
            if config.pooling == "pooler" and getattr(model, "pooler", None) is not None:
                parts["pooler"] = model.pooler
            self.trainable = nn.ModuleDict(parts)
        self.to(device)

    def forward(self, tids: torch.Tensor) -> torch.Tensor:  # [B] -> [B, H]
        if self.top == 0:
            return self.pooled[tids.to(self.device)]
        ids = tids.cpu()
        t = int(self.lengths[ids].max())  # trim padding to the batch's longest text
        mask = (torch.arange(t)[None, :] < self.lengths[ids][:, None]).long().to(self.device)  # [B, T]
        pooler = self.trainable["pooler"] if "pooler" in self.trainable else getattr(self._base[0], "pooler", None)
        if self.top is None:
            enc = self.trainable["encoder"]
            with autocast(self.precision, self.device):
                out = enc(input_ids=self.input_ids[ids, :t].to(self.device), attention_mask=mask)
            hidden = out.last_hidden_state.float()  # [B, T, H] fp32: pooling and heads run in fp32
            return pool(hidden, mask, self.config.pooling, pooler)
        rows = np.sort(ids.numpy())
        states = torch.from_numpy(np.asarray(self.states[rows, :t], dtype=np.float32))  # [B, T, H]
        back = torch.from_numpy(np.searchsorted(rows, ids.numpy()))
        states = states[back].to(self.device)  # [B, T, H] in the order asked
        with autocast(self.precision, self.device):
            hidden = run_layers(self._base[0], self.trainable["layers"], states, mask)  # [B, T, H]
        return pool(hidden.float(), mask, self.config.pooling, pooler)  # [B, H] fp32

    def row_lengths(self, tids: np.ndarray) -> np.ndarray:
        """Token count of each training row: the longest of its texts. tids [N, K] -> [N]."""
        if self.top == 0:
            raise ValueError("finetune=none trains on cached pooled vectors: its texts have no lengths here")
        return self.lengths.numpy()[np.asarray(tids)].max(axis=1)

    def embed(self, tids: np.ndarray, batch_size: int | None = None) -> torch.Tensor:
        """h for many text ids without gradients, in eval mode (dropout off): [U', H]."""
        if self.top == 0:
            return self.pooled[torch.as_tensor(tids, device=self.device)]
        was = self.training
        self.eval()
        bs = batch_size or self.config.embed_batch_size
        tids = np.asarray(tids)
        order = np.argsort(-self.lengths[torch.as_tensor(tids)].numpy(), kind="stable")
        out = torch.empty(len(tids), self.hidden, device=self.device)
        with torch.no_grad():
            for s in range(0, len(tids), bs):
                rows = order[s : s + bs]
                out[torch.as_tensor(rows, device=self.device)] = self(torch.as_tensor(tids[rows]))
        self.train(was)
        return out


def batch_order(n: int, batch_size: int, rng: np.random.Generator, *, lengths: np.ndarray | None = None,
                buckets: int = 0) -> np.ndarray:
    """An epoch's training batches as row indices [n // batch_size, batch_size] (the rest dropped).

    ``buckets=0``: one random permutation cut in order (exactly the draws training made before
    buckets existed). ``buckets=N``: the permuted rows are cut into spans of N * batch_size, each
    span sorted by ``lengths`` (ties in permuted order) and cut into batches, and the batches are
    shuffled: similar lengths share a batch, so little is padded, while which rows meet and the order
    of batches stay random. All randomness comes from ``rng`` (seeded from (seed, epoch)), so a
    resumed run draws the same batches. Each kept row occurs exactly once.
    """
    if batch_size < 1 or n < batch_size:
        raise ValueError(f"cannot cut {n} rows into batches of {batch_size}")
    steps = n // batch_size
    perm = rng.permutation(n)[: steps * batch_size]  # [steps * B]
    if not buckets:
        return perm.reshape(steps, batch_size)
    if lengths is None or len(lengths) != n:
        raise ValueError(f"length buckets need one length per row ({n}), got "
                         f"{None if lengths is None else len(lengths)}")
    span = buckets * batch_size
    lengths = np.asarray(lengths)
    spans = [perm[s : s + span] for s in range(0, len(perm), span)]
    sorted_rows = np.concatenate([c[np.argsort(-lengths[c], kind="stable")] for c in spans])  # [steps * B]
    batches = sorted_rows.reshape(steps, batch_size)  # spans are whole batches: len(perm) % B == 0
    return batches[rng.permutation(steps)]
