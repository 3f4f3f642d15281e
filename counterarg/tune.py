"""Ray Tune sweeps over training strategies: the trainable, search spaces, run/resume, summary.

Why this shape:

* **1:1 with Config.** Every key a trial receives is a :class:`~counterarg.config.Config` field
  (``Config.from_dict`` fails loudly on anything else). A strategy is several fields at once
  (schedule ``decay`` with ``rate_start`` 0.8 and ``rate_step`` 0.02), which Tune's ``grid_search``
  cannot vary jointly while keeping keys flat, so a grid is expanded here into a list of flat
  config dicts (:func:`grid`) and served in order by :class:`VariantSearcher`, whose position is
  saved with the experiment (resume keeps working). The strategy's name is derived back from the
  config (:func:`counterarg.summary.strategy_label`), never passed as a key. Random/ASHA search
  (:func:`margin_lr_space`) uses Tune's native domains, which are flat already.
* **Trainable** (:func:`trainable`): one call of ``train()`` per trial; each epoch
  ``ray.tune.report(metrics, checkpoint=Checkpoint.from_directory(checkpoint_dir))`` (not
  ``ray.train.report``: inside a Tune function trainable that fails on Ray 2.60). A restarted
  trial continues from ``tune.get_checkpoint()`` via ``train(resume_from=...)``, so a killed
  sweep loses at most the epoch in flight; a trial that had finished before the experiment state
  caught up is recognised by its final checkpoint in storage (:func:`final_checkpoint_after`) and
  not rerun, and a retrained epoch is counted once (:func:`dedupe_epochs`). It also reports ``time/train_total_s``, the
  cumulative seconds spent inside ``train()`` minus the time spent inside ``tune.report``; against
  Tune's ``time_total_s`` that gives the Ray overhead printed in the summary.
* **Resources**: a ``PlacementGroupFactory`` per trial: bundle 0 = the trial (CPU, GPU fraction),
  plus one ``{"CPU": 1}`` bundle per shard actor when ``index == "sharded-balltree"`` (a child actor
  without a reserved bundle hangs silently once trials hold every CPU). torch threads per trial =
  the trial's CPUs.
* **Crash safety**: ``TUNE_GLOBAL_CHECKPOINT_S`` (default 1 s here instead of Ray's >= 10 s) so the
  experiment state on disk is at most a second behind; a SIGKILLed driver then resumes each trial
  from its last epoch checkpoint. ``FailureConfig(max_failures=0)`` and no raise at the end: an
  errored trial (NaN loss, bad encoder path) is recorded with its message and the sweep goes on;
  ``--resume`` retries errored trials from scratch.
* **TensorBoard**: Ray 2.60 adds ``TBXLoggerCallback`` automatically, but it writes HParams only
  for Tune-*sampled* values (``trial.evaluated_params``) and only at trial end; ours
  (:class:`HParamsTBXLogger`) logs the varying Config fields plus the strategy name as HParams, so
  the HParams tab can compare strategies. Events land in the trial folders under
  ``<storage>/<name>``, which is what ``tensorboard --logdir`` should point at (Tune's own hint
  names a temp folder).

``shards.shard_bundles`` is imported lazily so this module works before/without the shard code.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import posixpath
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import schedules
from .config import Config, ConfigError, FIELD_NAMES, method_fields, parse_assignments
from .summary import (
    DEFAULT_METRIC,
    DEFAULT_MODE,
    TRAIN_TIME_KEY,
    TrialRecord,
    strategy_label,
    varying_fields,
    write_summary,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STORAGE = REPO_ROOT / "results"
#: sidecar in each reported checkpoint: train time, epoch, the trial that wrote it and the lineage
#: of its weights (one entry per epoch, :mod:`counterarg.lineage`)
TRAIN_TIME_FILE = "_tune_train_time.json"
#: the folder beside a trial's checkpoints in storage that holds its best epoch's state (train's
#: OUT/best, mirrored after each epoch that improved select_metric)
BEST_DIR = "best"
#: reported with every epoch: the Ray node the trial ran on
NODE_KEY = "node_id"

#: A named schedule strategy trains the reference method (config.REFERENCE_METHOD, less its schedule
#: and length) with that schedule from the registry (:mod:`counterarg.schedules`); the one named
#: recipe, ``recipe``, is the project's default recipe (the Config defaults) as it stands.
REFERENCE_FIELDS = method_fields()
RECIPES: dict[str, dict[str, Any]] = {"recipe": {}}
#: The main job: the reference implementation's three strategies (fixed 0.8, decay 0.8 - 0.02 * epoch,
#: pure random) beside the project's default recipe.
DEFAULT_STRATEGIES = (*schedules.default_strategies(), *RECIPES)


# ======================================================================== search spaces
def strategy(name: str | Mapping[str, Any], **fields_: Any) -> dict[str, Any]:
    """A strategy as flat Config fields: a schedule name from the registry or a dict, plus overrides.

    ``strategy("fixed", rate=0.5)`` -> the reference method (:data:`REFERENCE_FIELDS`) with
    ``{"schedule": "fixed", "rate": 0.5}`` (the name's default strategy,
    :func:`counterarg.schedules.strategy_fields`, with overrides); ``strategy("recipe")`` -> the
    default recipe, the same fields at their Config defaults. Validated now, so a typo fails before
    the sweep starts.
    """
    if isinstance(name, str):
        known = [*schedules.SCHEDULES, *RECIPES]
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"unknown strategy {name!r}; {hint}known: {', '.join(known)}")
        if name in RECIPES:  # the default recipe, with its own schedule (Config defaults)
            out = {**Config().to_dict(), **RECIPES[name], **fields_}
            out = {k: out[k] for k in (*REFERENCE_FIELDS, *schedules.all_fields(), *RECIPES[name], *fields_)}
        else:  # the reference method with this schedule
            out = {**REFERENCE_FIELDS, **schedules.strategy_fields(name), **fields_}
    else:
        out = {**dict(name), **fields_}
    cfg = Config.from_dict(out)  # validates and coerces ("0.5" -> 0.5)
    values = cfg.to_dict()
    return {k: values[k] for k in out}


def parse_strategy(text: str) -> dict[str, Any]:
    """CLI form: ``decay`` or ``fixed:rate=0.5`` or ``step:rate_start=0.8,rate_gamma=0.3``.

    A list value keeps its commas: ``table:rate_table=0.8,0.6,0.4`` (a comma starts a new
    override only where ``FIELD=`` follows it).
    """
    import re

    name, _, rest = text.partition(":")
    overrides = {}
    for item in filter(None, re.split(r",(?=\s*[A-Za-z_]\w*\s*=)", rest)):
        if "=" not in item:
            raise ConfigError(f"strategy override expects FIELD=VALUE, got {item!r} in {text!r}")
        k, v = item.split("=", 1)
        overrides[k.strip()] = v
    return strategy(name.strip(), **overrides)


def grid(*axes: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
         base: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Cartesian product of axes into flat Config-field dicts (the trial configs of a grid).

    Each axis is either a list of partial configs (e.g. strategies, each several fields) or a
    ``{field: [values]}`` mapping (one field, e.g. ``{"seed": [0, 1, 2]}``). Later axes and
    ``base`` never share keys with each other silently: overlapping keys raise, since that would
    make two "different" trials identical. Every dict is validated against Config.
    """
    norm: list[list[dict[str, Any]]] = []
    for ax in axes:
        if isinstance(ax, Mapping):
            if len(ax) != 1:
                raise ValueError("a mapping axis must have exactly one field: {field: [values]}")
            (k, values), = ax.items()
            norm.append([{k: v} for v in values])
        else:
            norm.append([dict(p) for p in ax])
    out = []
    for combo in itertools.product(*norm):
        cfg: dict[str, Any] = dict(base or {})
        for part in combo:
            for k in part:
                if k in cfg:
                    raise ValueError(f"field {k!r} is set by more than one grid axis/base")
            cfg.update(part)
        Config.from_dict(cfg)
        out.append(cfg)
    return out


