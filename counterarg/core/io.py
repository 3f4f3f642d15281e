"""Crash-safe files and folders: atomic writes, the one folder swap that a kill cannot lose (used
for ``checkpoint/``, ``best/``, exports and every cache entry) and its recovery, sha256 manifests
that catch corrupt files, exclusive locks that never follow a link, and disk full as a named error.

Why: a run is killed at any moment (SIGKILL, OOM, a preempted node) or its disk fills, and is
resumed with ``--resume``; whatever was on disk before must still be found and trusted after it,
two processes must never write the same folder at once, and a lock file planted as a symlink in a
shared cache must not let us overwrite what it points to.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
LOCK_FILE = ".lock"


class FolderLockedError(RuntimeError):
    """Another process holds the folder's lock; the message names the folder and the holder."""


class LockFileError(FolderLockedError):
    """A lock file that is a symlink, a hard link or not a regular file: refused, never opened through."""


class DiskFullError(RuntimeError):
    """A write failed because its file system is full (ENOSPC, EDQUOT); the message names the file,
    the space left and what was kept (the previous file or folder, untouched)."""


#: below this many free bytes a write error that names no errno (torch's "file write failed",
#: safetensors' SafetensorError) is taken to be a full disk
FULL_BELOW = 1 << 20


def free_bytes(path: Path) -> int | None:
    """Free bytes on the file system of ``path`` (or of its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def is_disk_full(e: BaseException, path: Path) -> bool:
    """Whether ``e`` (raised while writing under ``path``) means the disk is full: ENOSPC/EDQUOT in
    its chain, or a write error of a library that hides the errno while almost nothing is free."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    text = str(e)
    writing = (
        isinstance(e, OSError)
        or type(e).__name__ == "SafetensorError"
        or any(w in text for w in ("write", "written", "basic_ios", "unexpected pos"))
    )  # torch's writer errors
    free = free_bytes(path) if writing else None
    return free is not None and free < FULL_BELOW


def disk_full_error(path: Path, kept: str) -> DiskFullError:
    free = free_bytes(path)
    left = f"{free / 2**20:.1f} MiB left" if free is not None else "space left unknown"
    return DiskFullError(
        f"disk full: could not write {path} ({left} on its file system); kept {kept}. "
        "Free some space and run the command again"
    )


#: every rename of a swap goes through here (tests kill the process at a chosen one)
_rename = os.replace


def _fsync_file(path: Path) -> None:
    """Flush a written file to disk (where a full disk may first say so; tests inject ENOSPC here)."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` a sibling temporary file, then rename it onto ``path``: a kill leaves the old
    file or the new one. A full disk is a :class:`DiskFullError`; the old file stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(Path(tmp))
        _fsync_file(Path(tmp))
        _rename(tmp, path)
    except BaseException as e:
        full = isinstance(e, Exception) and not isinstance(e, DiskFullError) and is_disk_full(e, path.parent)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if full:
            raise disk_full_error(
                path, f"the previous {path} as it was" if existed else f"nothing ({path} was not written)"
            ) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(path: Path, obj: Any) -> None:
    import torch

    atomic_write(path, lambda p: torch.save(obj, p))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: Path, seal: str = MANIFEST, **extra: Any) -> dict:
    """Write ``seal`` (``manifest.json``) into ``folder``: the sha256 of every other file in it,
    plus ``extra``. The files are fsynced first, so a manifest on disk always describes whole files.
    """
    folder = Path(folder)
    files = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name != seal and not f.name.endswith(".tmp"):
            _fsync_file(f)
            files[f.name] = sha256_file(f)
    manifest = {"files": files, **extra}
    atomic_write_json(folder / seal, manifest)
    return manifest


def read_manifest(folder: Path, seal: str = MANIFEST) -> dict | None:
    """The folder's manifest, or None when it has none (or an unreadable one)."""
    try:
        data = json.loads((Path(folder) / seal).read_text(encoding="utf-8"))
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


