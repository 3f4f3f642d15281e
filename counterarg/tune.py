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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import schedules
from .config import Config, ConfigError, FIELD_NAMES, parse_assignments
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

#: The reference implementation's three strategies: fixed 0.8, decay 0.8 - 0.02 * epoch, pure random
#: (from the schedule registry, :mod:`counterarg.schedules`).
DEFAULT_STRATEGIES = schedules.default_strategies()


# ======================================================================== search spaces
def strategy(name: str | Mapping[str, Any], **fields_: Any) -> dict[str, Any]:
    """A strategy as flat Config fields: a schedule name from the registry or a dict, plus overrides.

    ``strategy("fixed", rate=0.5)`` -> ``{"schedule": "fixed", "rate": 0.5}`` (the name's default
    strategy, :func:`counterarg.schedules.strategy_fields`, with overrides). Validated now, so a
    typo fails before the sweep starts.
    """
    if isinstance(name, str):
        if name not in schedules.SCHEDULES:
            raise ConfigError(f"unknown strategy {name!r}; known: {', '.join(schedules.SCHEDULES)}")
        out = {**schedules.strategy_fields(name), **fields_}
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
    ctx = tune.get_context()
    try:
        bundles = ctx.get_trial_resources().bundles
        cpus = max(1, round(sum(b.get("CPU", 0) for b in bundles)))  # its shards idle while it trains
    except Exception:  # noqa: BLE001 - resources unknown outside a full Tune session
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
    start = time.perf_counter()

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
        tune.report(row, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))
        state["in_report"] += time.perf_counter() - t0
        state["reports"] += 1

    _train_fn()(cfg, out_dir, report=report, resume_from=resume_from, progress=False)
    if state["reports"] == 0 and resume_from is not None:
        # the weights taken already hold every epoch (a PBT donor's final checkpoint): report its
        # last row so that the trial ends with a result and a checkpoint of its own
        from .train import read_checkpoint

        history = read_checkpoint(resume_from)["history"]
        if history:
            report(dict(history[-1]), resume_from, trained=False)


# ======================================================================== TensorBoard
def _tbx_base():
    from ray.tune.logger import TBXLoggerCallback

    return TBXLoggerCallback


class HParamsTBXLogger(_tbx_base()):
    """Tune's TensorBoardX logger, with HParams = the sweep's varying Config fields + strategy.

    Per-epoch scalars are Tune's (``ray/tune/<metric>``, every task metric). HParams are written when
    a trial ends (Tune's rule) with the final metrics; HParams values must be scalars or strings.
    """

    def __init__(self, hparam_fields: Sequence[str] = ()):
        super().__init__()
        self.hparam_fields = list(hparam_fields)

    def _try_log_hparams(self, trial, result):
        cfg = Config.from_dict(dict(trial.config)).to_dict()
        params: dict[str, Any] = {"strategy": strategy_label(cfg)}
        for k in self.hparam_fields or sorted(trial.evaluated_params or {}):
            v = cfg.get(k)
            params[k] = v if isinstance(v, (str, bool, int, float)) else str(v)
        metrics = {k: v for k, v in result.items()
                   if k.startswith(("validation/", "test/", "train/")) and isinstance(v, (int, float))}
        from tensorboardX.summary import hparams

        exp, start, end = hparams(hparam_dict=params, metric_dict=metrics)
        writer = self._trial_writer[trial].file_writer
        for s in (exp, start, end):
            writer.add_summary(s)

    def log_trial_end(self, trial, failed: bool = False):
        # Tune only logs HParams when trial.evaluated_params is non-empty; ours always applies.
        if trial in self._trial_writer and self._trial_result.get(trial):
            if not trial.evaluated_params:
                try:
                    self._try_log_hparams(trial, self._trial_result[trial])
                except Exception:  # noqa: BLE001 - TensorBoard must never fail a sweep
                    pass
        super().log_trial_end(trial, failed)


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
    metric: str = DEFAULT_METRIC
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
        for v in self.variants or [{}]:
            Config.from_dict({**self.base, **v})
        if self.scheduler not in ("fifo", "asha", "pbt"):
            raise ValueError(f"scheduler must be fifo, asha or pbt, got {self.scheduler!r}")
        if (self.scheduler == "pbt") != (self.pbt is not None):
            raise ValueError("scheduler 'pbt' needs pbt options (counterarg.pbt.PBTOptions), and only it")


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
    import pickletools

    try:
        data = path.read_bytes()
        if not data.startswith(b"\x80"):  # every pickle protocol >= 2 opens with PROTO
            json.loads(data.decode("utf-8"))
        else:
            for _ in pickletools.genops(data):
                pass
        return bool(data)
    except (OSError, ValueError, UnicodeDecodeError):
        return False