def strategy_grid(strategies: Sequence[str | Mapping[str, Any]] = DEFAULT_STRATEGIES,
                  seeds: Sequence[int] = (0, 1, 2), **more: Sequence[Any]) -> list[dict[str, Any]]:
    """Strategies x seeds (x any ``field=[values]`` given as keyword), as flat trial configs."""
    axes: list[Any] = [[strategy(s) for s in strategies]]
    axes += [{k: list(v)} for k, v in more.items()]
    axes.append({"seed": list(seeds)})
    return grid(*axes)


def margin_lr_space(schedule: str | Mapping[str, Any] = schedules.DEFAULT_SCHEDULE, *,
                    margin: tuple[float, float] = (0.1, 3.0), lr: tuple[float, float] = (1e-4, 1e-2),
                    seeds: Sequence[int] = (0,)) -> dict[str, Any]:
    """Tune param space for a random/ASHA search over margin and lr (log-uniform) for one strategy.

    Keys are Config fields; seeds become a ``grid_search`` (repeats per sample) when more than one.
    """
    from ray import tune

    space: dict[str, Any] = dict(strategy(schedule))
    space["margin"] = tune.loguniform(*margin)
    space["lr"] = tune.loguniform(*lr)
    space["seed"] = tune.grid_search(list(seeds)) if len(seeds) > 1 else seeds[0]
    return space


def _searcher_base():
    from ray.tune.search import Searcher

    return Searcher


class VariantSearcher(_searcher_base()):
    """Serve a fixed list of flat trial configs in order (a grid whose points are whole dicts).

    Unlike ``grid_search`` the points may vary several fields jointly while every key stays a
    Config field. The position is saved with the experiment so ``Tuner.restore`` continues the
    list where it stopped instead of creating trials twice.
    """

    def __init__(self, variants: Sequence[Mapping[str, Any]], metric: str | None = None,
                 mode: str | None = None):
        super().__init__(metric=metric, mode=mode)
        self.variants = [dict(v) for v in variants]
        self.next_index = 0

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        # The param space holds only constants (the shared base); they are merged by Tune.
        if metric and not self._metric:
            self._metric = metric
        if mode and not self._mode:
            self._mode = mode
        return True

    def suggest(self, trial_id: str):
        if self.next_index >= len(self.variants):
            return self.FINISHED
        cfg = dict(self.variants[self.next_index])
        self.next_index += 1
        return cfg

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        from .io import atomic_write_text

        atomic_write_text(Path(checkpoint_path), json.dumps(
            {"variants": self.variants, "next_index": self.next_index}))

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        self.variants = state["variants"]
        self.next_index = state["next_index"]


# ======================================================================== the trainable
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
    from .shards import shard_bundles

    shards = int(config.get("shards", Config.shards))
    trial["CPU"] = float(cpus) / 2
    return shard_bundles(shards, trial=trial, cpu_per_shard=float(cpus) / (2 * shards))


def trial_resources(cpus: float = 1, gpus: float = 0) -> Callable[[dict], Any]:
    """``tune.with_resources`` callable: config -> PlacementGroupFactory (PACK onto one node)."""

    def make(config: dict):
        from ray import tune

        return tune.PlacementGroupFactory(trial_bundles(config, cpus, gpus), strategy="PACK")

    return make


def _train_fn():
    from .train import train

    return train


def _read_sidecar(fs, folder: str) -> dict:
    """A checkpoint folder's sidecar (train time, epoch) on ``fs``; ``{}`` if absent or cut short."""
    try:
        with fs.open_input_stream(f"{folder}/{TRAIN_TIME_FILE}") as f:
            return json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):
        return {}


def _load_train_time(ckpt_dir: Path) -> float:
    import pyarrow.fs as pafs

    return float(_read_sidecar(pafs.LocalFileSystem(), str(ckpt_dir)).get("train_total_s", 0.0))


def _checkpoint_index(folder: str) -> int | None:
    """``.../checkpoint_000012`` -> 12; None for any other name."""
    import re

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
    import pyarrow.fs as pafs

    fs, path = ckpt.filesystem, str(ckpt.path).rstrip("/")
    own = _checkpoint_index(path)
    if fs is None or own is None:
        return None
    try:
        infos = fs.get_file_info(pafs.FileSelector(posixpath.dirname(path), allow_not_found=True))
    except OSError:
        return None
    later = sorted(((i, info.path) for info in infos if info.type == pafs.FileType.Directory
                    and (i := _checkpoint_index(info.path)) is not None and i > own), reverse=True)
    for _, candidate in later:  # a checkpoint cut short by the kill has no readable sidecar
        if int(_read_sidecar(fs, candidate).get("epoch", -1)) >= epochs:
            return candidate
    return None


