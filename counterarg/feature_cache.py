"""The unique texts of a corpus and the on-disk cache of what the encoder makes of them.

ArguAna repeats many texts (debates are filed under several themes), so everything is computed per
unique text (:class:`TextTable`). A feature mode (features.py) names its cache by a key (the
content of the encoder's files, max_length, the corpus texts and what the mode adds) and fills
the folder once; this module builds the folder under a file lock, so parallel trials build it
once, and checks it on every load: ``meta.json`` records the sha256 of every cached array, and a
cache whose files do not match (cut short, bit flips) is said so and rebuilt.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .corpus import Corpus
from .io import atomic_write_json, cache_root, sha256_file


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


def folder_for(key: dict, cache_dir: str | None) -> Path:
    """The cache folder named by ``key`` (its ``kind`` and a digest of all of it)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_root(cache_dir) / "features" / f"{key['kind']}-{digest}"


def load_or_build(folder: Path, key: dict, build: Callable[[Path], None]) -> dict[str, np.ndarray]:
    """The arrays of ``folder`` by file stem, after ``build(folder)`` has written them once (under a
    lock) when the folder is missing or fails its sha256 check. ``hidden`` is memory-mapped."""
    done = folder / "meta.json"
    with _locked(folder.with_suffix(".lock")):
        if done.exists() and not _cache_intact(folder, done, key):
            done.unlink()
        if not done.exists():
            folder.mkdir(parents=True, exist_ok=True)
            build(folder)
            atomic_write_json(done, {**key, "files": _hashes(folder)})
    out = {}
    for f in folder.glob("*.npy"):
        out[f.stem] = np.load(f, mmap_mode="r" if f.stem == "hidden" else None)
    return out


def load_built(folder: Path, key: dict) -> dict[str, np.ndarray] | None:
    """The arrays of ``folder`` when it is already built and intact, else None; never builds and
    never waits (a cache another process is building now counts as not built)."""
    done = folder / "meta.json"
    if not done.exists():
        return None
    lock = folder.with_suffix(".lock")
    try:
        fh = open(lock, "a")
    except OSError:
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        try:
            if not done.exists() or not _cache_intact(folder, done, key):
                return None
            return {f.stem: np.load(f, mmap_mode="r" if f.stem == "hidden" else None) for f in folder.glob("*.npy")}
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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
