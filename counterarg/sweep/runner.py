"""Running a sweep: what to run (:class:`Sweep`), starting Ray, run / resume under the sweep folder's
lock. The Tuner it runs is built by :mod:`counterarg.sweep.tuner`; what the sweep leaves is written by
:mod:`counterarg.sweep.results`.

* **Crash safety**: ``TUNE_GLOBAL_CHECKPOINT_S`` (1 s on local disk instead of Ray's >= 10 s, 10 s on
  object storage: :func:`counterarg.sweep.tuner.snapshot_period`) so the experiment state is at most
  that far behind; a SIGKILLed driver then resumes each trial from its last epoch checkpoint (a torn
  state file is repaired first, :func:`counterarg.sweep.recovery.repair_experiment_state`).
* **Lost nodes**: ``FailureConfig(max_failures=Sweep.max_failures)``: a trial whose node or worker
  process is lost continues from its last epoch checkpoint wherever there is room, by itself; an
  error of the training (NaN loss, bad encoder path) ends its trial at once, recorded with its
  message, and the sweep goes on (:mod:`counterarg.sweep.failures`). No raise at the end;
  ``--resume`` continues an errored trial from its last checkpoint (its epochs are kept).
* **Object storage** (``s3://``, ``gs://``): every file the driver writes goes into ``<storage>/<name>/``
  through a working copy of the experiment's top-level files (:class:`counterarg.sweep.storage.DriverFolder`);
  a local corpus or encoder is staged into the experiment, so no node needs a path the driver chose.
* **One sweep per folder**: a local experiment folder is locked for the whole sweep; a fresh run
  refuses a folder that holds an experiment.
* **Ray**: a local sweep starts its own Ray on 127.0.0.1 through :func:`counterarg.retrieval.shards.ensure_ray`,
  the one way this project starts a local Ray; ``--address`` joins a cluster instead.
* **Schedulers**: FIFO, ASHA (the searches: its grace period and reduction factor on :class:`Sweep`)
  or PBT (:mod:`counterarg.sweep.pbt`).
* **Searchers**: a grid's variants in order (:class:`~counterarg.sweep.spaces.VariantSearcher`), or
  with ``race`` options the variants raced over seeds (:class:`~counterarg.sweep.race.RaceSearcher`;
  race.csv, race.png and a race section in summary.md).
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray

from ..analysis.methods import label_of
from ..analysis.trials import MAX_NUM_SAMPLES
from ..config import FIELD_NAMES, SEED, Config, ConfigError, fields_with
from ..core.io import exclusive_lock, remove_lock_file
from ..core.paths import shell_path
from ..core.remote import filesystem
from ..evaluation.selection import DEFAULT_MODE
from ..ray_internals import AUTH_TOKEN_LOGGER, TUNER_FILE
from ..retrieval.shards import ensure_ray
from . import DEFAULT_MAX_FAILURES
from .console import DropTokenAuthNotice, quiet_worker_logs
from .prepare import feature_configs, warm_feature_cache
from .race import RaceOptions, strategy_labels
from .results import SweepResult, write_results
from .space_file import save_space
from .storage import DriverFolder, stage_inputs
from .strategy_runs import STRATEGIES_DIR, write_strategy_runs
from .tuner import asha_settings, build_tuner, check_resume, search_fields

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: the driver's object-storage endpoint and region reach the workers (never its keys: a node gets its
#: own credentials from its environment or its instance role, see docs/cluster.md)
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
DEFAULT_STORAGE = REPO_ROOT / "results"
#: every worker quiets Ray's per-checkpoint and per-restore log lines as it starts
QUIET_HOOK = f"{quiet_worker_logs.__module__}.{quiet_worker_logs.__name__}"


@dataclass
class Sweep:
    """What to run: either a list of flat trial configs (grid) or a Tune param space (search).

    ``base`` holds Config overrides shared by every trial (corpus, encoder, epochs, ...). With
    ``race`` (:class:`~counterarg.sweep.race.RaceOptions`) the variants are strategies without a
    seed, raced over the race's seeds instead of run once each.
    """

    name: str
    base: dict[str, Any] = field(default_factory=dict)
    variants: list[dict[str, Any]] | None = None  # grid: one flat dict per trial
    param_space: dict[str, Any] | None = None  # search: Tune domains over Config fields
    num_samples: int = 1
    scheduler: str = "fifo"  # fifo | asha | pbt
    grace_period: int | None = None  # asha: epochs before the first cut (None: 2, or fewer epochs)
    reduction_factor: float | None = None  # asha: 1/this of the trials go on at each rung (None: 2)
    pbt: Any = None  # scheduler "pbt": a counterarg.sweep.pbt.PBTOptions
    metric: str | None = None  # None: the trials' select_metric (Config), the one selection rule
    mode: str = DEFAULT_MODE
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    race: RaceOptions | None = None
    max_failures: int = DEFAULT_MAX_FAILURES  # lost nodes or workers one trial survives (0: none)

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
            raise ConfigError(
                f"sweep metric {self.metric!r} differs from the trials' select_metric "
                f"{next(iter(selects))!r}; set select_metric instead"
            )
        if self.variants is not None and not self.variants:
            raise ConfigError(f"sweep {self.name}: no trial to run (an empty --strategies or --seeds list)")
        seen: set[str] = set()
        for v in self.variants or []:
            full = Config.from_dict({**self.base, **v}).to_dict()
            key = repr(sorted(full.items()))
            if key in seen:
                raise ConfigError(
                    f"sweep {self.name}: two trials would be identical ({label_of(full)} seed "
                    f"{full['seed']}); give each strategy and seed once"
                )
            seen.add(key)
        if self.scheduler not in ("fifo", "asha", "pbt"):
            raise ValueError(f"scheduler must be fifo, asha or pbt, got {self.scheduler!r}")
        if self.scheduler != "asha" and (self.grace_period, self.reduction_factor) != (None, None):
            raise ConfigError("a grace period and reduction factor are ASHA's: they need --scheduler asha")
        if self.scheduler == "asha":
            max_t, grace, factor = asha_settings(self)
            if not 1 <= grace <= max_t:
                raise ConfigError(f"ASHA's grace period must be between 1 and the trials' {max_t} epochs, got {grace}")
            if not (factor > 1 and math.isfinite(factor)):
                raise ConfigError(f"ASHA's reduction factor must be a finite number > 1, got {factor:g}")
        if (self.scheduler == "pbt") != (self.pbt is not None):
            raise ValueError("scheduler 'pbt' needs pbt options (counterarg.sweep.pbt.PBTOptions), and only it")
        if self.race is not None:
            if self.variants is None or self.scheduler != "fifo":
                raise ValueError("a race needs variants (the strategies) and the fifo scheduler")
            if any(set(fields_with(SEED)) & {*v, *self.base} for v in self.variants):
                raise ConfigError("a race chooses the seeds itself: its strategies and base hold no seed")
            self.race.check(len(self.variants))
            strategy_labels(self.variants, self.base)  # two strategies with one label: refused now
            if self.race.max_trials(len(self.variants)) > MAX_NUM_SAMPLES:
                raise ConfigError(
                    f"a race of at most {MAX_NUM_SAMPLES} trials; this one could run "
                    f"{self.race.max_trials(len(self.variants))} (lower --max-seeds or set --budget)"
                )
        if not 1 <= self.num_samples <= MAX_NUM_SAMPLES:
            raise ConfigError(f"num_samples must be between 1 and {MAX_NUM_SAMPLES}, got {self.num_samples}")
        if not (self.cpus_per_trial >= 1 and math.isfinite(self.cpus_per_trial)):
            raise ConfigError(f"cpus_per_trial must be >= 1, got {self.cpus_per_trial}")
        if isinstance(self.max_failures, bool) or not isinstance(self.max_failures, int) or self.max_failures < 0:
            raise ConfigError(f"max_failures must be an integer >= 0, got {self.max_failures!r}")
        if not (self.gpus_per_trial >= 0 and math.isfinite(self.gpus_per_trial)):
            raise ConfigError(f"gpus_per_trial must be >= 0, got {self.gpus_per_trial}")

    @property
    def tune_metric(self) -> str:
        """The metric Tune reports on and the summaries rank by: :attr:`metric` as given, else the
        trials' select_metric, which ``__post_init__`` puts there."""
        assert self.metric is not None, "Sweep.__post_init__ sets the metric"
        return self.metric


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
        return Path(storage[len("file://") :]) / name
    if "://" in storage:
        return None
    return Path(storage) / name