def read_trial_ranks(result) -> dict[str, Any] | None:
    """The per-query ranks of a trial's best epoch (``train.BestRanks``) from its latest checkpoint
    in storage, on any pyarrow filesystem; None when the trial has none (errored before an epoch)."""
    import io as _io

    import numpy as np

    from .train import BestRanks

    ckpts = [c for c, _ in (getattr(result, "best_checkpoints", None) or [])]
    if getattr(result, "checkpoint", None) is not None:
        ckpts.append(result.checkpoint)
    ckpts.sort(key=lambda c: _checkpoint_index(str(c.path)) or -1, reverse=True)
    for ckpt in ckpts:
        fs = ckpt.filesystem
        try:
            with fs.open_input_stream(f"{str(ckpt.path).rstrip('/')}/{BestRanks.FILE}") as f:
                data = f.read()
            with np.load(_io.BytesIO(data), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            print(f"[sweep] no per-query ranks in {ckpt.path}: {e}", flush=True)
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


def _report_finished(cfg: Config, final, local: Path) -> None:
    """Report the rows of a finished trial that the killed driver never logged; train nothing.

    The final checkpoint holds the whole history. Rows already in ``result.json`` are not sent
    again; the last row goes with the final checkpoint, so Tune's latest checkpoint is the final.
    """
    from ray import tune

    from .train import read_checkpoint

    shutil.rmtree(local, ignore_errors=True)
    final.to_directory(str(local))
    try:
        history = read_checkpoint(local)["history"]
        logged = logged_epochs(final)
        missing = [row for row in history if int(row["epoch"]) not in logged]
        print(f"[trial] already finished all {cfg.epochs} epochs ({final.path}); not rerun; "
              f"{len(missing)} unlogged epoch(s) reported", flush=True)
        for i, row in enumerate(missing):
            if i < len(missing) - 1 or int(row["epoch"]) != int(history[-1]["epoch"]):
                tune.report(dict(row))  # an epoch's row without its (overwritten) checkpoint
            else:
                last = {**row, TRAIN_TIME_KEY: _load_train_time(local)}
                tune.report(last, checkpoint=tune.Checkpoint.from_directory(str(local)))
    finally:
        shutil.rmtree(local, ignore_errors=True)


def trainable(config: dict) -> None:
    """Ray Tune function trainable: one ``train()`` run, one ``tune.report`` per epoch.

    ``config`` must hold only Config field names. The run's files (config.json, metrics.jsonl,
    checkpoint/) go to ``<trial dir>/run``; each epoch's checkpoint folder is handed to Tune,
    which persists it under the trial's storage folder.
    """
    import torch
    from ray import tune

    cfg = Config.from_dict(config)
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

    from .lineage import inherit, lineage_entry

    trial_dir = Path(ctx.get_trial_dir())
    trial_id = str(ctx.get_trial_id())
    out_dir = trial_dir / "run"
    resume_from = None
    prior_train_s = 0.0
    lineage: list[dict[str, Any]] = []  # one entry per epoch of the weights' history (lineage.py)
    donor = None  # the trial whose weights this one took (PBT exploit), if any
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        sidecar = _read_sidecar(ckpt.filesystem, str(ckpt.path).rstrip("/"))
        owner = sidecar.get("trial_id")
        donor = owner if owner and owner != trial_id else None  # PBT's exploit: another trial's weights
        done_at = final_checkpoint_after(ckpt, cfg.epochs) if donor is None else None
        if done_at is not None:
            _report_finished(cfg, tune.Checkpoint(done_at, filesystem=ckpt.filesystem),
                             trial_dir / "final_checkpoint")
            return
        resume_from = trial_dir / "resume_checkpoint"
        shutil.rmtree(resume_from, ignore_errors=True)
        ckpt.to_directory(str(resume_from))
        prior_train_s = _load_train_time(resume_from)
        lineage = inherit(sidecar.get("lineage") or [], int(sidecar.get("epoch", 0)), donor)
        if donor is not None:
            print(f"[trial] {trial_id} continues from {donor}'s weights after epoch "
                  f"{sidecar.get('epoch')} with rate={cfg.rate:g} lr={cfg.lr:g} margin={cfg.margin:g}",
                  flush=True)

    state = {"in_report": 0.0, "reports": 0}
    mirrored: dict = {}  # the epoch whose best state was last copied to storage
    start = time.perf_counter()
    import ray

    node_id = ray.get_runtime_context().get_node_id()  # where this trial runs (a cluster spreads them)

    def report(metrics: dict, checkpoint_dir: Path, trained: bool = True) -> None:
        t0 = time.perf_counter()
        train_s = prior_train_s + (t0 - start) - state["in_report"]
        epoch = int(metrics["epoch"])
        if trained:  # this trial trained the epoch (else it came with the weights)
            lineage[:] = [e for e in lineage if e["epoch"] < epoch] + [lineage_entry(metrics, trial_id)]
        (Path(checkpoint_dir) / TRAIN_TIME_FILE).write_text(json.dumps(
            {"train_total_s": train_s, "epoch": epoch, "trial_id": trial_id, "lineage": lineage}))
        row = dict(metrics)
        row[TRAIN_TIME_KEY] = train_s
        row[NODE_KEY] = node_id
        tune.report(row, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))
        mirror_run_files(out_dir, mirrored)
        state["in_report"] += time.perf_counter() - t0
        state["reports"] += 1

    _train_fn()(cfg, out_dir, report=report, resume_from=resume_from, progress=False)
    if state["reports"] == 0 and resume_from is not None and donor is not None:
        # the weights taken already hold every epoch (a PBT donor's final checkpoint): report its
        # last row so that the trial ends with a result and a checkpoint of its own. (A trial
        # restored at its *own* final checkpoint reported that row before the kill: not again.)
        from .train import read_checkpoint

        history = read_checkpoint(resume_from)["history"]
        if history:
            report(dict(history[-1]), resume_from, trained=False)


#: train()'s own files a trial mirrors into ``<trial folder in storage>/run/`` after each epoch
RUN_FILES = ("config.json", "metrics.jsonl")


def mirror_run_files(out_dir: Path, mirrored: dict | None = None) -> None:
    """Copy the run's :data:`RUN_FILES` beside the trial's checkpoints in storage, and its best
    epoch's state (``OUT/best``) into ``<trial>/best`` whenever that changed (``mirrored`` remembers
    the epoch last copied).

    The run folder itself lives in the worker's local trial dir (Ray's temp folder, which Ray may
    delete, and which a reused worker does not sync); its checkpoint is already Tune's. Uses the
    storage filesystem of the checkpoint just reported, so local, ``file://``, ``s3://`` and
    ``gs://`` storage all work.
    """
    from ray import tune

    ckpt = tune.get_checkpoint()
    if ckpt is None or ckpt.filesystem is None:
        return
    fs, trial = ckpt.filesystem, posixpath.dirname(str(ckpt.path).rstrip("/"))
    try:
        fs.create_dir(f"{trial}/run")
        for name in RUN_FILES:
            src = Path(out_dir) / name
            if src.exists():
                with fs.open_output_stream(f"{trial}/run/{name}") as f:
                    f.write(src.read_bytes())
    except OSError as e:  # storage hiccup: the rows are in result.json too; say so, go on
        print(f"[trial] could not copy {', '.join(RUN_FILES)} to {trial}/run: {e}", flush=True)
    _mirror_best(Path(out_dir) / BEST_DIR, fs, f"{trial}/{BEST_DIR}", {} if mirrored is None else mirrored)


def _mirror_best(best: Path, fs, dest: str, mirrored: dict) -> None:
    """Copy ``best`` to ``dest`` on ``fs`` when its manifest names a newer epoch than last copied.

    Written to ``dest.tmp`` and moved into place, so a kill leaves the old copy or none (the
    summary then falls back to Tune's checkpoints), never a half-written one under ``dest``.
    """
    import pyarrow.fs as pafs

    from .io import read_manifest

    manifest = read_manifest(best)
    epoch = (manifest or {}).get("epoch")
    if epoch is None or mirrored.get("epoch") == epoch:
        return
    try:
        for path in (f"{dest}.tmp", dest):
            if fs.get_file_info(path).type != pafs.FileType.NotFound:
                fs.delete_dir(path)
        fs.create_dir(f"{dest}.tmp")
        pafs.copy_files(str(best), f"{dest}.tmp", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)
        fs.move(f"{dest}.tmp", dest)
        mirrored["epoch"] = epoch
    except OSError as e:  # storage hiccup: Tune's own checkpoints still hold every epoch's state
        print(f"[trial] could not copy the best epoch's state to {dest}: {e}", flush=True)


# ======================================================================== TensorBoard
def _tbx_base():
    from ray.tune.logger import TBXLoggerCallback

    return TBXLoggerCallback


