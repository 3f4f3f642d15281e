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
  truncated state file; :func:`repair_experiment_state` puts back the last complete set of state
  files (:class:`StateSnapshot` keeps it in ``<experiment>/.intact_state``), else the driver's
  intact staging copy (only one this user owns and no one else may write), or raises
  :class:`SweepStateError` naming the file.

Works on any pyarrow filesystem Tune's storage uses (local, ``file://``, ``s3://``, ``gs://``).
"""

from __future__ import annotations

import json
import os
import pickletools
import posixpath
import re
import shutil
import stat
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
from ray.tune import Callback

from ..core.io import atomic_replace_dir, atomic_write_bytes, bad_files, read_manifest, recover_dir
from ..model.checkpoint import checkpoint_index
from ..ray_internals import (
    DRIVER_STAGING_GLOB,
    EXPERIMENT_STATE_PREFIX,
    TUNER_FILE,
    experiment_folders,
    experiment_states,
    is_state_file,
    named_checkpoint_blobs,
    ray_temp_roots,
    session_stamp,
)

#: sidecar in each reported checkpoint: train time, epoch, the trial that wrote it and the lineage
#: of its weights (one entry per epoch, :mod:`counterarg.sweep.lineage`)
TRAIN_TIME_FILE = "_tune_train_time.json"
#: folder in a local experiment directory with the last complete set of Tune's state files
SNAPSHOT_DIR = ".intact_state"


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


def later_checkpoints(ckpt) -> list[tuple[int, str]]:
    """``(epoch, storage path)`` of the trial's checkpoints after ``ckpt`` in storage, newest epoch
    first; one without a readable sidecar (cut short by a kill) is left out.

    The experiment state may name an older checkpoint than the newest one the worker persisted
    (it is saved after every second checkpoint or second, and epochs can be faster); a restored
    trial continues from the newest intact one instead, so a kill loses at most the epoch in
    flight. Works on any pyarrow filesystem Tune's storage uses (local, ``file://``, ``s3://``, ``gs://``).
    """
    fs, path = ckpt.filesystem, str(ckpt.path).rstrip("/")
    own = checkpoint_index(path)
    if fs is None or own is None:
        return []
    try:
        infos = fs.get_file_info(pafs.FileSelector(posixpath.dirname(path), allow_not_found=True))
    except OSError:
        return []
    own_epoch = int(read_sidecar(fs, path).get("epoch", -1))
    found = []
    for info in infos:
        if info.type == pafs.FileType.Directory and (checkpoint_index(info.path) or -1) > own:
            epoch = int(read_sidecar(fs, info.path).get("epoch", -1))
            if epoch > own_epoch:
                found.append((epoch, info.path))
    return sorted(found, reverse=True)


def final_checkpoint_after(ckpt, epochs: int) -> str | None:
    """Storage path of a later checkpoint of the same trial that already holds all ``epochs``.

    Each epoch the worker persists its checkpoint before the driver logs the result, and the
    driver snapshots the experiment state later still; a driver killed between the two resumes a
    *finished* trial from an earlier checkpoint. Finding the final checkpoint beside the one Tune
    restored, the trial is known to be done and is not rerun.
    """
    return next((p for epoch, p in later_checkpoints(ckpt) if epoch >= epochs), None)


#: a checkpoint path as it appears in Tune's pickled checkpoint manager: ``<trial folder>/checkpoint_NNNNNN``
_NAMED_CHECKPOINT = re.compile(rb"(trial_[A-Za-z0-9_.=-]+)/(checkpoint_\d{6})")


def named_checkpoints(state_file: Path) -> dict[str, set[str]]:
    """Trial folder -> the checkpoint folders the experiment state names for it.

    Read from the hex of each trial's pickled checkpoint manager as bytes; nothing is unpickled.
    """
    out: dict[str, set[str]] = {}
    for data in named_checkpoint_blobs(state_file):
        for trial, ckpt in _NAMED_CHECKPOINT.findall(data):
            out.setdefault(trial.decode(), set()).add(ckpt.decode())
    return out


def restore_named_checkpoints(exp_dir: Path, fs: pafs.FileSystem | None = None, root: str | None = None) -> list[str]:
    """Put back the checkpoints that the experiment state names but storage lost.

    Tune (``CheckpointConfig(num_to_keep)``) deletes a checkpoint the moment a newer one is
    registered and saves the state naming the newer one only afterwards; a driver killed in
    between leaves a state naming deleted checkpoints, and ``Tuner.restore`` then fails the trial
    ("does not exist on storage anymore") and the next resume retrains it from scratch. The newest
    one a trial's state names gets a copy of the trial's next later checkpoint in storage (one with
    a readable sidecar); the restored trial then continues from its newest intact checkpoint
    (:func:`later_checkpoints`). An older one named becomes an empty folder, for Tune to delete as
    the trial goes on (deleting a missing folder logs a traceback). The state is read from
    ``exp_dir``; the trial folders are in ``root`` on ``fs`` (default: ``exp_dir`` on the local disk;
    object storage for a remote experiment, whose state the driver copied into ``exp_dir``).
    Returns what was done, one line each.
    """
    states = experiment_states(exp_dir)
    if not states:
        return []
    if fs is None:
        fs, root = pafs.LocalFileSystem(), str(exp_dir)
    root = str(root).rstrip("/")

    def is_dir(path: str) -> bool:
        return fs.get_file_info(path).type == pafs.FileType.Directory

    done = []
    for trial, names in sorted(named_checkpoints(states[-1]).items()):
        folder = f"{root}/{trial}"
        if not is_dir(folder):
            continue
        newest = max(names, key=lambda n: checkpoint_index(n) or -1)
        for name in sorted(n for n in names if n != newest and not is_dir(f"{folder}/{n}")):
            fs.create_dir(f"{folder}/{name}")
            done.append(
                f"{trial}/{name}: named by the experiment state but deleted before the driver died; "
                "an empty folder now, for Tune to delete"
            )
        if is_dir(f"{folder}/{newest}"):
            continue
        infos = fs.get_file_info(pafs.FileSelector(folder))
        later = sorted(
            (i, info.path)
            for info in infos
            if info.type == pafs.FileType.Directory
            and (i := checkpoint_index(info.path) or -1) > (checkpoint_index(newest) or -1)
            and read_sidecar(fs, info.path).get("epoch") is not None
        )
        if not later:
            continue
        source = later[0][1]
        if isinstance(fs, pafs.LocalFileSystem):  # a folder swap: a kill leaves no half copy under its name
            tmp = Path(tempfile.mkdtemp(prefix=f".{newest}.", dir=folder))
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            os.replace(tmp, Path(folder) / newest)
        else:  # object storage: the sidecar (which marks a checkpoint intact) is copied last
            files = sorted(
                (
                    i.path
                    for i in fs.get_file_info(pafs.FileSelector(source, recursive=True))
                    if i.type == pafs.FileType.File
                ),
                key=lambda p: p.endswith(TRAIN_TIME_FILE),
            )
            for path in files:
                fs.copy_file(path, f"{folder}/{newest}/{posixpath.relpath(path, source)}")
        done.append(
            f"{trial}/{newest}: named by the experiment state but deleted by Tune before the "
            f"driver died; copied from {posixpath.basename(source)}"
        )
    return done


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


def _state_files(folder: Path) -> list[Path]:
    """Tune's state files directly in ``folder``: experiment, search generator and searcher state."""
    return sorted(f for f in folder.iterdir() if f.is_file() and is_state_file(f))