def init_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Start or join Ray for a sweep driver.

    * ``address=None``: a fresh local cluster (:func:`counterarg.retrieval.shards.ensure_ray`, the one way a
      local Ray is started), never a lingering one left by a killed driver, so a resume does not
      attach to half-dead processes. It listens on 127.0.0.1 only: nothing of a local sweep is
      reachable from the network. Its workers' output reaches the driver's console.
    * ``address="auto"`` or ``host:port``: join an existing cluster. Ray 2.60 enables token auth
      by default; ``address="auto"`` picks up ``~/.ray/auth_token`` itself, an explicit address
      does not, so we opt into token mode when a token is available and RAY_AUTH_MODE is unset.

    Every worker quiets Ray's per-checkpoint and per-restore log lines as it starts
    (:func:`~counterarg.sweep.console.quiet_worker_logs`). Returns True when this call started or
    joined Ray (the sweep then shuts it down before its summary), False when Ray was up already.
    """
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if address in (None, "", "local"):
        # Workers must import this checkout's counterarg even when another one is installed.
        runtime_env = {
            "env_vars": {
                "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
            },
            "worker_process_setup_hook": QUIET_HOOK,
        }
        logging.getLogger(AUTH_TOKEN_LOGGER).addFilter(DropTokenAuthNotice())
        ensure_ray(num_cpus, quiet=False, runtime_env=runtime_env)
        return True
    runtime_env = cluster_runtime_env()
    if (
        address != "auto"
        and "RAY_AUTH_MODE" not in os.environ
        and (
            os.environ.get("RAY_AUTH_TOKEN")
            or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").exists()
        )
    ):
        os.environ["RAY_AUTH_MODE"] = "token"
    ray.init(address=address, runtime_env=runtime_env)
    return True


def cluster_runtime_env() -> dict[str, Any]:
    """What a joined cluster's workers get: this driver's ``counterarg`` package through Ray's
    ``py_modules`` (uploaded to the cluster, unpacked on every node: no path the driver chose is
    needed there; the other packages must be installed on each node) and :data:`FORWARDED_ENV`."""
    env_vars = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    return {
        "py_modules": [str(PACKAGE_DIR)],
        "excludes": ["__pycache__", "*.pyc"],
        "worker_process_setup_hook": QUIET_HOOK,
        **({"env_vars": env_vars} if env_vars else {}),
    }


def run_sweep(
    sweep: Sweep,
    *,
    storage: str | Path | None = None,
    address: str | None = None,
    resume: bool = False,
    num_cpus: int | None = None,
    warm_cache: bool = True,
    summary_dir: Path | None = None,
    verbose: int = 1,
) -> SweepResult:
    """Run (or resume) ``sweep`` and write the summary; returns the records and the table.

    A fresh run refuses to reuse an existing experiment folder (pass ``resume=True``); a resume
    with nothing to resume is a :class:`SweepStateError`. A local experiment folder is locked
    (``<storage>/.<name>.lock``, removed as the sweep ends) for the whole sweep: a second driver gets
    :class:`~counterarg.core.io.FolderLockedError` at once (object storage has no lock: one driver per
    name is the user's to keep). More CPUs per trial than the machine or cluster has is a ConfigError
    before any trial starts. Errored trials do not raise; they are listed in the summary. On object
    storage every file the driver writes goes into ``<storage>/<name>/`` (:mod:`counterarg.sweep.storage`).
    """
    storage = storage_uri(storage)
    local = local_experiment_dir(storage, sweep.name)
    lock_path = local.parent / f".{sweep.name}.lock" if local is not None else None
    with exclusive_lock(lock_path, f"sweep folder {local}") if lock_path else nullcontext():
        try:
            return _run_sweep_locked(
                sweep,
                storage,
                local,
                address=address,
                resume=resume,
                num_cpus=num_cpus,
                warm_cache=warm_cache,
                summary_dir=summary_dir,
                verbose=verbose,
            )
        finally:
            if lock_path is not None:
                remove_lock_file(lock_path)  # held until here: no results/.<name>.lock left behind


def check_trial_cpus(sweep: Sweep, available: float, where: str) -> None:
    """A trial asking for more CPUs than exist would wait forever: refuse it up front."""
    if sweep.cpus_per_trial > available:
        raise ConfigError(
            f"--cpus-per-trial {sweep.cpus_per_trial:g} is more than the {available:g} CPU(s) "
            f"{where} has; no trial could ever start"
        )


def pafs_for(storage: str, name: str, work: Path):
    """The filesystem and path of the experiment's trial folders (``work`` itself when local)."""
    if local_experiment_dir(storage, name) is not None:
        return None, None
    return filesystem(storage.rstrip("/") + "/" + name)


def _run_sweep_locked(
    sweep: Sweep, storage: str, local: Path | None, *, address, resume, num_cpus, warm_cache, summary_dir, verbose
) -> SweepResult:
    exp_path = storage.rstrip("/") + "/" + sweep.name
    remote: DriverFolder | None = None
    if local is None:  # object storage: the driver works in a local copy of the experiment's files
        remote = DriverFolder(exp_path)
        remote.pull()
        work = remote.local
    else:
        work = local
    if not resume and (work / TUNER_FILE).exists():
        raise FileExistsError(
            f"{exp_path if remote else local} already holds an experiment; pass --resume to "
            "continue it or choose another --name"
        )
    # a local corpus or encoder goes into the experiment (object storage): no node needs the driver's paths
    staged = replace(
        sweep,
        base=stage_inputs(sweep.base, exp_path),
        variants=None if sweep.variants is None else [stage_inputs(v, exp_path) for v in sweep.variants],
    )
    if resume:
        fs, root = pafs_for(storage, sweep.name, work)
        check_resume(sweep, work, exp_path, variants=staged.variants, fs=fs, root=root)
        if remote is not None:
            for name in remote.push():
                print(f"[sweep] repaired {exp_path}/{name} in storage", flush=True)
    if address in (None, "", "local"):
        check_trial_cpus(sweep, num_cpus or os.cpu_count() or 1, "this machine" if not num_cpus else "--num-cpus")
    started_ray = init_ray(address, num_cpus=num_cpus)
    where = "this machine" if address in (None, "", "local") else f"the cluster at {address}"
    if address not in (None, "", "local"):
        check_trial_cpus(sweep, float(ray.cluster_resources().get("CPU", 0)), where)
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if sweep.gpus_per_trial > gpus:
        raise ConfigError(
            f"--gpus-per-trial {sweep.gpus_per_trial:g} is more than the {gpus:g} GPU(s) {where} "
            "has; no trial could ever start"
        )
    t0 = time.perf_counter()
    if warm_cache and not resume:
        secs = warm_feature_cache(feature_configs(sweep))
        print(f"[sweep] feature cache ready in {secs:.1f} s", flush=True)
    tuner = build_tuner(staged, storage, resume=resume, verbose=verbose)
    if not resume and sweep.param_space is not None and search_fields(sweep):
        save_space(work, sweep.param_space)
        if remote is not None:
            remote.push()
    grid_ = tuner.fit()
    wall = time.perf_counter() - t0
    if started_ray:  # its workers' last log lines come now, not after the summary
        ray.shutdown()
    out = summary_dir if summary_dir is not None else work
    if remote is not None:  # Tune rewrote its state files meanwhile: the sessions and summaries are ours
        remote.pull()
    result = write_results(
        sweep,
        grid_,
        out,
        exp_path=exp_path,
        wall_s=wall,
        resumed=resume,
        base=staged.base,
        remote=remote if summary_dir is None else None,
    )
    try:  # TensorBoard's runs per strategy, beside the trials' (in the experiment folder)
        write_strategy_runs(result.records, work, sweep.tune_metric)
        if remote is not None:
            remote.push_tree(STRATEGIES_DIR)
    except (OSError, ValueError) as e:  # they must not cost the summary already written
        print(f"[sweep] TensorBoard's strategy runs were not written: {e}", flush=True)
    result.publish()
    return result


def tensorboard_command(storage: str, name: str) -> str:
    """The command that shows this sweep (Tune's own hint points at a temp staging folder); a local
    folder as a path that runs from here (:func:`counterarg.core.paths.shell_path`)."""
    local = local_experiment_dir(storage, name)
    return f"tensorboard --logdir {shell_path(local) if local is not None else storage.rstrip('/') + '/' + name}"