class HParamsTBXLogger(_tbx_base()):
    """Tune's TensorBoardX logger, with an HParams table that compares trials.

    Per-epoch scalars are Tune's (``ray/tune/<metric>``, every task metric, both views). When a
    trial ends, its HParams row is written: the strategy, the fields its schedule reads and the
    other fields that vary across the sweep; and, as metrics, the validation and test acc@1 (mean
    and per task, both views) *at the trial's best epoch* by the sweep metric, logged as scalars
    ``best/<split>/<task>/acc_1`` (TensorBoard tags cannot hold ``@``) so the HParams tab can show them.
    """

    def __init__(self, hparam_fields: Sequence[str] = (), metric: str = DEFAULT_METRIC, mode: str = DEFAULT_MODE):
        super().__init__()
        self.hparam_fields = list(hparam_fields)
        self.metric, self.mode = metric, mode
        self._best: dict[Any, dict[str, float]] = {}

    def log_trial_result(self, iteration: int, trial, result: dict):
        super().log_trial_result(iteration, trial, result)
        v = result.get(self.metric)
        best = self._best.get(trial)
        if isinstance(v, (int, float)) and math.isfinite(v) and (
                best is None or (v > best[self.metric] if self.mode == "max" else v < best[self.metric])):
            self._best[trial] = {k: float(x) for k, x in result.items() if isinstance(x, (int, float))
                                 and not isinstance(x, bool)}

    def hparams_of(self, trial) -> dict[str, Any]:
        """The strategy, the fields its schedule reads, and the other varying fields of ``trial``."""
        from .summary import NON_GROUP_FIELDS

        cfg = Config.from_dict(dict(trial.config)).to_dict()
        params: dict[str, Any] = {"strategy": strategy_label(cfg), "schedule": cfg["schedule"]}
        entry = schedules.SCHEDULES.get(cfg["schedule"])
        for k in entry.fields if entry else ():
            params[k] = cfg[k] if isinstance(cfg[k], (str, bool, int, float)) else str(cfg[k])
        strategy_fields = schedules.all_fields()
        for k in self.hparam_fields or sorted(trial.evaluated_params or {}):
            if k in strategy_fields or k in NON_GROUP_FIELDS - {"seed"}:
                continue  # rate fields only where the schedule reads them
            v = cfg.get(k)
            params[k] = v if isinstance(v, (str, bool, int, float)) else str(v)
        return params

    @staticmethod
    def best_metrics(best: dict[str, float]) -> dict[str, float]:
        """acc@1 of both splits and views at the best epoch, as ``best/<split>/<task>/acc_1``."""
        return {"best/" + k.replace("@", "_"): v for k, v in best.items()
                if k.startswith(("validation", "test")) and k.endswith("/acc@1")}

    def _log_hparams(self, trial) -> None:
        from tensorboardX.summary import hparams

        metrics = self.best_metrics(self._best.get(trial, {}))
        writer = self._trial_writer[trial]
        step = int(self._best.get(trial, {}).get("epoch", 0))
        for k, v in metrics.items():
            writer.add_scalar(k, v, global_step=step)
        exp, start, end = hparams(hparam_dict=self.hparams_of(trial), metric_dict=metrics)
        for summary in (exp, start, end):
            writer.file_writer.add_summary(summary)
        writer.flush()

    def log_trial_end(self, trial, failed: bool = False):
        # Tune only logs HParams for trials with evaluated_params (search spaces); ours always do,
        # with the best epoch's metrics instead of the last result.
        if trial in self._trial_writer and self._best.get(trial):
            try:
                self._log_hparams(trial)
            except (ValueError, TypeError, OSError) as e:  # TensorBoard must not fail a sweep; say why
                print(f"[sweep] HParams of trial {trial.trial_id} not written: {e}", flush=True)
        self._best.pop(trial, None)
        evaluated, trial.evaluated_params = trial.evaluated_params, {}  # ours replaced Tune's
        try:
            super().log_trial_end(trial, failed)
        finally:
            trial.evaluated_params = evaluated


# ======================================================================== console
def _reporter_base():
    from ray.tune import ProgressReporter

    return ProgressReporter


class SweepReporter(_reporter_base()):
    """A status table a person can read: per trial its strategy, seed, state, epoch and best metric.

    Printed when a trial changes state and at most every ``every_s`` seconds otherwise (Tune's own
    table shows trial hashes and loss columns). Needs Tune's classic output engine
    (``RAY_AIR_NEW_OUTPUT=0``, set by :func:`build_tuner`).
    """

    def __init__(self, metric: str, mode: str = DEFAULT_MODE, every_s: float = 30.0):
        self.metric, self.mode, self.every_s = metric, mode, every_s
        self._last, self._states, self._start = 0.0, None, time.time()

    def setup(self, start_time: float | None = None, total_samples: int | None = None, metric=None, mode=None,
              **kwargs) -> None:
        self._start = start_time or time.time()

    def should_report(self, trials, done: bool = False) -> bool:
        states = tuple((t.trial_id, t.status) for t in trials)
        return states != self._states or (not done and time.time() - self._last >= self.every_s)

    def table(self, trials) -> str:
        rows = []
        for t in trials:
            try:
                label = strategy_label(Config.from_dict(dict(t.config)).to_dict())
            except (ConfigError, TypeError):
                label = "?"
            seed = dict(t.config).get("seed", Config().seed)
            last = t.last_result or {}
            best = (getattr(t, "metric_analysis", None) or {}).get(self.metric, {}).get(self.mode)
            rows.append((label, str(seed), t.status.lower(), str(last.get("epoch", "-")),
                         "-" if best is None else f"{best:.4f}"))
        head = ("strategy", "seed", "state", "epoch", f"best {self.metric}")
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        counts = {}
        for t in trials:
            counts[t.status.lower()] = counts.get(t.status.lower(), 0) + 1
        elapsed = time.time() - self._start
        lines = [f"[sweep] {elapsed / 60:.1f} min: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())),
                 fmt.format(*head)] + [fmt.format(*r) for r in sorted(rows)]
        return "\n".join(lines)

    def report(self, trials, done: bool, *sys_info: str) -> None:
        self._states = tuple((t.trial_id, t.status) for t in trials)
        self._last = time.time()
        print(self.table(trials), flush=True)


class _DropRestoreHint:
    """Logging filter: Tune's interrupt hint names ``Tuner.restore(...)``; ours says ``--resume``."""

    def filter(self, record) -> bool:
        return "Tuner.restore(" not in record.getMessage()


def quiet_worker_logs() -> None:
    """No "Checkpoint successfully created" line per epoch per trial from Ray's storage logger."""
    import logging

    for name in ("ray.train._internal.storage", "ray.train.v2._internal.execution.storage"):
        logging.getLogger(name).setLevel(logging.WARNING)