class StateSnapshot(Callback):
    """Keeps the last complete set of Tune's state files in ``<experiment>/.intact_state``.

    Tune rewrites its state files in the driver's staging folder in place (``open(..., "w")``) and
    copies them into storage in a background thread, so a driver killed while it rewrites them
    during an upload leaves no intact copy anywhere: the repair had nothing to put back (a rare
    failure of the kill/resume tests). Tune asks its callbacks for their state right after it has
    written the experiment and searcher state (``TuneController.save_to_dir``): at that moment
    those files are whole and from one save. This callback copies them then, as one sealed folder
    swap (:func:`counterarg.core.io.atomic_replace_dir`: a kill leaves the old set or the new one). It
    keeps no state of its own. Both folders come from the trials' storage at run time (a resumed
    sweep's may differ from the first run's); local storage only, elsewhere it does nothing.
    """

    def __init__(self) -> None:
        self.exp_dir: Path | None = None
        self.staging: Path | None = None

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if self.staging is None and trials:  # every trial shares the experiment's folders
            self.staging, fs, exp_path = experiment_folders(trials[0])
            if isinstance(fs, pafs.LocalFileSystem):
                self.exp_dir = Path(exp_path)

    def get_state(self) -> None:
        self.snapshot()
        return None

    def snapshot(self) -> bool:
        """Copy the staging folder's state files if every one is whole; True if a set was written.
        Nothing is written before a trial named the folders, nor on remote storage (no local folder)."""
        exp_dir, staging = self.exp_dir, self.staging
        if exp_dir is None or staging is None or not staging.is_dir():
            return False
        data = {f.name: f.read_bytes() for f in _state_files(staging)}
        if not any(n.startswith(EXPERIMENT_STATE_PREFIX) for n in data) or not all(map(_intact_bytes, data.values())):
            return False

        def fill(tmp: Path) -> None:
            for n, b in data.items():
                (tmp / n).write_bytes(b)

        atomic_replace_dir(exp_dir / SNAPSHOT_DIR, fill)
        return True