def _ray_temp_roots() -> list[Path]:
    roots = [os.environ.get("RAY_TMPDIR"), tempfile.gettempdir(), "/tmp"]
    return list(dict.fromkeys(Path(r) / "ray" for r in roots if r))


def repair_experiment_state(exp_dir: Path, name: str) -> list[str]:
    """Replace state files a killed driver left cut short with the driver's intact local copies.

    Tune writes its snapshot to a staging folder on the driver and then copies it into storage;
    a driver killed during that copy leaves a truncated file that ``Tuner.restore`` cannot read.
    The staging copy (``<ray temp>/session_*/artifacts/*/<name>/driver_artifacts``) is whole in
    that case. The cut file is kept beside, renamed ``*.torn``. Returns what was repaired; raises
    :class:`SweepStateError` naming the file when no intact copy exists.
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
        copies = [c for root in _ray_temp_roots()
                  for c in root.glob(f"session_*/artifacts/*/{name}/driver_artifacts/{f.name}")
                  if _intact(c)]
        if not copies:
            older = [s.name for s in states[:-1]]
            hint = (f"move it away to resume from the previous session's {older[-1]}" if older
                    else "start the sweep again under a new --name")
            raise SweepStateError(f"{f} is cut short (the driver died while writing it) and no "
                                  f"intact copy was found under {', '.join(map(str, _ray_temp_roots()))}; "
                                  f"{hint}")
        good = max(copies, key=lambda c: c.stat().st_mtime)
        torn = f.with_name(f.name + ".torn")
        os.replace(f, torn)
        shutil.copy2(good, f)
        repaired.append(f"{f.name} (cut short; kept as {torn.name}) <- {good}")
    return repaired


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start or join Ray for a sweep driver.

    * ``address=None``: a fresh local cluster (``address="local"``), never a lingering one left by a
      killed driver, so a resume does not attach to half-dead processes.
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
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 runtime_env=runtime_env, log_to_driver=True)
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
            prepare_features(cfg, progress=False)
        except Exception as e:  # noqa: BLE001 - the trial reports it as its error
            print(f"[sweep] feature cache not prepared for encoder={cfg.encoder!r} "
                  f"corpus={cfg.corpus!r}: {str(e).splitlines()[0] if str(e) else e!r}", flush=True)
    return time.perf_counter() - t


def _concrete_configs(sweep: Sweep) -> list[dict[str, Any]]:
    if sweep.variants is not None:
        return [{**sweep.base, **v} for v in sweep.variants]
    fixed = {k: v for k, v in (sweep.param_space or {}).items()
             if isinstance(v, (str, int, float, bool, type(None)))}
    return [{**sweep.base, **fixed}]


def trial_dirname(trial) -> str:
    """Short trial folder names (Tune's default packs the whole config into the name)."""
    return f"trial_{trial.trial_id}"


def build_tuner(sweep: Sweep, storage: str, *, resume: bool = False, verbose: int = 1):
    """A ``tune.Tuner`` for ``sweep`` (fresh) or restored from ``<storage>/<name>`` (resume)."""
    from ray import tune
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "1000")
    exp_path = storage.rstrip("/") + "/" + sweep.name
    runnable = tune.with_resources(trainable, trial_resources(sweep.cpus_per_trial, sweep.gpus_per_trial))
    if resume and tune.Tuner.can_restore(exp_path):
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
        # PBT: a donor's checkpoint must outlive the wait of the trial that takes it over
        checkpoint_config=CheckpointConfig(num_to_keep=None if sweep.scheduler == "pbt" else 2),
        callbacks=[HParamsTBXLogger(hp_fields)],
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


def collect_records(result_grid) -> list[TrialRecord]:
    """ResultGrid -> TrialRecord list (full Config dicts, per-epoch rows, status, error)."""
    records = []
    for res in result_grid:
        cfg = dict(res.config or {})
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
        records.append(TrialRecord(trial_id=str(trial_id), config=full, history=history,
                                   status=status, error=_short_error(res.error) if res.error else None,
                                   path=res.path, ranks=read_trial_ranks(res) if history else None))
    records.sort(key=lambda r: r.trial_id)
    return records


