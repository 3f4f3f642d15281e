"""The Tune trainable: one ``counterarg.training.loop`` run per trial, adapted to Ray Tune.

* **Trainable** (:func:`trainable`): one call of ``train()`` per trial; each epoch
  ``ray.tune.report(metrics, checkpoint=Checkpoint.from_directory(checkpoint_dir))`` (not
  ``ray.train.report``: inside a Tune function trainable that fails on Ray 2.60). A restarted
  trial continues via ``train(resume_from=...)`` from the newest intact checkpoint it persisted
  (``tune.get_checkpoint()`` or a later one the experiment state had not caught up with,
  :func:`counterarg.sweep.recovery.later_checkpoints`), so a killed sweep loses at most the epoch
  in flight; a trial that had finished before the state caught up is not rerun. It also reports
  ``time/train_total_s``, the cumulative seconds spent inside ``train()`` minus the time spent
  inside ``tune.report``; against Tune's ``time_total_s`` that gives the Ray overhead printed in
  the summary (both clocks resume at the checkpoint Tune restored, so a resumed trial's overhead
  compares the same spans). A PBT exploit is a resume from another trial's checkpoint; the lineage of the
  weights travels in the checkpoint sidecar (:mod:`counterarg.sweep.lineage`).
* **Resources**: a ``PlacementGroupFactory`` per trial: bundle 0 = the trial (CPU, GPU fraction),
  plus one bundle per shard actor when ``index == "sharded-balltree"`` (a child actor without a
  reserved bundle hangs silently once trials hold every CPU). torch threads per trial = the
  trial's CPUs.
* **Files**: ``train()`` writes into the trial's working folder, which Tune never copies
  (:func:`run_folder`); Tune persists each reported checkpoint, and the run's own files
  (config.json, machine.jsonl with every session's row, metrics.jsonl) and its best epoch's state
  are mirrored beside the trial's checkpoints in storage after each epoch (:func:`mirror_run_files`).
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import ray
import torch
from ray import tune

from ..analysis.trials import TRAIN_TIME_KEY
from ..config import Config
from ..core.io import atomic_write_text, read_manifest
from ..core.remote import put_sealed_dir
from ..evaluation.selection import BEST_DIR
from ..model.checkpoint import CheckpointError, read_checkpoint
from ..ray_internals import trial_working_dir
from ..retrieval.shards import shard_bundles
from ..training.loop import train
from ..training.machine import MACHINE_FILE
from .console import quiet_worker_logs
from .failures import NODE_KEY  # reported with every epoch: the Ray node the trial ran on
from .lineage import inherit, lineage_entry
from .recovery import TRAIN_TIME_FILE, later_checkpoints, load_train_time, logged_epochs, read_sidecar


def trial_bundles(config: Mapping[str, Any], cpus: float = 1, gpus: float = 0) -> list[dict[str, float]]:
    """Placement-group bundles of one trial: itself, then one per shard actor if sharded.

    A sharded trial reserves the same ``cpus`` in all, half for itself and half split over its
    shard actors: the trial waits while its shards query, so they take turns on the same cores,
    and two such trials still run side by side on 2 CPUs (no actor left without a bundle).
    """
    trial = {"CPU": float(cpus)}
    if gpus:
        trial["GPU"] = float(gpus)
    if config.get("index", Config.index) != "sharded-balltree":
        return [trial]
    shards = int(config.get("shards", Config.shards))
    trial["CPU"] = float(cpus) / 2
    return shard_bundles(shards, trial=trial, cpu_per_shard=float(cpus) / (2 * shards))


def trial_resources(cpus: float = 1, gpus: float = 0) -> Callable[[dict], Any]:
    """``tune.with_resources`` callable: config -> PlacementGroupFactory (PACK onto one node)."""

    def make(config: dict):
        return tune.PlacementGroupFactory(trial_bundles(config, cpus, gpus), strategy="PACK")

    return make


def _report_unlogged(local: Path, ckpt, final: bool, train_s: float) -> None:
    """Report the rows of ``local`` (a checkpoint downloaded from storage) that the killed driver
    never logged; the last one goes with the checkpoint, so Tune's latest checkpoint is this one.

    The checkpoint holds the whole history; rows already in ``result.json`` are not sent again.
    Used for a trial restored behind its newest checkpoint: a finished one (``final``: nothing is
    trained) or one that continues from it. ``train_s``: the train time those rows report, that of
    the checkpoint Tune restored (see :func:`trainable`).
    """
    history = read_checkpoint(local)["history"]
    logged = logged_epochs(ckpt)
    missing = [row for row in history if int(row["epoch"]) not in logged]
    if final:
        print(
            f"[trial] already finished all {len(history)} epochs ({ckpt.path}); not rerun; "
            f"{len(missing)} unlogged epoch(s) reported",
            flush=True,
        )
    for row in missing[:-1]:
        tune.report(dict(row))  # an epoch's row without its (overwritten) checkpoint
    if missing:
        last = {**missing[-1], TRAIN_TIME_KEY: train_s}
        tune.report(last, checkpoint=tune.Checkpoint.from_directory(str(local)))


def _newest_own_checkpoint(ckpt, local: Path) -> tuple[Any, bool]:
    """The newest intact checkpoint of this trial at or after ``ckpt`` (Tune's), downloaded to
    ``local``; and whether it is a later one than Tune's.

    Tune's experiment state is saved about once a second, so it may name a checkpoint several
    fast epochs behind the newest one the worker persisted before the driver was killed; each
    later one is checked against its manifest (a kill may have cut its copy short) before use.
    """
    for _, path in later_checkpoints(ckpt):
        later = tune.Checkpoint(path, filesystem=ckpt.filesystem)
        shutil.rmtree(local, ignore_errors=True)
        try:
            later.to_directory(str(local))
            read_checkpoint(local)  # checks every file against the manifest
            return later, True
        except (OSError, CheckpointError) as e:  # e.g. a file fails its sha256
            print(
                f"[trial] skipped the later checkpoint {path}: {str(e).splitlines()[0] if str(e) else e!r}", flush=True
            )
    shutil.rmtree(local, ignore_errors=True)
    ckpt.to_directory(str(local))
    return ckpt, False


def run_folder(trial_id: str) -> Path:
    """Where ``train()`` writes this trial's run (config.json, metrics.jsonl, checkpoint/, best/).

    Not the trial folder of ``tune.get_context().get_trial_dir()``: for a trial that starts a fresh
    worker that is the driver's staging folder, which Tune's background sync copies into storage
    while ``train()`` swaps ``checkpoint/`` inside it (a ``FileNotFoundError`` for
    ``run/.checkpoint.old/...``, a failed experiment-state upload, a state on disk naming checkpoints
    Tune had deleted). The trial's working folder is never synced
    (``SyncConfig(sync_artifacts=False)``); Tune keeps what the run reports (its checkpoints) and
    :func:`mirror_run_files` copies the rest. Outside a Tune session: a fresh temporary folder.
    """
    working = trial_working_dir()
    if working is not None:
        return working / "run"
    return Path(tempfile.mkdtemp(prefix=f"counterarg-trial-{trial_id}-")) / "run"


def trainable(config: dict) -> None:
    """Ray Tune function trainable: one ``train()`` run, one ``tune.report`` per epoch.

    ``config`` must hold only Config field names. The run's files (config.json, metrics.jsonl,
    checkpoint/) go to ``<trial dir>/run``; each epoch's checkpoint folder is handed to Tune,
    which persists it under the trial's storage folder.
    """
    cfg = Config.from_dict(config)  # a staged corpus / encoder stays a URI: train() fetches it to this node
    quiet_worker_logs()
    ctx = tune.get_context()
    try:
        bundles = ctx.get_trial_resources().bundles
        cpus = max(1, round(sum(b.get("CPU", 0) for b in bundles)))  # its shards idle while it trains
    except (AttributeError, RuntimeError, TypeError) as e:  # resources unknown outside a full Tune session
        print(f"[trial] trial resources unknown ({e!r}); training with 1 thread", flush=True)
        cpus = 1
    os.environ["COUNTERARG_THREADS"] = str(cpus)  # train() honours it (model.set_threads_from_env)
    torch.set_num_threads(cpus)

    trial_id = str(ctx.get_trial_id())
    out_dir = run_folder(trial_id)
    trial_dir = out_dir.parent
    resume_from = None
    prior_train_s = 0.0
    lineage: list[dict[str, Any]] = []  # one entry per epoch of the weights' history (lineage.py)
    donor = None  # the trial whose weights this one took (PBT exploit), if any
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        sidecar = read_sidecar(ckpt.filesystem, str(ckpt.path).rstrip("/"))
        owner = sidecar.get("trial_id")
        donor = owner if owner and owner != trial_id else None  # PBT's exploit: another trial's weights
        resume_from = trial_dir / "resume_checkpoint"
        # Tune's clock (time_total_s) resumes at the checkpoint Tune restored; the epochs of a later
        # one (persisted as a Ctrl-C or a kill stopped the driver) were trained on no clock Tune kept,
        # so train time resumes there too: the Ray overhead compares the same spans (never negative)
        tune_train_s = float(sidecar.get("train_total_s", 0.0))
        if donor is None:  # its own checkpoint: continue from its newest intact one in storage
            ckpt, later = _newest_own_checkpoint(ckpt, resume_from)
            sidecar = read_sidecar(ckpt.filesystem, str(ckpt.path).rstrip("/"))
            final = later and int(sidecar.get("epoch", 0)) >= cfg.epochs
            _report_unlogged(resume_from, ckpt, final, tune_train_s)
            if final:
                shutil.rmtree(resume_from, ignore_errors=True)
                return
            prior_train_s = tune_train_s if later else load_train_time(resume_from)
        else:
            shutil.rmtree(resume_from, ignore_errors=True)
            ckpt.to_directory(str(resume_from))
            prior_train_s = load_train_time(resume_from)
        lineage = inherit(sidecar.get("lineage") or [], int(sidecar.get("epoch", 0)), donor)
        if donor is not None:
            print(
                f"[trial] {trial_id} continues from {donor}'s weights after epoch "
                f"{sidecar.get('epoch')} with rate={cfg.rate:g} lr={cfg.lr:g} margin={cfg.margin:g}",
                flush=True,
            )

    state = {"in_report": 0.0, "reports": 0}
    mirrored: dict = {}  # the epoch whose best state was last copied to storage
    start = time.perf_counter()
    node_id = ray.get_runtime_context().get_node_id()  # where this trial runs (a cluster spreads them)

    def report(metrics: dict, checkpoint_dir: Path, trained: bool = True) -> None:
        t0 = time.perf_counter()
        train_s = prior_train_s + (t0 - start) - state["in_report"]
        epoch = int(metrics["epoch"])
        if trained:  # this trial trained the epoch (else it came with the weights)
            lineage[:] = [e for e in lineage if e["epoch"] < epoch] + [lineage_entry(metrics, trial_id)]
        (Path(checkpoint_dir) / TRAIN_TIME_FILE).write_text(
            json.dumps({"train_total_s": train_s, "epoch": epoch, "trial_id": trial_id, "lineage": lineage})
        )
        row = dict(metrics)
        row[TRAIN_TIME_KEY] = train_s
        row[NODE_KEY] = node_id
        tune.report(row, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))
        mirror_run_files(out_dir, mirrored)
        state["in_report"] += time.perf_counter() - t0
        state["reports"] += 1

    train(cfg, out_dir, report=report, resume_from=resume_from, progress=False)
    if state["reports"] == 0 and resume_from is not None and donor is not None:
        # the weights taken already hold every epoch (a PBT donor's final checkpoint): report its
        # last row so that the trial ends with a result and a checkpoint of its own. (A trial
        # restored at its *own* final checkpoint reported that row before the kill: not again.)
        history = read_checkpoint(resume_from)["history"]
        if history:
            report(dict(history[-1]), resume_from, trained=False)
    for folder in (out_dir, trial_dir / "resume_checkpoint"):  # in storage now (checkpoints, mirrors)
        shutil.rmtree(folder, ignore_errors=True)


#: train()'s own files a trial mirrors into ``<trial folder in storage>/run/`` after each epoch
RUN_FILES = ("config.json", MACHINE_FILE, "metrics.jsonl")


def mirror_run_files(out_dir: Path, mirrored: dict | None = None) -> None:
    """Copy the run's :data:`RUN_FILES` beside the trial's checkpoints in storage, and its best
    epoch's state (``OUT/best``) into ``<trial>/best`` whenever that changed (``mirrored`` remembers
    the epoch last copied).

    The run folder itself lives in the worker's local trial dir (Ray's temp folder, which Ray may
    delete, and which a reused worker does not sync); its checkpoint is already Tune's. Uses the
    storage filesystem of the checkpoint just reported, so local, ``file://``, ``s3://`` and
    ``gs://`` storage all work.
    """
    ckpt = tune.get_checkpoint()
    if ckpt is None or ckpt.filesystem is None:
        return
    fs, trial = ckpt.filesystem, posixpath.dirname(str(ckpt.path).rstrip("/"))
    mirrored = {} if mirrored is None else mirrored
    try:
        if not mirrored.get("machine_rows"):  # this session's first copy: keep the earlier sessions' rows
            keep_stored_rows(fs, f"{trial}/run/{MACHINE_FILE}", Path(out_dir) / MACHINE_FILE)
            mirrored["machine_rows"] = True
        fs.create_dir(f"{trial}/run")
        for name in RUN_FILES:
            src = Path(out_dir) / name
            if src.exists():
                with fs.open_output_stream(f"{trial}/run/{name}") as f:
                    f.write(src.read_bytes())
    except OSError as e:  # storage hiccup: the rows are in result.json too; say so, go on
        print(f"[trial] could not copy {', '.join(RUN_FILES)} to {trial}/run: {e}", flush=True)
    _mirror_best(Path(out_dir) / BEST_DIR, fs, f"{trial}/{BEST_DIR}", mirrored)


def keep_stored_rows(fs, stored: str, local: Path) -> None:
    """Put the rows of ``stored`` (on ``fs``) that ``local`` lacks before its own, in ``local``.

    A restored trial trains in a fresh folder (often on another node), so its ``machine.jsonl`` holds
    only this session's row; the trial's earlier sessions' rows are in storage. Rows are whole JSON
    lines, each session's distinct (it records when it started), so a folder left by a killed worker
    on the same node (which already holds the stored rows) gains nothing twice.
    """
    try:
        with fs.open_input_stream(stored) as f:
            old = f.read().decode("utf-8").splitlines()
    except FileNotFoundError:
        return  # the trial's first session
    mine = local.read_text(encoding="utf-8").splitlines() if local.exists() else []
    kept = set(old)
    merged = old + [row for row in mine if row not in kept]
    if merged != mine:
        atomic_write_text(local, "".join(row + "\n" for row in merged))


def _mirror_best(best: Path, fs, dest: str, mirrored: dict) -> None:
    """Copy ``best`` to ``dest`` on ``fs`` when its manifest names a newer epoch than last copied.

    Local storage: written to ``dest.tmp`` and moved into place, so a kill leaves the old copy or
    none. Object storage has no rename: the files go up first and the manifest last, the old
    manifest deleted before (:func:`counterarg.core.remote.put_sealed_dir`), and every reader checks
    the manifest. Either way a half-written copy is never taken for whole (the summary then falls
    back to Tune's checkpoints).
    """
    manifest = read_manifest(best)
    epoch = (manifest or {}).get("epoch")
    if epoch is None or mirrored.get("epoch") == epoch:
        return
    try:
        if not isinstance(fs, pafs.LocalFileSystem):
            put_sealed_dir(best, fs, dest)
            mirrored["epoch"] = epoch
            return
        for path in (f"{dest}.tmp", dest):
            if fs.get_file_info(path).type != pafs.FileType.NotFound:
                fs.delete_dir(path)
        fs.create_dir(f"{dest}.tmp")
        pafs.copy_files(str(best), f"{dest}.tmp", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
        fs.move(f"{dest}.tmp", dest)
        mirrored["epoch"] = epoch
    except OSError as e:  # storage hiccup: Tune's own checkpoints still hold every epoch's state
        print(f"[trial] could not copy the best epoch's state to {dest}: {e}", flush=True)
