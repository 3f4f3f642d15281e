"""Crash-safe files and folders: atomic writes, checkpoint swaps that a kill cannot lose, sha256
manifests that catch corrupt files, and an exclusive lock per run or sweep folder.

Why: a run is killed at any moment (SIGKILL, OOM, a preempted node) and resumed with ``--resume``;
whatever was on disk before the kill must still be found and trusted after it, and two processes
must never write the same folder at once.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

MANIFEST = "manifest.json"
LOCK_FILE = ".lock"


class FolderLockedError(RuntimeError):
    """Another process holds the folder's lock; the message names the folder and the holder."""


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda p: p.write_bytes(data))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(path: Path, obj: Any) -> None:
    import torch

    _atomic(path, lambda p: torch.save(obj, p))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: Path, **extra: Any) -> dict:
    """Write ``manifest.json`` into ``folder``: the sha256 of every other file in it, plus ``extra``.

    The files are fsynced first, so a manifest on disk always describes whole files.
    """
    folder = Path(folder)
    files = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name != MANIFEST and not f.name.endswith(".tmp"):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            files[f.name] = sha256_file(f)
    manifest = {"files": files, **extra}
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def read_manifest(folder: Path) -> dict | None:
    """The folder's manifest, or None when it has none (or an unreadable one)."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def bad_files(folder: Path, manifest: dict) -> list[str]:
    """Names of the manifest's files that are missing from ``folder`` or whose sha256 differs."""
    bad = []
    for name, digest in manifest["files"].items():
        f = Path(folder) / name
        if not f.is_file() or sha256_file(f) != digest:
            bad.append(name)
    return bad


def _complete(folder: Path) -> dict | None:
    """The manifest of a folder whose files all match it; None for an incomplete or damaged one."""
    manifest = read_manifest(folder)
    if manifest is None or bad_files(folder, manifest):
        return None
    return manifest


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _old(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def _temps(target: Path) -> list[Path]:
    """Fill folders of ``target`` (``.NAME.XXXXXXXX``) left by a swap, not counting ``.NAME.old``."""
    old = _old(target)
    return sorted(p for p in target.parent.glob(f".{target.name}.*") if p.is_dir() and p != old)


def atomic_replace_dir(target: Path, fill: Callable[[Path], None], **manifest: Any) -> None:
    """Fill a fresh sibling folder, seal it with a manifest, then swap it in place of ``target``.

    The swap is two renames (``target`` -> ``.NAME.old``, fill folder -> ``target``); a kill
    between them leaves no ``target``, which :func:`recover_dir` repairs on the next start from the
    sealed fill folder (or, failing that, from ``.NAME.old``). ``manifest`` adds fields (the epoch)
    to the manifest.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old = _old(target)
    try:
        fill(tmp)
        write_manifest(tmp, **manifest)
        _fsync_dir(tmp)
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if not target.exists() and old.exists():  # interrupted between the renames: roll back
            os.replace(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_dir(target: Path) -> list[str]:
    """Complete or roll back a swap of ``target`` that a kill interrupted; remove leftovers.

    * ``target`` present: fill folders (never swapped in; their epoch is retrained) and
      ``.NAME.old`` are removed.
    * ``target`` missing: the newest sealed fill folder (manifest present, every sha256 matching)
      becomes ``target`` (swap completed); without one, ``.NAME.old`` does (rolled back).

    Nothing that could be the only copy of a checkpoint is deleted. Returns what was done, one
    line each.
    """
    target = Path(target)
    old = _old(target)
    done: list[str] = []
    if not target.exists():
        candidates = [(m.get("epoch", -1), str(t), t) for t in _temps(target) if (m := _complete(t)) is not None]
        if old.is_dir():
            m = read_manifest(old)
            candidates.append(((m or {}).get("epoch", -1), "", old))
        if candidates:
            epoch, _, best = max(candidates, key=lambda c: (c[0], c[2] != old))
            os.replace(best, target)
            _fsync_dir(target.parent)
            how = "rolled back to" if best == old else "completed the swap to"
            done.append(f"{target}: a kill interrupted the checkpoint swap; {how} {best.name}"
                        + (f" (epoch {epoch})" if epoch != -1 else ""))
    for t in _temps(target):
        shutil.rmtree(t, ignore_errors=True)
        done.append(f"removed the unfinished checkpoint folder {t}")
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
        done.append(f"removed the previous checkpoint {old}")
    return done


def remove_temp_files(folder: Path) -> list[str]:
    """Remove ``.NAME.XXXX.tmp`` files that :func:`_atomic` left when a kill hit mid-write."""
    removed = []
    for f in Path(folder).glob(".*.tmp"):
        if f.is_file():
            f.unlink(missing_ok=True)
            removed.append(f"removed the half-written {f}")
    return removed


@contextmanager
def exclusive_lock(lock_path: Path, what: str) -> Iterator[None]:
    """Hold ``lock_path`` exclusively (``fcntl.flock``, non-blocking) while the block runs.

    A second process (or a second lock in this one) gets :class:`FolderLockedError` at once,
    naming ``what`` and the holder's pid. The lock dies with its process, so a kill never leaves
    a stale lock behind; the file itself stays.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(lock_path, "a+", encoding="utf-8")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise FolderLockedError(f"{what} is in use by another process ({holder}; lock file {lock_path}); "
                                    "wait for it to finish or choose another folder") from None
        raise
    try:
        if _unlinked(lock_path, fh):  # its holder removed the file as it finished: ours is a stale name
            raise FolderLockedError(f"{what} was just released by another process (lock file {lock_path}); "
                                    "run the command again")
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        fh.flush()
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def _unlinked(lock_path: Path, fh) -> bool:
    """Whether the file locked through ``fh`` is no longer the one at ``lock_path`` (removed by the
    holder that finished before us, see :func:`remove_lock_file`)."""
    try:
        return os.stat(lock_path).st_ino != os.fstat(fh.fileno()).st_ino
    except FileNotFoundError:
        return True


def remove_lock_file(lock_path: Path) -> None:
    """Remove a lock file while still holding it (a lock file left beside results is clutter);
    a process that opened it meanwhile sees it removed (:func:`_unlinked`) and stops."""
    Path(lock_path).unlink(missing_ok=True)


def folder_lock(folder: Path, what: str = "run folder"):
    """:func:`exclusive_lock` on ``FOLDER/.lock``."""
    return exclusive_lock(Path(folder) / LOCK_FILE, f"{what} {folder}")


def append_jsonl(path: Path, row: dict) -> None:
    """Append one JSON row and fsync, so a finished epoch's row survives a kill."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def cache_root(cache_dir: str | None = None) -> Path:
    """Where features and the demo corpus are cached: the config's cache_dir, $COUNTERARG_CACHE, or ~/.cache."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("COUNTERARG_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "counterarg"
