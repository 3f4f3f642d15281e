"""Crash recovery of a sweep: what a killed driver left behind, read back and repaired.

* **Checkpoint sidecars.** Every checkpoint a trial reports carries :data:`TRAIN_TIME_FILE`: its
  train time, epoch, the trial that wrote it and the lineage of its weights
  (:mod:`counterarg.sweep.lineage`); a restarted trial reads it from storage.
* **Finished trials.** Each epoch the worker persists its checkpoint before the driver logs the
  result, and the driver snapshots the experiment state later still; a trial that had finished
  before the state caught up is recognised by its final checkpoint in storage
  (:func:`final_checkpoint_after`) and not rerun, and the epochs already in its ``result.json``
  (:func:`logged_epochs`) are not reported twice.
* **Torn experiment state.** A driver killed while copying its snapshot into storage leaves a
  truncated state file; :func:`repair_experiment_state` puts the driver's intact staging copy
  back (only one this user owns and no one else may write), or raises :class:`SweepStateError`
  naming the file.

Works on any pyarrow filesystem Tune's storage uses (local, ``file://``, ``s3://``, ``gs://``).
"""

from __future__ import annotations

import json
import os
import pickletools
import posixpath
import re
import stat
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from ..io import atomic_write_bytes

#: sidecar in each reported checkpoint: train time, epoch, the trial that wrote it and the lineage
#: of its weights (one entry per epoch, :mod:`counterarg.sweep.lineage`)
TRAIN_TIME_FILE = "_tune_train_time.json"


def read_sidecar(fs, folder: str) -> dict:
    """A checkpoint folder's sidecar (train time, epoch) on ``fs``; ``{}`` if absent or cut short."""
    try:
        with fs.open_input_stream(f"{folder}/{TRAIN_TIME_FILE}") as f:
            return json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):
        return {}


def load_train_time(ckpt_dir: Path) -> float:
    """The seconds spent in ``train()`` up to a local checkpoint folder's epoch (0 when unknown)."""
    return float(read_sidecar(pafs.LocalFileSystem(), str(ckpt_dir)).get("train_total_s", 0.0))


def checkpoint_index(folder: str) -> int | None:
    """``.../checkpoint_000012`` -> 12; None for any other name."""
    m = re.fullmatch(r"checkpoint_(\d+)", posixpath.basename(folder.rstrip("/")))
    return int(m.group(1)) if m else None


def final_checkpoint_after(ckpt, epochs: int) -> str | None:
    """Storage path of a later checkpoint of the same trial that already holds all ``epochs``.

    Each epoch the worker persists its checkpoint before the driver logs the result, and the
    driver snapshots the experiment state later still; a driver killed between the two resumes a
    *finished* trial from its second-to-last checkpoint. Finding the final checkpoint beside the
    one Tune restored, the trial is known to be done and is not rerun. Works on any pyarrow
    filesystem Tune's storage uses (local, ``file://``, ``s3://``, ``gs://``).
    """
    fs, path = ckpt.filesystem, str(ckpt.path).rstrip("/")
    own = checkpoint_index(path)
    if fs is None or own is None:
        return None
    try:
        infos = fs.get_file_info(pafs.FileSelector(posixpath.dirname(path), allow_not_found=True))
    except OSError:
        return None
    later = sorted(((i, info.path) for info in infos if info.type == pafs.FileType.Directory
                    and (i := checkpoint_index(info.path)) is not None and i > own), reverse=True)
    for _, candidate in later:  # a checkpoint cut short by the kill has no readable sidecar
        if int(read_sidecar(fs, candidate).get("epoch", -1)) >= epochs:
            return candidate
    return None


def logged_epochs(ckpt) -> set[int]:
    """Epochs in the trial's ``result.json`` beside ``ckpt`` in storage (a torn last line skipped)."""
    folder = posixpath.dirname(str(ckpt.path).rstrip("/"))
    try:
        with ckpt.filesystem.open_input_stream(f"{folder}/result.json") as f:
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return set()
    epochs = set()
    for line in text.splitlines():
        try:
            epochs.add(int(json.loads(line)["epoch"]))
        except (ValueError, KeyError, TypeError):
            continue
    return epochs