def run_sweep(sweep: Sweep, *, storage: str | Path | None = None, address: str | None = None,
              resume: bool = False, num_cpus: int | None = None, warm_cache: bool = True,
              summary_dir: Path | None = None, verbose: int = 1) -> SweepResult:
    """Run (or resume) ``sweep`` and write the summary; returns the records and the table.

    A fresh run refuses to reuse an existing experiment folder (pass ``resume=True``). Errored
    trials do not raise; they are listed in the summary.
    """
    from ray import tune

    storage = storage_uri(storage)
    exp_path = storage.rstrip("/") + "/" + sweep.name
    local = local_experiment_dir(storage, sweep.name)
    if not resume and local is not None and (local / "tuner.pkl").exists():
        raise FileExistsError(f"{local} already holds an experiment; pass --resume to continue it "
                              "or choose another --name")
    if resume and local is not None and local.is_dir():
        for line in repair_experiment_state(local, sweep.name):
            print(f"[sweep] repaired {line}", flush=True)
    init_ray(address, num_cpus=num_cpus)
    t0 = time.perf_counter()
    if warm_cache and not (resume and tune.Tuner.can_restore(exp_path)):
        secs = warm_feature_cache(_concrete_configs(sweep))
        print(f"[sweep] feature cache ready in {secs:.1f} s", flush=True)
    tuner = build_tuner(sweep, storage, resume=resume, verbose=verbose)
    grid_ = tuner.fit()
    wall = time.perf_counter() - t0
    records = collect_records(grid_)
    out = summary_dir if summary_dir is not None else local
    if out is None:  # remote storage: write the summary next to where we run
        out = Path.cwd() / sweep.name
    written = write_summary(records, out, title=f"{sweep.name}", metric=sweep.metric,
                            mode=sweep.mode, sweep_wall_s=wall)
    return SweepResult(experiment=exp_path, local_dir=out, records=records, rows=written["rows"],
                       markdown=written["markdown"], wall_s=wall)


def summarize_experiment(path: str | Path, metric: str = DEFAULT_METRIC, mode: str = DEFAULT_MODE,
                         out_dir: Path | None = None) -> dict[str, Any]:
    """Re-write the summary of an existing experiment folder (no training)."""
    from ray import tune

    grid_ = tune.Tuner.restore(str(path), trainable=trainable).get_results()
    records = collect_records(grid_)
    out = Path(out_dir) if out_dir else Path(str(path).replace("file://", ""))
    return write_summary(records, out, title=Path(str(path)).name, metric=metric, mode=mode)


def tensorboard_command(storage: str, name: str) -> str:
    """The command that shows this sweep (Tune's own hint points at a temp staging folder)."""
    return f"tensorboard --logdir {storage.rstrip('/')}/{name}"


# ======================================================================== shared CLI
def add_common_args(p) -> None:
    """Flags shared by the sweep scripts."""
    p.add_argument("--corpus", help="ArguAna zip or folder (default: the built-in demo corpus)")
    p.add_argument("--encoder", help="encoder folder or name (default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default: Config default, 20)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--storage", default=None,
                   help="experiment root: path or URI (file://, s3://, gs://); default results/")
    p.add_argument("--name", default=None, help="experiment name (folder under --storage)")
    p.add_argument("--address", default=None,
                   help="join a Ray cluster ('auto' or host:port); default: a fresh local Ray")
    p.add_argument("--resume", action="store_true",
                   help="continue <storage>/<name>: finished trials kept, unfinished continue "
                        "from their last epoch, errored ones restart")
    p.add_argument("--smoke-test", action="store_true",
                   help="demo corpus, tiny random BERT, 2 epochs, 1 seed: a fast end-to-end check")
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--gpus-per-trial", type=float, default=0)
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (default: all)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any Config field for every trial (repeatable)")


def base_from_args(args, smoke_dir: Path | None = None) -> dict[str, Any]:
    """Shared Config overrides from the flags (validated)."""
    base: dict[str, Any] = {}
    if args.smoke_test:
        from .testing import make_tiny_encoder

        folder = smoke_dir or Path(tempfile.gettempdir()) / "counterarg-smoke-encoder"
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


def parse_seeds(text: str | None, default: Sequence[int]) -> list[int]:
    if not text:
        return list(default)
    return [int(s) for s in text.split(",") if s.strip()]


def run_from_args(args, sweep: Sweep) -> SweepResult:
    """Run the sweep from parsed flags and print the table, overhead and TensorBoard command."""
    storage = storage_uri(args.storage)
    try:
        result = run_sweep(sweep, storage=storage, address=args.address, resume=args.resume,
                           num_cpus=args.num_cpus)
    except (FileExistsError, SweepStateError) as e:
        raise SystemExit(f"error: {e}") from None
    print()
    print(result.markdown)
    print(f"Summary: {result.local_dir}/summary.md, summary.csv, *.png")
    print(f"TensorBoard: {tensorboard_command(storage, sweep.name)}")
    errored = [r for r in result.records if r.status == "ERROR"]
    if errored:
        print(f"{len(errored)} trial(s) errored; `--resume` retries them.", file=sys.stderr)
    return result
