"""Folders and files in object storage (``s3://``, ``gs://``, any pyarrow filesystem URI): a sealed
folder written so that no reader can take a half-written one for whole, and remote folders and
files fetched into a local cache, verified before use. No Ray here: the CLI reads remote
checkpoints through it, and sweep workers fetch the corpus and encoder a driver staged.

* **Credentials and endpoint** come from the standard AWS environment as pyarrow's S3 client reads it
  (pyarrow >= 15 with its bundled AWS SDK): ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
  ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, and ``AWS_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL_S3`` for
  MinIO, Ceph or a server on 127.0.0.1 (checked against pyarrow 26: both are honoured by
  ``pyarrow.fs.FileSystem.from_uri``; tests/core/test_remote.py keeps checking it). Nothing to bridge.
* **A sealed folder** (:func:`put_sealed_dir`): object storage has no rename, so a folder cannot be
  swapped in. The old ``manifest.json`` is deleted first, the files are uploaded, stale ones
  deleted, and the manifest (each file's sha256) goes up last. A folder without a manifest is
  incomplete; :func:`fetch_sealed_dir` checks every file against it and refuses one that does not
  match (an upload cut short, a file changed by hand), naming the files.
* **The cache** (:func:`cache_dir_for`): ``<cache root>/remote/<sha of URI + manifest>``, so a new
  upload under the same URI is fetched again and an unchanged one never twice.

pyarrow is imported where a filesystem is used: the CLI asks :func:`is_remote` of every path it is
given, and a local ``rank`` loads no pyarrow for it.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .io import MANIFEST, bad_files, cache_root, read_manifest, write_manifest
from .paths import REMOTE_SCHEMES, is_remote  # noqa: F401 - the storage helpers' callers import them from here

if TYPE_CHECKING:
    import pyarrow.fs as pafs


class RemoteFolderError(RuntimeError):
    """A remote folder that cannot be used whole (no manifest, a file missing or not matching it);
    the message names the URI and the files."""


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path inside it)`` of a URI or local path, as Ray Tune resolves its storage."""
    import pyarrow.fs as pafs

    if "://" not in str(uri):
        return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    return pafs.FileSystem.from_uri(str(uri))


def join(uri: str, *parts: str) -> str:
    return posixpath.join(str(uri).rstrip("/"), *parts)


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes | None:
    """The bytes of a file on ``fs``; None when it does not exist (or cannot be read)."""
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except (OSError, FileNotFoundError):
        return None


def write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """One object written whole (an object-store PUT is atomic; a local file goes through a temp name)."""
    import pyarrow.fs as pafs

    if isinstance(fs, pafs.LocalFileSystem):
        from .io import atomic_write_bytes

        atomic_write_bytes(Path(path), data)
        return
    with fs.open_output_stream(path) as f:
        f.write(data)


def remote_manifest(fs: pafs.FileSystem, folder: str) -> dict | None:
    """A remote folder's manifest, or None when it has none (being written, or never sealed)."""
    return _parse_manifest(read_bytes(fs, f"{folder}/{MANIFEST}"))


def _parse_manifest(data: bytes | None) -> dict | None:
    try:
        manifest = json.loads(data.decode("utf-8")) if data is not None else None
    except ValueError:
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None


def put_sealed_dir(local: Path, fs: pafs.FileSystem, dest: str) -> dict:
    """Upload the flat folder ``local`` to ``dest`` on ``fs``, manifest last (see the module doc).

    ``local`` must hold a manifest (a folder :func:`counterarg.core.io.atomic_replace_dir` sealed);
    one without is sealed here. Returns the manifest uploaded.
    """
    import pyarrow.fs as pafs

    local = Path(local)
    manifest = read_manifest(local) or write_manifest(local)
    body = (local / MANIFEST).read_bytes()
    try:
        fs.delete_file(f"{dest}/{MANIFEST}")  # from now on readers see an incomplete folder
    except (OSError, FileNotFoundError):
        pass
    for name in manifest["files"]:  # no create_dir: on S3 it leaves empty "folder/" marker objects
        write_bytes(fs, f"{dest}/{name}", (local / name).read_bytes())
    keep = set(manifest["files"]) | {MANIFEST}
    for info in fs.get_file_info(pafs.FileSelector(dest, allow_not_found=True)):
        if info.type == pafs.FileType.File and posixpath.basename(info.path) not in keep:
            fs.delete_file(info.path)
    write_bytes(fs, f"{dest}/{MANIFEST}", body)
    return manifest