# ======================================================================== running a sweep
@dataclass
class Sweep:
    """What to run: either a list of flat trial configs (grid) or a Tune param space (search).

    ``base`` holds Config overrides shared by every trial (corpus, encoder, epochs, ...).
    """

    name: str
    base: dict[str, Any] = field(default_factory=dict)
    variants: list[dict[str, Any]] | None = None  # grid: one flat dict per trial
    param_space: dict[str, Any] | None = None  # search: Tune domains over Config fields
    num_samples: int = 1
    scheduler: str = "fifo"  # fifo | asha | pbt
    pbt: Any = None  # scheduler "pbt": a counterarg.pbt.PBTOptions
    metric: str | None = None  # None: the trials' select_metric (Config), the one selection rule
    mode: str = DEFAULT_MODE
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0

    def __post_init__(self) -> None:
        if (self.variants is None) == (self.param_space is None):
            raise ValueError("give exactly one of variants (grid) or param_space (search)")
        keys = set(self.base)
        for v in self.variants or []:
            keys |= set(v)
        keys |= set(self.param_space or {})
        bad = sorted(keys - set(FIELD_NAMES))
        if bad:
            raise ConfigError(f"unknown config field(s) in sweep: {', '.join(bad)}")
        selects = {Config.from_dict({**self.base, **v}).select_metric for v in self.variants or [{}]}
        if len(selects) > 1:
            raise ConfigError(f"the trials of one sweep must share select_metric; got {', '.join(sorted(selects))}")
        if self.metric is None:
            self.metric = selects.pop()
        elif self.metric != next(iter(selects)):
            raise ConfigError(f"sweep metric {self.metric!r} differs from the trials' select_metric "
                              f"{next(iter(selects))!r}; set select_metric instead")
        if self.scheduler not in ("fifo", "asha", "pbt"):
            raise ValueError(f"scheduler must be fifo, asha or pbt, got {self.scheduler!r}")
        if (self.scheduler == "pbt") != (self.pbt is not None):
            raise ValueError("scheduler 'pbt' needs pbt options (counterarg.pbt.PBTOptions), and only it")
        if not 1 <= self.num_samples <= MAX_NUM_SAMPLES:
            raise ConfigError(f"num_samples must be between 1 and {MAX_NUM_SAMPLES}, got {self.num_samples}")
        if not (self.cpus_per_trial >= 1 and math.isfinite(self.cpus_per_trial)):
            raise ConfigError(f"cpus_per_trial must be >= 1, got {self.cpus_per_trial}")
        if not (self.gpus_per_trial >= 0 and math.isfinite(self.gpus_per_trial)):
            raise ConfigError(f"gpus_per_trial must be >= 0, got {self.gpus_per_trial}")


def storage_uri(storage: str | Path | None) -> str:
    """Absolute local path for plain paths; URIs (file://, s3://, gs://) pass through."""
    if storage is None:
        return str(DEFAULT_STORAGE)
    s = str(storage)
    if "://" in s:
        return s
    return str(Path(s).expanduser().resolve())


def local_experiment_dir(storage: str, name: str) -> Path | None:
    """The experiment folder on this machine, when storage is local (plain path or file://)."""
    if storage.startswith("file://"):
        return Path(storage[len("file://"):]) / name
    if "://" in storage:
        return None
    return Path(storage) / name


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
    import pickletools

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
        import stat

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
        from .io import _atomic

        _atomic(f, lambda tmp, d=data: tmp.write_bytes(d))
        repaired.append(f"{f.name} (cut short; kept as {torn.name}) <- {good}")
    return repaired


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start or join Ray for a sweep driver.

    * ``address=None``: a fresh local cluster (``address="local"``), never a lingering one left by a
      killed driver, so a resume does not attach to half-dead processes. It listens on 127.0.0.1
      only (:func:`counterarg.shards.loopback_only`): nothing of a local sweep is reachable from the network.
    * ``address="auto"`` or ``host:port``: join an existing cluster. Ray 2.60 enables token auth
      by default; ``address="auto"`` picks up ``~/.ray/auth_token`` itself, an explicit address
      does not, so we opt into token mode when a token is available and RAY_AUTH_MODE is unset.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Workers must import counterarg even when it is not installed on the cluster's Python path.
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}}
    if address in (None, "", "local"):
        from .shards import LOOPBACK, loopback_only

        with loopback_only():
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env,
                     log_to_driver=True, _node_ip_address=LOOPBACK)
        return
    if address != "auto" and "RAY_AUTH_MODE" not in os.environ and (
            os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").exists()):
        os.environ["RAY_AUTH_MODE"] = "token"
    ray.init(address=address, runtime_env=runtime_env)


def warm_feature_cache(configs: Iterable[Mapping[str, Any]]) -> float:
    """Run ``prepare_features`` once per distinct config before trials start; returns seconds.

    Trials then only load the cache (file-locked, on disk). Distinctness is judged on the fields
    that can change the features; extra calls are cache hits anyway.
    """
    from .train import prepare_features

    keys = ("corpus", "encoder", "pooling", "max_length", "finetune", "cache_dir",
            "embed_batch_size", "device")
    seen = set()
    t = time.perf_counter()
    for c in configs:
        cfg = Config.from_dict(dict(c))
        key = tuple(repr(getattr(cfg, k)) for k in keys)
        if key in seen:
            continue
        seen.add(key)
        try:
            prepare_features(cfg, progress=True)  # a cold cache takes minutes: show it
        except Exception as e:  # noqa: BLE001 - the trial reports it as its error
            print(f"[sweep] feature cache not prepared for encoder={cfg.encoder!r} "
                  f"corpus={cfg.corpus!r}: {str(e).splitlines()[0] if str(e) else e!r}", flush=True)
    return time.perf_counter() - t


def sweep_baseline(sweep: Sweep) -> dict[str, float] | None:
    """The zero-shot encoder's validation and test metrics, when every trial shares one frozen
    encoder setup (its pooled feature cache is then warm: seconds); else None."""
    from .train import zero_shot_metrics

    keys = ("corpus", "encoder", "pooling", "max_length", "finetune", "cache_dir", "device", "ks")
    cfgs = [Config.from_dict(dict(c)) for c in _concrete_configs(sweep)]
    if not cfgs or cfgs[0].finetune != "none" or len({tuple(repr(getattr(c, k)) for k in keys) for c in cfgs}) > 1:
        return None
    try:
        return zero_shot_metrics(cfgs[0])
    except (OSError, ValueError, RuntimeError) as e:  # the trials report such errors; say why here
        print(f"[sweep] no zero-shot baseline: {str(e).splitlines()[0] if str(e) else e!r}", flush=True)
        return None


def _concrete_configs(sweep: Sweep) -> list[dict[str, Any]]:
    if sweep.variants is not None:
        return [{**sweep.base, **v} for v in sweep.variants]
    fixed = {k: v for k, v in (sweep.param_space or {}).items()
             if isinstance(v, (str, int, float, bool, type(None)))}
    return [{**sweep.base, **fixed}]


def trial_dirname(trial) -> str:
    """``trial_<id>_<strategy>_seed<N>``: short, unique, and TensorBoard's run names tell the curves
    apart (Tune's default packs the whole config into the name)."""
    import re

    try:
        cfg = Config.from_dict(dict(trial.config)).to_dict()
        label = re.sub(r"[^A-Za-z0-9.=]+", "-", strategy_label(cfg)).strip("-")[:48]
        return f"trial_{trial.trial_id}_{label}_seed{cfg['seed']}"
    except (ConfigError, KeyError, TypeError):
        return f"trial_{trial.trial_id}"


def build_tuner(sweep: Sweep, storage: str, *, resume: bool = False, verbose: int = 1):
    """A ``tune.Tuner`` for ``sweep`` (fresh) or restored from ``<storage>/<name>`` (resume)."""
    from ray import tune
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    import logging

    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "1000")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the classic engine honours our SweepReporter
    # keeping the best checkpoint forces a state snapshot per report: wanted (resume is fresher)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    logging.getLogger("ray.tune.tune").addFilter(_DropRestoreHint())
    quiet_worker_logs()
    exp_path = storage.rstrip("/") + "/" + sweep.name
    runnable = tune.with_resources(trainable, trial_resources(sweep.cpus_per_trial, sweep.gpus_per_trial))
    if resume:
        if not tune.Tuner.can_restore(exp_path):
            raise SweepStateError(f"--resume: nothing to resume at {exp_path}")
        return tune.Tuner.restore(exp_path, trainable=runnable, resume_unfinished=True,
                                  restart_errored=True)

    all_configs = _concrete_configs(sweep)
    hp_fields = varying_fields(all_configs)
    if sweep.param_space is not None:
        hp_fields = sorted(set(hp_fields) | {k for k, v in sweep.param_space.items()
                                              if not isinstance(v, (str, int, float, bool))})
    if sweep.variants is not None:
        param_space = dict(sweep.base)
        search_alg = VariantSearcher(sweep.variants)
        num_samples = len(sweep.variants)
    else:
        param_space = {**sweep.base, **sweep.param_space}
        search_alg = None
        num_samples = sweep.num_samples
    if sweep.scheduler == "asha":
        max_t = int(Config.from_dict(all_configs[0]).epochs)
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                                  grace_period=max(1, min(2, max_t)), reduction_factor=2)
    elif sweep.scheduler == "pbt":
        from .pbt import make_scheduler

        scheduler = make_scheduler(sweep.pbt)
    else:
        scheduler = FIFOScheduler()
    tune_config = tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, num_samples=num_samples,
                                  search_alg=search_alg, scheduler=scheduler, reuse_actors=True,
                                  trial_dirname_creator=trial_dirname)
    run_config = RunConfig(
        name=sweep.name,
        storage_path=storage,
        failure_config=FailureConfig(max_failures=0, fail_fast=False),
        # PBT keeps every checkpoint: a donor's must outlive the wait of the trial that takes it over.
        # Otherwise the last two: the experiment state may lag a kill by a snapshot, and must find the
        # checkpoint it names (the best epoch's state is mirrored apart, into <trial>/best)
        checkpoint_config=CheckpointConfig(num_to_keep=None if sweep.scheduler == "pbt" else 2),
        callbacks=[HParamsTBXLogger(hp_fields, metric=sweep.metric, mode=sweep.mode)],
        progress_reporter=SweepReporter(sweep.metric, sweep.mode),
        verbose=verbose,
    )
    return tune.Tuner(runnable, param_space=param_space, tune_config=tune_config,
                      run_config=run_config)


