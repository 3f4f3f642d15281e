"""A sweep on object storage: what the driver keeps there besides Tune's own files, and what the
workers fetch from there, so that no node needs a path another one chose.

* **The experiment's top-level files** (:class:`DriverFolder`): Tune's state files, the search
  space, the session record and every summary file live in ``<storage>/<name>/``. The driver works
  on a private local copy of the top-level files (never the trial folders), runs the same checks and
  repairs on it as on a local experiment, writes the summary into it and uploads every file it
  changed or added (:meth:`DriverFolder.push`): a driver anywhere, with the URI and the name alone,
  sees and resumes what the storage holds; nothing is written under its working folder.
* **Inputs** (:func:`stage_inputs`): a local ``corpus`` file or ``encoder`` folder named by the
  sweep is uploaded once into ``<experiment>/inputs/<name>-<sha>`` (a folder sealed by its
  manifest, :func:`counterarg.core.remote.put_sealed_dir`) and the trials are given that URI;
  each trial fetches it into its node's own cache (``load_corpus`` and ``resolve_encoder`` through
  :func:`counterarg.core.remote.local_input`) and checks it; the trial's config keeps the URI.
  The driver keeps its local paths. A corpus or encoder given as ``s3://...`` is fetched the same way.

No Tune objects here; pyarrow's filesystems only.
"""

from __future__ import annotations

import hashlib
import posixpath
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from ..core.io import MANIFEST, sha256_file, write_manifest
from ..core.remote import (
    filesystem,
    is_remote,
    join,
    put_sealed_dir,
    read_bytes,
    remote_manifest,
    write_bytes,
)

#: Config fields that name an input a trial reads from a path
INPUT_FIELDS = ("corpus", "encoder")


class DriverFolder:
    """A local working copy of a remote experiment folder's top-level files (see the module doc).

    ``pull()`` downloads them (Tune's state, sessions.jsonl, the saved search space, earlier
    summaries) into ``local``, a fresh temporary folder of this user; ``push()`` uploads each file
    that is new or differs from what was pulled, and returns their names.
    """

    def __init__(self, experiment: str) -> None:
        self.experiment = experiment.rstrip("/")
        self.fs, self.path = filesystem(self.experiment)
        self.local = Path(tempfile.mkdtemp(prefix="counterarg-driver-"))
        self._pulled: dict[str, str] = {}

    def pull(self) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        names = []
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            name = posixpath.basename(info.path)
            data = read_bytes(self.fs, info.path)
            if data is None:
                continue
            (self.local / name).write_bytes(data)
            self._pulled[name] = hashlib.sha256(data).hexdigest()
            names.append(name)
        return sorted(names)

    def push(self, only: tuple[str, ...] | None = None) -> list[str]:
        """Upload the top-level files that are new or changed since :meth:`pull` (or the last push)."""
        sent = []
        for f in sorted(self.local.iterdir()):
            if not f.is_file() or f.name.startswith(".") or (only is not None and f.name not in only):
                continue
            digest = sha256_file(f)
            if self._pulled.get(f.name) == digest:
                continue
            write_bytes(self.fs, f"{self.path}/{f.name}", f.read_bytes())
            self._pulled[f.name] = digest
            sent.append(f.name)
        return sent

    def push_tree(self, name: str) -> None:
        """Replace the folder ``name`` in storage by the working copy's (TensorBoard's strategy runs,
        rewritten whole by every run or resume)."""
        dest = f"{self.path}/{name}"
        if self.fs.get_file_info(dest).type != pafs.FileType.NotFound:
            self.fs.delete_dir(dest)
        if (self.local / name).is_dir():
            pafs.copy_files(
                str(self.local / name), dest, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs
            )

    def close(self) -> None:
        shutil.rmtree(self.local, ignore_errors=True)


def _sealed_copy(source: Path, into: Path) -> Path:
    """A copy of the flat folder (or one file) ``source`` under ``into`` with a manifest; the
    user's own folder is never written to."""
    copy = into / "input"
    copy.mkdir(parents=True)
    files = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.name != MANIFEST)
    for p in files:
        if p.is_dir():
            raise ValueError(
                f"{source}: holds the folder {p.name}; a staged input must be one file or a flat "
                "folder (pass it as an s3:// or gs:// URI instead)"
            )
        shutil.copyfile(p, copy / p.name)
    write_manifest(copy)
    return copy


def stage_input(path: str, experiment: str) -> str:
    """Upload the local file or flat folder ``path`` into ``<experiment>/inputs/<name>-<sha>`` (once:
    an identical sealed copy there is reused) and return that URI (a folder; a file inside it for a file)."""
    source = Path(path)
    with tempfile.TemporaryDirectory(prefix="counterarg-stage-") as tmp:
        copy = _sealed_copy(source, Path(tmp))
        digest = hashlib.sha256((copy / MANIFEST).read_bytes()).hexdigest()[:16]
        uri = join(experiment, "inputs", f"{source.name}-{digest}")
        fs, dest = filesystem(uri)
        if remote_manifest(fs, dest) != read_manifest_json(copy):
            put_sealed_dir(copy, fs, dest)
    return join(uri, source.name) if source.is_file() else uri


def read_manifest_json(folder: Path) -> dict:
    import json

    return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))


def stage_inputs(fields: Mapping[str, Any], experiment: str) -> dict[str, Any]:
    """``fields`` with each local :data:`INPUT_FIELDS` path that exists here replaced by its staged
    URI (:func:`stage_input`); remote storage only, anything else unchanged."""
    out = dict(fields)
    if not is_remote(experiment):
        return out
    for k in INPUT_FIELDS:
        v = out.get(k)
        if isinstance(v, str) and v and "://" not in v and Path(v).exists():
            out[k] = stage_input(v, experiment)
    return out