def _cache_key(uri: str, stamp: bytes) -> str:
    return hashlib.sha256(uri.encode() + b"\0" + stamp).hexdigest()[:20]


def cache_dir_for(uri: str, stamp: bytes, cache: str | Path | None = None) -> Path:
    """Where a remote folder or file is kept locally: keyed by its URI and ``stamp`` (its manifest,
    or a file's size and modification time)."""
    return cache_root(str(cache) if cache else None) / "remote" / _cache_key(uri, stamp)


def fetch_sealed_dir(uri: str, cache: str | Path | None = None) -> Path:
    """A remote sealed folder (``s3://.../best``) as a local folder, downloaded once into the cache
    and checked file by file against its manifest. :class:`RemoteFolderError` when it has no
    manifest or a file does not match (an upload cut short); nothing half-fetched is kept."""
    fs, path = filesystem(uri)
    body = read_bytes(fs, f"{path.rstrip('/')}/{MANIFEST}")
    manifest = _parse_manifest(body)
    if body is None or manifest is None:
        raise RemoteFolderError(
            f"{uri}: no {MANIFEST} (its upload is unfinished or was cut short, or it is not a "
            "sealed folder: give a trial's .../best or .../checkpoint_NNNNNN folder)"
        )
    target = cache_dir_for(uri, body, cache)
    if target.is_dir() and read_manifest(target) == manifest and not bad_files(target, manifest):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name in manifest["files"]:
            data = read_bytes(fs, f"{path.rstrip('/')}/{name}")
            if data is not None:
                (tmp / name).write_bytes(data)
        (tmp / MANIFEST).write_bytes(body)
        bad = bad_files(tmp, manifest)
        if bad:
            raise RemoteFolderError(
                f"{uri}: {', '.join(bad)} missing or not matching its {MANIFEST} (an upload "
                "cut short or a file changed since); not used"
            )
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def fetch_file(uri: str, cache: str | Path | None = None) -> Path:
    """A remote file (``s3://.../corpus.zip``) as a local file in the cache, fetched again only when
    its size or modification time changed; keeps its base name (a zip stays a ``.zip``)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"{uri}: no such file in storage")
    stamp = f"{info.size}:{info.mtime_ns}".encode()
    target = cache_dir_for(uri, stamp, cache) / posixpath.basename(path)
    if target.is_file() and target.stat().st_size == info.size:
        return target
    data = read_bytes(fs, path)
    if data is None or len(data) != info.size:
        raise RemoteFolderError(f"{uri}: read {0 if data is None else len(data)} of its {info.size} bytes")
    from .io import atomic_write_bytes

    atomic_write_bytes(target, data)
    return target


def localize(location: str, cache: str | Path | None = None) -> str:
    """A local path for ``location``: a remote sealed folder or file fetched (:func:`fetch_sealed_dir`,
    :func:`fetch_file`); anything else returned as it is."""
    if not is_remote(location):
        return location
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return str(fetch_file(location, cache))
    return str(fetch_sealed_dir(location, cache))


def local_input(location: str, cache: str | Path | None = None) -> str:
    """A run's input (a corpus file, an encoder folder) as a local path: a remote one is fetched into
    this machine's cache (``cache``, else ``$COUNTERARG_CACHE``) and checked, a staged file through its
    sealed folder (``.../inputs/<name>-<sha>/corpus.zip``, whose manifest covers it); a local one is
    returned as it is. The run's config keeps the URI, so a checkpoint names its inputs as every
    machine can reach them, not as one node's cache holds them."""
    if not is_remote(location):
        return location
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return str(fetch_sealed_dir(location, cache))
    parent, name = location.rsplit("/", 1)
    if remote_manifest(fs, posixpath.dirname(path)):
        return str(fetch_sealed_dir(parent, cache) / name)
    return str(fetch_file(location, cache))


def fetched_input(location: str, error: type[Exception], what: str) -> str:
    """:func:`local_input`, its failure (unreachable storage, a folder that fails its manifest) raised
    as ``error`` naming ``what`` and the URI: the loaders' (corpus, encoder) one way to take a remote input."""
    try:
        return local_input(location)
    except (OSError, RemoteFolderError) as e:
        raise error(f"{what} {location}: {e}") from None