def _complete(folder: Path, seal: str = MANIFEST) -> dict | None:
    """The manifest of a folder whose files all match it; None for an incomplete or damaged one."""
    manifest = read_manifest(folder, seal)
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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def atomic_replace_dir(target: Path, fill: Callable[[Path], None], *, seal: str = MANIFEST, **manifest: Any) -> None:
    """Fill a fresh sibling folder, seal it with a manifest, then swap it in place of ``target``.

    The one folder swap of the project (``checkpoint/``, ``best/``, exports, cache entries); the
    caller holds the lock that makes it the only writer of ``target``. The swap is two renames
    (``target`` -> ``.NAME.old``, fill folder -> ``target``); a kill between them leaves no
    ``target``, which :func:`recover_dir` repairs (run first here, and by every reader that owns
    the folder) from the sealed fill folder or, failing that, from ``.NAME.old``. ``seal`` names the
    manifest file (caches keep their ``meta.json``); ``manifest`` adds fields (the epoch, a cache
    key). A full disk is a :class:`DiskFullError` naming what was kept: ``target`` as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for line in recover_dir(target, seal=seal):
        print(f"[counterarg] {line}", flush=True)
    old = _old(target)
    existed = target.exists()
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        fill(tmp)
        write_manifest(tmp, seal, **manifest)
        _fsync_dir(tmp)
        if target.exists():
            _rename(target, old)
        _rename(tmp, target)
        _fsync_dir(target.parent)
        _remove(old)
    except BaseException as e:
        if not target.exists() and old.exists():  # interrupted between the renames: roll back
            _rename(old, target)
        full = isinstance(e, Exception) and not isinstance(e, DiskFullError) and is_disk_full(e, target.parent)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if full:
            epoch = (read_manifest(target, seal) or {}).get("epoch") if existed else None
            raise disk_full_error(
                target,
                f"the previous {target}" + (f" (epoch {epoch})" if epoch else "") + " as it was"
                if existed
                else f"nothing new ({target} did not exist)",
            ) from None
        raise


def recover_dir(target: Path, *, seal: str = MANIFEST) -> list[str]:
    """Complete or roll back a swap of ``target`` that a kill interrupted; remove leftovers.

    * ``target`` present: fill folders (never swapped in; a checkpoint's epoch is retrained) and
      ``.NAME.old`` are removed.
    * ``target`` missing: the newest sealed fill folder (manifest present, every sha256 matching)
      becomes ``target`` (swap completed); without one, ``.NAME.old`` does (rolled back).

    Nothing that could be the only copy is deleted. The caller holds the folder's lock. Returns
    what was done, one line each.
    """
    target = Path(target)
    old = _old(target)
    done: list[str] = []
    if not target.exists():
        candidates = [(m.get("epoch", -1), str(t), t) for t in _temps(target) if (m := _complete(t, seal)) is not None]
        if old.is_dir():
            m = read_manifest(old, seal)
            candidates.append(((m or {}).get("epoch", -1), "", old))
        if candidates:
            epoch, _, best = max(candidates, key=lambda c: (c[0], c[2] != old))
            _rename(best, target)
            _fsync_dir(target.parent)
            how = "rolled back to" if best == old else "completed the swap to"
            done.append(
                f"{target}: a kill interrupted its swap; {how} {best.name}"
                + (f" (epoch {epoch})" if epoch != -1 else "")
            )
    for t in _temps(target):
        shutil.rmtree(t, ignore_errors=True)
        done.append(f"removed the unfinished folder {t}")
    if old.exists():
        _remove(old)
        done.append(f"removed the previous copy {old}")
    return done


def remove_temp_files(folder: Path) -> list[str]:
    """Remove ``.NAME.XXXX.tmp`` files that :func:`atomic_write` left when a kill hit mid-write."""
    removed = []
    for f in Path(folder).glob(".*.tmp"):
        if f.is_file():
            f.unlink(missing_ok=True)
            removed.append(f"removed the half-written {f}")
    return removed


def _open_lock(lock_path: Path) -> int:
    """Open (creating) a lock file without following a symlink; refuse anything but a regular
    file with one link, so a planted link never makes us write to what it points to."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(lock_path, flags, 0o644)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK):
            raise LockFileError(
                f"lock file {lock_path} is a symbolic link (to {os.readlink(lock_path)!r}); "
                "refusing to follow it. Remove the link and retry"
            ) from None
        if e.errno == errno.EISDIR:
            raise LockFileError(f"lock file {lock_path} is a folder; remove it and retry") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        why = "not a regular file" if not stat.S_ISREG(st.st_mode) else f"a hard link ({st.st_nlink} names)"
        raise LockFileError(f"lock file {lock_path} is {why}; refusing to write to it. Remove it and retry")
    return fd


@contextmanager
def exclusive_lock(lock_path: Path, what: str, *, wait: bool = False) -> Iterator[None]:
    """Hold ``lock_path`` exclusively (``fcntl.flock``) while the block runs; the one lock helper.

    Without ``wait`` a second process (or a second lock in this one) gets :class:`FolderLockedError`
    at once, naming ``what`` and the holder's pid; with ``wait`` it blocks until the holder is done
    (a cache entry being built). The lock dies with its process, so a kill never leaves a stale lock
    behind; the file itself stays unless its holder removes it (:func:`remove_lock_file`). It is
    opened with ``O_NOFOLLOW`` and must be a regular file with one link (:class:`LockFileError`
    otherwise).
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_lock(lock_path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise FolderLockedError(
                f"{what} is in use by another process ({holder}; lock file {lock_path}); "
                "wait for it to finish or choose another folder"
            ) from None
        raise
    try:
        if _unlinked(lock_path, fd):  # its holder removed the file as it finished: ours is a stale name
            raise FolderLockedError(
                f"{what} was just released by another process (lock file {lock_path}); run the command again"
            )
        try:  # who holds it, for the message a second process gets (a full disk may refuse the line)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
        except OSError:
            pass
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _unlinked(lock_path: Path, fd: int) -> bool:
    """Whether the file locked through ``fd`` is no longer the one at ``lock_path`` (removed by the
    holder that finished before us, see :func:`remove_lock_file`)."""
    try:
        return os.lstat(lock_path).st_ino != os.fstat(fd).st_ino
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
    """Append one JSON row and fsync, so a finished epoch's row survives a kill. A full disk is a
    :class:`DiskFullError`; the rows before stay (a cut-short last line is rewritten on resume)."""
    path = Path(path)
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
        _fsync_file(path)
    except OSError as e:
        if is_disk_full(e, path.parent):
            raise disk_full_error(path, f"the rows already in {path}") from None
        raise


def cache_root(cache_dir: str | None = None) -> Path:
    """Where features and the demo corpus are cached: the config's cache_dir, $COUNTERARG_CACHE, or ~/.cache."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("COUNTERARG_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "counterarg"


def folder_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be (or become) a folder: it is a file, or a file stands where one of its
    parents must be; None when it is a folder or can be made one. Checked before work starts, so a
    cache_dir under a file is one named error, not a NotADirectoryError in every trial."""
    p = Path(path).expanduser()
    for part in (p, *p.parents):
        if part.exists() or part.is_symlink():
            if part.is_dir():
                return None
            return f"{part} is a file, not a folder" if part == p else f"{part} is a file, so {p} cannot be a folder"
    return None