@dataclass
class SweepResult:
    experiment: str  # storage URI/path of the experiment
    local_dir: Path | None  # where summary files were written (None: nothing written)
    records: list[TrialRecord]
    rows: list[dict[str, Any]]
    markdown: str
    wall_s: float
    verdicts: dict = field(default_factory=dict)  # (task, view) -> significance.Verdict
    baseline: dict[str, float] | None = None  # the zero-shot encoder's validation/test metrics


def _short_error(err: Any) -> str:
    text = str(err).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "Exception" in ln:
            return ln[:500]
    return (lines[-1] if lines else repr(err))[:500]


def dedupe_epochs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch, the last reported, in epoch order.

    A trial resumed after a driver kill retrains the epoch whose checkpoint the experiment state
    had not recorded yet, and Tune appends that epoch's result again; statistics and plots must
    count it once. Rows without an epoch (none are expected) keep their place at the end.
    """
    by_epoch: dict[int, dict[str, Any]] = {}
    rest = []
    for row in rows:
        ep = row.get("epoch")
        if ep is None:
            rest.append(row)
        else:
            by_epoch[int(ep)] = row
    return [by_epoch[e] for e in sorted(by_epoch)] + rest


def _uri(fs, path: str) -> str:
    """A storage location as a user passes it: a local path, or ``scheme://path``."""
    kind = getattr(fs, "type_name", "local") if fs is not None else "local"
    return str(path) if kind == "local" else f"{kind}://{path}"


def best_checkpoint(result, epoch: int | None) -> str | None:
    """Where the state of ``epoch`` (a trial's best) is kept in storage: the trial's mirrored
    ``best/`` folder when it holds that epoch, else one of Tune's checkpoints of that epoch."""
    import json as _json

    if epoch is None:
        return None
    fs, path = getattr(result, "filesystem", None), getattr(result, "path", None)
    if fs is not None and path:
        best = f"{str(path).rstrip('/')}/{BEST_DIR}"
        try:
            with fs.open_input_stream(f"{best}/manifest.json") as f:
                if int(_json.loads(f.read().decode("utf-8")).get("epoch", -1)) == int(epoch):
                    return _uri(fs, best)
        except (OSError, ValueError):
            pass
    for ckpt, metrics in getattr(result, "best_checkpoints", None) or []:
        if int((metrics or {}).get("epoch", -1)) == int(epoch):
            return _uri(ckpt.filesystem, ckpt.path)
    return None


def collect_records(result_grid, metric: str = DEFAULT_METRIC, mode: str = DEFAULT_MODE,
                    base: Mapping[str, Any] | None = None) -> list[TrialRecord]:
    """ResultGrid -> TrialRecord list (full Config dicts, per-epoch rows, status, error, where the
    best epoch's checkpoint is kept). ``base`` (the sweep's shared fields) fills the config of a
    trial that never started, whose config Tune holds without them."""
    from .summary import best_row

    # a trial that never started has no result config; Tune's own trial list still holds it
    analysis = getattr(result_grid, "_experiment_analysis", None)
    planned = {str(t.trial_id): dict(t.config or {}) for t in getattr(analysis, "trials", None) or []}
    records = []
    for res in result_grid:
        own = dict(res.config or {})
        if not own:
            tid = Path(str(res.path)).name.split("_")[1] if "_" in Path(str(res.path)).name else ""
            own = planned.get(tid, {})
        cfg = {**dict(base or {}), **own}
        try:
            full = Config.from_dict(cfg).to_dict()
        except ConfigError:
            full = cfg
        history: list[dict[str, Any]] = []
        df = res.metrics_dataframe
        if df is not None and len(df):
            rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                     for k, v in row.items()} for row in df.to_dict("records")]
            history = dedupe_epochs(rows)
        trial_id = (res.metrics or {}).get("trial_id") or Path(res.path).name
        if res.error is not None:
            status = "ERROR"
        elif history and int(history[-1].get("epoch") or 0) >= int(full.get("epochs", 0)):
            status = "TERMINATED"
        elif history and (res.metrics or {}).get("done"):
            status = "TERMINATED"  # stopped early by a scheduler (ASHA)
        else:
            status = "UNFINISHED"
        best = best_row(history, metric, mode)
        records.append(TrialRecord(trial_id=str(trial_id), config=full, history=history,
                                   status=status, error=_short_error(res.error) if res.error else None,
                                   path=res.path, ranks=read_trial_ranks(res) if history else None,
                                   best_checkpoint=best_checkpoint(res, best["epoch"] if best else None)))
    records.sort(key=lambda r: r.trial_id)
    return records


def run_sweep(sweep: Sweep, *, storage: str | Path | None = None, address: str | None = None,
              resume: bool = False, num_cpus: int | None = None, warm_cache: bool = True,
              summary_dir: Path | None = None, verbose: int = 1) -> SweepResult:
    """Run (or resume) ``sweep`` and write the summary; returns the records and the table.

    A fresh run refuses to reuse an existing experiment folder (pass ``resume=True``); a resume
    with nothing to resume is a :class:`SweepStateError`. A local experiment folder is locked
    (``<storage>/.<name>.lock``) for the whole sweep: a second driver gets
    :class:`~counterarg.io.FolderLockedError` at once. More CPUs per trial than the machine or
    cluster has is a ConfigError before any trial starts. Errored trials do not raise; they are
    listed in the summary.
    """
    from contextlib import nullcontext

    from .io import exclusive_lock

    storage = storage_uri(storage)
    local = local_experiment_dir(storage, sweep.name)
    lock = (exclusive_lock(local.parent / f".{sweep.name}.lock", f"sweep folder {local}")
            if local is not None else nullcontext())
    with lock:
        return _run_sweep_locked(sweep, storage, local, address=address, resume=resume, num_cpus=num_cpus,
                                 warm_cache=warm_cache, summary_dir=summary_dir, verbose=verbose)