def _from_snapshot(exp_dir: Path, stamp: str) -> dict[str, bytes] | None:
    """The snapshot's files if it is sealed, whole and from session ``stamp``; else None."""
    snap = exp_dir / SNAPSHOT_DIR
    recover_dir(snap)  # a kill inside the swap: complete or roll back first
    manifest = read_manifest(snap)
    if manifest is None or bad_files(snap, manifest):
        return None
    data = {f.name: f.read_bytes() for f in _state_files(snap)}
    if f"{EXPERIMENT_STATE_PREFIX}{stamp}.json" not in data or not all(map(_intact_bytes, data.values())):
        return None
    return data


def repair_experiment_state(exp_dir: Path, name: str) -> list[str]:
    """Replace state files a killed driver left cut short with the driver's intact local copies.

    Tune writes its snapshot to a staging folder on the driver and then copies it into storage;
    a driver killed during that copy leaves a truncated file that ``Tuner.restore`` cannot read.
    When any file of the newest session is cut short, the last complete set (:class:`StateSnapshot`)
    replaces the whole set, so experiment and searcher state stay from one save (a searcher ahead of
    the trial list would skip a trial). Without one (remote storage, or no save yet), each cut file
    is replaced by the driver's staging copy (``<ray temp>/session_*/artifacts/*/<name>/driver_artifacts``),
    owned by this user and writable by no one else (Tune unpickles them; :func:`_read_own_file`).
    A replaced file is kept beside, renamed ``*.torn`` (cut) or ``*.replaced`` (whole, but from a
    later save than the set). Returns what was repaired; raises :class:`SweepStateError` naming the
    file when no intact, safe copy exists.
    """
    states = experiment_states(exp_dir)
    if not states:
        return []
    stamp = session_stamp(states[-1])  # the newest session's
    files = [
        f
        for f in exp_dir.iterdir()
        if f.is_file() and f.suffix in (".json", ".pkl") and (stamp in f.name or f.name == TUNER_FILE)
    ]
    repaired = []
    torn_files = [f for f in files if not _intact(f)]
    snap = _from_snapshot(exp_dir, stamp) if torn_files else None
    if snap is not None:
        for n, data in snap.items():
            f = exp_dir / n
            if f.exists() and f.read_bytes() == data:
                continue
            kept = f.with_name(n + (".torn" if f in torn_files else ".replaced"))
            if f.exists():
                os.replace(f, kept)
            atomic_write_bytes(f, data)
            repaired.append(
                f"{n} ({'cut short' if f in torn_files else 'from a later save'}; kept as "
                f"{kept.name}) <- {exp_dir / SNAPSHOT_DIR / n}"
            )
        torn_files = [f for f in torn_files if f.name not in snap]
    for f in torn_files:
        found = [c for root in ray_temp_roots() for c in root.glob(f"{DRIVER_STAGING_GLOB.format(name=name)}/{f.name}")]
        copies = []
        for c in found:
            copy = _read_own_file(c)
            if copy is not None and _intact_bytes(copy):
                copies.append((c.stat().st_mtime, c, copy))
        if not copies:
            older = [s.name for s in states[:-1]]
            hint = (
                f"move it away to resume from the previous session's {older[-1]}"
                if older
                else "start the sweep again under a new --name"
            )
            unsafe = (
                (
                    f" ({len(found)} cop{'y' if len(found) == 1 else 'ies'} ignored: not owned by you, "
                    "writable by others, or cut short too)"
                )
                if found
                else ""
            )
            raise SweepStateError(
                f"{f} is cut short (the driver died while writing it) and no "
                f"intact copy was found under {', '.join(map(str, ray_temp_roots()))}"
                f"{unsafe}; {hint}"
            )
        _, good, data = max(copies, key=lambda c: c[0])
        torn = f.with_name(f.name + ".torn")
        os.replace(f, torn)
        atomic_write_bytes(f, data)
        repaired.append(f"{f.name} (cut short; kept as {torn.name}) <- {good}")
    return repaired