class SweepStateError(RuntimeError):
    """The experiment state on disk cannot be resumed; the message names the file."""


def _intact(path: Path) -> bool:
    """Whether a state file Tune wrote is whole: JSON parses, a pickle reaches its STOP opcode.

    Judged by content, not name: Tune's ``search_gen_state-*.json`` is a pickle.
    """
    try:
        return _intact_bytes(path.read_bytes())
    except OSError:
        return False


def _intact_bytes(data: bytes) -> bool:
    try:
        if not data.startswith(b"\x80"):  # every pickle protocol >= 2 opens with PROTO
            json.loads(data.decode("utf-8"))
        else:
            for _ in pickletools.genops(data):
                pass
        return bool(data)
    except (ValueError, UnicodeDecodeError):
        return False


def _read_own_file(path: Path) -> bytes | None:
    """The bytes of ``path`` if it is a regular file owned by this user and writable by nobody else.

    Ray's temp folders are world-writable (mode 0777, no sticky bit), so any user can put a file
    there; a pickle from such a place would run their code in ``Tuner.restore``. The checks are on
    the opened file descriptor (no symlinks followed), so the file cannot be swapped in between.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            return None
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read()
    finally:
        os.close(fd)


def _ray_temp_roots() -> list[Path]:
    roots = [os.environ.get("RAY_TMPDIR"), tempfile.gettempdir(), "/tmp"]
    return list(dict.fromkeys(Path(r) / "ray" for r in roots if r))


def repair_experiment_state(exp_dir: Path, name: str) -> list[str]:
    """Replace state files a killed driver left cut short with the driver's intact local copies.

    Tune writes its snapshot to a staging folder on the driver and then copies it into storage;
    a driver killed during that copy leaves a truncated file that ``Tuner.restore`` cannot read.
    The staging copy (``<ray temp>/session_*/artifacts/*/<name>/driver_artifacts``) is whole in
    that case. Only copies owned by this user and writable by no one else are used (Tune unpickles
    them; :func:`_read_own_file`). The cut file is kept beside, renamed ``*.torn``. Returns what was
    repaired; raises :class:`SweepStateError` naming the file when no intact, safe copy exists.
    """
    states = sorted(exp_dir.glob("experiment_state-*.json"))
    if not states:
        return []
    stamp = states[-1].name[len("experiment_state-"):-len(".json")]  # the newest session's
    files = [f for f in exp_dir.iterdir() if f.is_file() and f.suffix in (".json", ".pkl")
             and (stamp in f.name or f.name == "tuner.pkl")]
    repaired = []
    for f in files:
        if _intact(f):
            continue
        found = [c for root in _ray_temp_roots()
                 for c in root.glob(f"session_*/artifacts/*/{name}/driver_artifacts/{f.name}")]
        copies = []
        for c in found:
            data = _read_own_file(c)
            if data is not None and _intact_bytes(data):
                copies.append((c.stat().st_mtime, c, data))
        if not copies:
            older = [s.name for s in states[:-1]]
            hint = (f"move it away to resume from the previous session's {older[-1]}" if older
                    else "start the sweep again under a new --name")
            unsafe = (f" ({len(found)} cop{'y' if len(found) == 1 else 'ies'} ignored: not owned by you, "
                      "writable by others, or cut short too)") if found else ""
            raise SweepStateError(f"{f} is cut short (the driver died while writing it) and no "
                                  f"intact copy was found under {', '.join(map(str, _ray_temp_roots()))}"
                                  f"{unsafe}; {hint}")
        _, good, data = max(copies, key=lambda c: c[0])
        torn = f.with_name(f.name + ".torn")
        os.replace(f, torn)
        atomic_write_bytes(f, data)
        repaired.append(f"{f.name} (cut short; kept as {torn.name}) <- {good}")
    return repaired