def check_trial_cpus(sweep: Sweep, available: float, where: str) -> None:
    """A trial asking for more CPUs than exist would wait forever: refuse it up front."""
    if sweep.cpus_per_trial > available:
        raise ConfigError(f"--cpus-per-trial {sweep.cpus_per_trial:g} is more than the {available:g} CPU(s) "
                          f"{where} has; no trial could ever start")


def _run_sweep_locked(sweep: Sweep, storage: str, local: Path | None, *, address, resume, num_cpus,
                      warm_cache, summary_dir, verbose) -> SweepResult:
    from ray import tune

    exp_path = storage.rstrip("/") + "/" + sweep.name
    if not resume and local is not None and (local / "tuner.pkl").exists():
        raise FileExistsError(f"{local} already holds an experiment; pass --resume to continue it "
                              "or choose another --name")
    if resume and local is not None and local.is_dir():
        for line in repair_experiment_state(local, sweep.name):
            print(f"[sweep] repaired {line}", flush=True)
    if resume and not tune.Tuner.can_restore(exp_path):
        raise SweepStateError(f"--resume: nothing to resume at {exp_path} (no experiment state there); "
                              "drop --resume to start this sweep, or check --storage and --name")
    if address in (None, "", "local"):
        check_trial_cpus(sweep, num_cpus or os.cpu_count() or 1, "this machine" if not num_cpus else "--num-cpus")
    init_ray(address, num_cpus=num_cpus)
    import ray

    where = "this machine" if address in (None, "", "local") else f"the cluster at {address}"
    if address not in (None, "", "local"):
        check_trial_cpus(sweep, float(ray.cluster_resources().get("CPU", 0)), where)
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if sweep.gpus_per_trial > gpus:
        raise ConfigError(f"--gpus-per-trial {sweep.gpus_per_trial:g} is more than the {gpus:g} GPU(s) {where} "
                          "has; no trial could ever start")
    t0 = time.perf_counter()
    if warm_cache and not resume:
        secs = warm_feature_cache(_concrete_configs(sweep))
        print(f"[sweep] feature cache ready in {secs:.1f} s", flush=True)
    tuner = build_tuner(sweep, storage, resume=resume, verbose=verbose)
    grid_ = tuner.fit()
    wall = time.perf_counter() - t0
    records = collect_records(grid_, sweep.metric, sweep.mode, base=sweep.base)
    out = summary_dir if summary_dir is not None else local
    if out is None:  # remote storage: write the summary next to where we run
        out = Path.cwd() / sweep.name
    baseline = sweep_baseline(sweep)
    written = write_summary(records, out, title=f"{sweep.name}", metric=sweep.metric,
                            mode=sweep.mode, sweep_wall_s=wall, baseline=baseline)
    return SweepResult(experiment=exp_path, local_dir=out, records=records, rows=written["rows"],
                       markdown=written["markdown"], wall_s=wall, verdicts=written["verdicts"],
                       baseline=baseline)


def summarize_experiment(path: str | Path, metric: str = DEFAULT_METRIC, mode: str = DEFAULT_MODE,
                         out_dir: Path | None = None) -> dict[str, Any]:
    """Re-write the summary of an existing experiment folder (no training)."""
    from ray import tune

    grid_ = tune.Tuner.restore(str(path), trainable=trainable).get_results()
    records = collect_records(grid_, metric, mode)
    out = Path(out_dir) if out_dir else Path(str(path).replace("file://", ""))
    kept = Path(str(path).replace("file://", "")) / "zero_shot.json"
    baseline = json.loads(kept.read_text()) if kept.exists() else None
    return write_summary(records, out, title=Path(str(path)).name, metric=metric, mode=mode, baseline=baseline)


def tensorboard_command(storage: str, name: str) -> str:
    """The command that shows this sweep (Tune's own hint points at a temp staging folder)."""
    return f"tensorboard --logdir {storage.rstrip('/')}/{name}"


# ======================================================================== shared CLI
#: Upper bound of --num-samples: a typo such as 10000 must not fill the disk (each trial keeps two
#: checkpoints and its logs).
MAX_NUM_SAMPLES = 1000


def _int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in [low, high]; a bad value is a usage error (exit 2, no traceback)."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


def _number_at_least(low: float) -> Callable[[str], float]:
    import argparse

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and value >= low):
            raise argparse.ArgumentTypeError(f"must be a finite number >= {low:g}, got {text}")
        return value

    return parse


def parse_range(text: str) -> tuple[float, float]:
    """``LO,HI`` with 0 < LO < HI (the log-uniform ranges of --margin-range / --lr-range)."""
    import argparse

    parts = [x.strip() for x in text.split(",")]
    try:
        lo, hi = (float(x) for x in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two numbers), got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        raise argparse.ArgumentTypeError(f"expected 0 < LO < HI (a log-uniform range), got {text!r}")
    return lo, hi


def seeds_arg(text: str) -> list[int]:
    """argparse type of --seeds: comma-separated integers, each named when it is not one."""
    import argparse

    try:
        return parse_seeds(text, ())
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_common_args(p) -> None:
    """Flags shared by the sweep scripts; each is checked when parsed (usage error, exit 2)."""
    p.add_argument("--corpus", help="ArguAna zip or folder (default: the built-in demo corpus)")
    p.add_argument("--encoder", help="encoder folder or name (default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--epochs", type=_int_at_least(1), help="epochs per trial, >= 1 (default: Config default, 20)")
    p.add_argument("--seeds", type=seeds_arg, default=None, help="comma-separated integer seeds, e.g. 0,1,2")
    p.add_argument("--storage", default=None,
                   help="experiment root: path or URI (file://, s3://, gs://); default results/")
    p.add_argument("--name", default=None, help="experiment name (folder under --storage)")
    p.add_argument("--address", default=None,
                   help="join a Ray cluster ('auto' or host:port); default: a fresh local Ray bound to 127.0.0.1")
    p.add_argument("--resume", action="store_true",
                   help="continue <storage>/<name>: finished trials kept, unfinished continue "
                        "from their last epoch, errored ones restart (an error if there is nothing to resume)")
    p.add_argument("--smoke-test", action="store_true",
                   help="demo corpus, tiny random BERT, 2 epochs, 1 seed: a fast end-to-end check")
    p.add_argument("--cpus-per-trial", type=_number_at_least(1), default=1,
                   help="CPUs per trial, >= 1 and at most what the machine/cluster has (default 1)")
    p.add_argument("--gpus-per-trial", type=_number_at_least(0), default=0)
    p.add_argument("--num-cpus", type=_int_at_least(1), default=None, help="CPUs for a local Ray (default: all)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any Config field for every trial (repeatable)")


