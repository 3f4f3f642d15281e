"""The unique texts of a corpus and the on-disk cache of what the encoder makes of them.

ArguAna repeats many texts (debates are filed under several themes), so everything is computed per
unique text (corpus.TextTable). A feature mode (model/features.py) names its cache by a key (the
content of the encoder's files, max_length, the corpus texts and what the mode adds) and fills
the folder once; this module builds the folder under a file lock, so parallel trials build it
once, and checks it on every load: ``meta.json`` records the sha256 of every cached array, and a
cache whose files do not match (cut short, bit flips) or cannot be read is said so and rebuilt.
:func:`load_or_build` is the cache helper of every cache entry (features, ``rank``'s candidates):
a new entry is swapped in whole (io.atomic_replace_dir), so a kill or a full disk mid-build never
leaves a half-built entry in its place.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core.io import (
    FolderLockedError,
    LockFileError,
    atomic_replace_dir,
    atomic_write_json,
    cache_root,
    exclusive_lock,
    recover_dir,
    sha256_file,
)

#: the seal of a cache entry: its key and the sha256 of every array (io.write_manifest under this name)
SEAL = "meta.json"


def folder_for(key: dict, cache_dir: str | None) -> Path:
    """The cache folder named by ``key`` (its ``kind`` and a digest of all of it)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_root(cache_dir) / "features" / f"{key['kind']}-{digest}"


def load_or_build(
    folder: Path,
    key: dict,
    build: Callable[[Path], None],
    check: Callable[[dict[str, np.ndarray]], str | None] | None = None,
    what: str = "feature cache",
) -> dict[str, np.ndarray]:
    """The arrays of the cache entry ``folder`` by file stem; ``hidden`` is memory-mapped.

    Under the entry's lock (``FOLDER.lock``, waited for: parallel callers build once), a swap a kill
    interrupted is repaired first; then an entry that is missing, unsealed, fails its sha256, cannot
    be read or fails ``check`` (returns why, e.g. a wrong shape) is said so and rebuilt:
    ``build(tmp)`` fills a fresh folder that is sealed and swapped in whole.
    """
    folder = Path(folder)
    with exclusive_lock(folder.with_name(folder.name + ".lock"), f"{what} {folder}", wait=True):
        for line in recover_dir(folder, seal=SEAL):
            print(f"[counterarg] {what}: {line}", flush=True)
        arrays = _read_entry(folder, key, check, what)
        if arrays is None:
            atomic_replace_dir(folder, build, seal=SEAL, **key)
            arrays = _load(folder)
    return arrays


def _load(folder: Path) -> dict[str, np.ndarray]:
    return {
        f.stem: np.load(f, mmap_mode="r" if f.stem == "hidden" else None, allow_pickle=False)
        for f in sorted(folder.glob("*.npy"))
    }


def _read_entry(folder: Path, key: dict, check, what: str) -> dict[str, np.ndarray] | None:
    """The arrays of an intact entry; None (said why) for a missing, unsealed, damaged or unreadable one."""
    meta_path = folder / SEAL
    if not meta_path.exists():
        if folder.exists():
            print(f"[counterarg] {what} {folder} was never sealed (a build cut short); rebuilding", flush=True)
        return None
    if not _cache_intact(folder, meta_path, key, what):
        return None
    try:
        arrays = _load(folder)
        problem = check(arrays) if check is not None else None
    except Exception as e:  # noqa: BLE001 - any read error means: rebuild
        problem = f"{type(e).__name__}: {e}"
    if problem:
        print(f"[counterarg] {what} {folder} cannot be used ({problem}); rebuilding", flush=True)
        return None
    return arrays


def load_built(folder: Path, key: dict) -> dict[str, np.ndarray] | None:
    """The arrays of ``folder`` when it is already built and intact, else None; never builds and
    never waits (a cache another process is building now counts as not built)."""
    folder = Path(folder)
    if not (folder / SEAL).exists():
        return None
    try:
        with exclusive_lock(folder.with_name(folder.name + ".lock"), f"feature cache {folder}"):
            return _read_entry(folder, key, None, "feature cache")
    except LockFileError:
        raise
    except FolderLockedError:  # being built or rebuilt right now
        return None


def _hashes(folder: Path) -> dict[str, str]:
    return {f.name: sha256_file(f) for f in sorted(folder.glob("*.npy"))}


def _cache_intact(folder: Path, meta_path: Path, key: dict, what: str) -> bool:
    """Whether the cached arrays match the sha256 in meta.json; says why when they do not.

    A cache written before hashes were recorded is checked by loading every array whole once, and
    its hashes are then added (so a later bit flip is caught).
    """
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        print(f"[counterarg] {what} {folder}: meta.json is unreadable; rebuilding", flush=True)
        return False
    files = meta.get("files") if isinstance(meta, dict) else None
    if files is None:
        try:
            for f in folder.glob("*.npy"):
                np.load(f, mmap_mode="r")[-1:].copy()  # header and full length, without reading it all
        except Exception as e:  # noqa: BLE001 - any read error means: rebuild
            print(f"[counterarg] {what} {folder} is damaged ({e}); rebuilding", flush=True)
            return False
        atomic_write_json(meta_path, {**key, "files": _hashes(folder)})
        return True
    if not isinstance(files, dict) or not files:
        print(f"[counterarg] {what} {folder}: meta.json lists no files; rebuilding", flush=True)
        return False
    have = _hashes(folder)
    bad = sorted(n for n in files if have.get(n) != files[n]) + sorted(set(have) - set(files))
    if bad:
        print(
            f"[counterarg] {what} file(s) {', '.join(str(folder / b) for b in bad)} do not match "
            "their sha256 in meta.json (cut short, damaged or replaced); rebuilding the cache",
            flush=True,
        )
        return False
    return True