def sweep_name(args, script: str) -> str:
    """The experiment name: ``--name``, else ``<script>[_smoke]_<date>_<time>``, a fresh folder per run,
    so that a user's sweep never rewrites the committed reference results (regenerated on purpose
    with ``--name <script>``). ``--resume`` without ``--name`` takes the newest such folder."""
    if args.name:
        return args.name
    base = f"{script}_smoke" if args.smoke_test else script
    if not args.resume:
        return f"{base}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    local = local_experiment_dir(storage_uri(args.storage), base)
    if local is None:
        raise SweepStateError("--resume on remote storage needs --name (the folder to resume)")
    runs = sorted((p for p in local.parent.glob(f"{base}_20*") if p.is_dir()), key=lambda p: p.name)
    if not runs:
        raise SweepStateError(f"--resume: no earlier {base}_<date> sweep under {local.parent}; pass --name")
    print(f"[sweep] resuming the newest {base} sweep: {runs[-1]}", flush=True)
    return runs[-1].name


@contextmanager
def usage_errors(parser):
    """Turn the named errors of setting up or resuming a sweep into ``parser.error`` (exit 2)."""
    from .io import FolderLockedError

    try:
        yield
    except (ConfigError, SweepStateError, FileExistsError, FolderLockedError) as e:
        parser.error(str(e))


def smoke_encoder_dir() -> Path:
    """This user's tiny smoke-test BERT: ``<tmp>/counterarg-smoke-encoder-<uid>`` (not shared)."""
    return Path(tempfile.gettempdir()) / f"counterarg-smoke-encoder-{os.getuid()}"


def _own_folder(folder: Path) -> None:
    """Refuse a folder another user owns or may write (its weights would be loaded as ours)."""
    st = os.lstat(folder)
    import stat

    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise ConfigError(f"{folder} is not a folder owned by you and writable only by you; "
                          "remove it (the smoke test makes it again)")


def base_from_args(args, smoke_dir: Path | None = None) -> dict[str, Any]:
    """Shared Config overrides from the flags (validated)."""
    base: dict[str, Any] = {}
    if args.smoke_test:
        from .testing import make_tiny_encoder

        folder = smoke_dir or smoke_encoder_dir()
        if folder.exists() or folder.is_symlink():
            _own_folder(folder)
        else:
            folder.mkdir(mode=0o700)
        base.update(encoder=make_tiny_encoder(folder), epochs=2, corpus=None, max_length=64,
                    device="cpu")
    for k in ("corpus", "encoder", "epochs"):
        v = getattr(args, k)
        if v is not None:
            base[k] = v
    base.update(parse_assignments(args.overrides))
    cfg = Config.from_dict(base)
    values = cfg.to_dict()
    out = {k: values[k] for k in base}
    return absolute_paths(out)


def absolute_paths(fields: dict[str, Any]) -> dict[str, Any]:
    """Make local paths absolute: trials run in their own working folders (and on other nodes)."""
    out = dict(fields)
    for k in ("corpus", "cache_dir", "encoder"):
        v = out.get(k)
        if isinstance(v, str) and v and "://" not in v:
            p = Path(v).expanduser()
            if p.exists() or k != "encoder":  # a hub name such as bert-base-uncased stays as it is
                out[k] = str(p.resolve())
    return out


def parse_seeds(text: str | list[int] | None, default: Sequence[int]) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; a part that is not an integer is a ConfigError naming it."""
    if not text:
        return list(default)
    if isinstance(text, list):
        return text
    seeds = []
    for part in (s.strip() for s in text.split(",")):
        if not part:
            continue
        try:
            seeds.append(int(part))
        except ValueError:
            raise ConfigError(f"--seeds expects comma-separated integers, got {part!r} in {text!r}") from None
    if not seeds:
        raise ConfigError(f"--seeds holds no seed: {text!r}")
    return seeds


def best_commands(rows: list[dict[str, Any]], sweep: Sweep, corpus: str | None) -> str:
    """The best trial per strategy and ready commands to evaluate, rank with and export it."""
    import re
    import shlex

    from .summary import best_per_group

    best = best_per_group(rows, sweep.metric)
    if not best:
        return "No trial finished an epoch: no checkpoint to use."
    lines = [f"Best checkpoint per strategy (by {sweep.metric}):"]
    corpus_arg = f" --corpus {shlex.quote(str(corpus))}" if corpus else ""
    for g in sorted(best):
        r = best[g]
        ck = r.get("best_checkpoint")
        lines.append(f"  {g}  (seed {r['seed']}, epoch {r['best_epoch']}, {r[sweep.metric]:.4f})")
        if not ck:
            lines.append("    checkpoint not kept")
            continue
        q = shlex.quote(ck)
        slug = re.sub(r"[^A-Za-z0-9.=]+", "-", g).strip("-")[:40]
        lines += [f"    counterarg evaluate --checkpoint {q}{corpus_arg} --split test",
                  f"    counterarg rank --checkpoint {q} --text \"Your argument ...\" --k 5",
                  f"    counterarg export --checkpoint {q} --out models/{slug}"]
    return "\n".join(lines)


def run_from_args(args, sweep: Sweep) -> SweepResult:
    """Run the sweep from parsed flags and print the table, overhead and TensorBoard command.

    Setup errors (a locked or missing experiment, a cut state file, more CPUs than there are)
    raise their named error for :func:`usage_errors`; use :func:`exit_code` for the result.
    """
    storage = storage_uri(args.storage)
    resume_cmd = " ".join(["python", *sys.argv] + ([] if "--resume" in sys.argv else ["--resume"]))
    try:
        result = run_sweep(sweep, storage=storage, address=args.address, resume=args.resume,
                           num_cpus=args.num_cpus)
    except KeyboardInterrupt:  # a second Ctrl-C, past Tune's own graceful stop
        print(f"\n[sweep] interrupted; finished epochs are kept. Resume with:\n  {resume_cmd}", file=sys.stderr)
        raise SystemExit(130) from None
    from .summary import console_table, overhead

    print()
    print(console_table(result.rows, metric=sweep.metric, verdict=result.verdicts, baseline=result.baseline))
    n_err = sum(r.status == "ERROR" for r in result.records)
    ov = overhead(result.rows)["overhead"]
    print(f"{len(result.records)} trials ({n_err} errored) in {result.wall_s / 60:.1f} min"
          + (f"; {100 * ov:.1f}% of trial time spent in Ray, outside training" if ov is not None else ""))
    print(f"Summary: {result.local_dir}/summary.md, summary.csv, significance.csv, *.png")
    print(f"TensorBoard: {tensorboard_command(storage, sweep.name)}")
    print(best_commands(result.rows, sweep, getattr(args, "corpus", None)))
    errored = [r for r in result.records if r.status == "ERROR"]
    if errored:
        print(f"{len(errored)} trial(s) errored; `--resume` retries them:", file=sys.stderr)
        for r in errored:
            print(f"  {r.trial_id}: {r.error}", file=sys.stderr)
    unfinished = [r for r in result.records if r.status not in ("TERMINATED", "ERROR")]
    if unfinished:  # Ctrl-C: Tune stopped the trials and saved its state
        print(f"[sweep] interrupted: {len(unfinished)} of {len(result.records)} trials unfinished (the summary "
              f"above covers what ran). Resume with:\n  {resume_cmd}", file=sys.stderr)
    return result


def exit_code(result: SweepResult) -> int:
    """0 when every trial finished; 1 when any errored (named by :func:`run_from_args`); 130 when the
    sweep was interrupted (Ctrl-C) with trials unfinished."""
    if any(r.status == "ERROR" for r in result.records):
        return 1
    return 130 if any(r.status != "TERMINATED" for r in result.records) else 0
