"""A sweep's ``tune.Tuner``: its searcher (a grid's variants in order, a race, or Tune's own sampling),
its scheduler (FIFO, ASHA, PBT), the trials' folders, callbacks and console reporter; built fresh,
or restored after what a resume checks first (:func:`check_resume`).

What runs a sweep (Ray, the folder lock, the result) is :mod:`counterarg.sweep.runner`; what it
leaves, :mod:`counterarg.sweep.results`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ray import tune
from ray.tune import CheckpointConfig, FailureConfig, RunConfig
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from ..analysis.methods import label_of, slug
from ..analysis.trials import varying_fields
from ..config import Config, ConfigError
from ..ray_internals import retry_system_failures_only
from .console import DropRestoreHint, SweepReporter, TrialsWithoutResults, quiet_worker_logs
from .failures import RestoreLog
from .pbt import make_scheduler
from .prepare import concrete_configs
from .race import RaceSearcher
from .race_files import reconcile_race_state
from .recovery import StateSnapshot, SweepStateError, repair_experiment_state, restore_named_checkpoints
from .space_file import searched_fields, space_changes
from .spaces import VariantSearcher, grid_changes, saved_variants
from .tensorboard import SweepTBXLogger
from .trainable import trainable, trial_resources

if TYPE_CHECKING:
    from .runner import Sweep


def asha_settings(sweep: Sweep) -> tuple[int, int, float]:
    """ASHA's ``(max_t, grace_period, reduction_factor)`` for ``sweep``, in epochs: max_t is the
    trials' epochs; unset, the grace period is 2 epochs (1 for a one-epoch sweep) and the factor 2."""
    max_t = int(Config.from_dict(concrete_configs(sweep)[0]).epochs)
    grace = sweep.grace_period if sweep.grace_period is not None else max(1, min(2, max_t))
    return max_t, grace, sweep.reduction_factor if sweep.reduction_factor is not None else 2


def search_fields(sweep: Sweep) -> list[str]:
    """The fields a random or ASHA search draws (its labels and its summary section); none for a
    grid, a race or PBT (whose population's fields are its lineage, :mod:`counterarg.sweep.lineage`)."""
    if sweep.param_space is None or sweep.scheduler == "pbt":
        return []
    return searched_fields(sweep.param_space)


def trial_dirname(trial) -> str:
    """``trial_<id>_<name>_seed<N>`` with the name the trial carries (:func:`~counterarg.analysis.methods.label_of`):
    ``trial_<id>_recipe_seed2``, ``trial_<id>_recipe-decay-0.8-0.02_seed0``. Short, unique, and
    TensorBoard's run names tell the curves apart (Tune's default packs the whole config into the name).
    Tune names the folder before it draws a ``sample_from`` value: a PBT member's name is still a
    placeholder then, and the folder is named from the method the member carries and its rate."""
    try:
        config = dict(trial.config)
        if not isinstance(config.get("label"), (str, type(None))):
            config.pop("label")  # not drawn yet
        cfg = Config.from_dict(config).to_dict()
        return f"trial_{trial.trial_id}_{slug(label_of(cfg))}_seed{cfg['seed']}"
    except (ConfigError, KeyError, TypeError):
        return f"trial_{trial.trial_id}"


def check_resume(
    sweep: Sweep, work: Path | None, exp_path: str, *, variants: list | None = None, fs=None, root: str | None = None
) -> None:
    """What a resume checks and repairs before Tune restores ``exp_path``: a torn experiment state put
    back and checkpoints Tune deleted too early restored (``work``: the local experiment folder, or
    the driver's working copy of a remote one, whose trial folders are ``root`` on ``fs``), a changed
    grid (``variants``: the sweep's as staged) or search space refused (ConfigError), a race's saved
    state reconciled with the trials; nothing to restore is a :class:`SweepStateError`."""
    if work is not None and work.is_dir():
        for line in repair_experiment_state(work, sweep.name):
            print(f"[sweep] repaired {line}", flush=True)
        for line in restore_named_checkpoints(work, fs=fs, root=root):
            print(f"[sweep] repaired {line}", flush=True)
        changed: str | None = None
        if sweep.variants is not None:
            wanted = variants if variants is not None else sweep.variants
            changed = grid_changes(saved_variants(work), wanted)
        elif sweep.param_space is not None and search_fields(sweep):
            changed = space_changes(work, sweep.param_space)
        if changed:
            raise ConfigError(f"--resume: {changed}. Resume with the sweep's own flags, or start a new --name")
        for line in reconcile_race_state(work) if sweep.race is not None else []:
            print(f"[race] {line}", flush=True)
    if not tune.Tuner.can_restore(exp_path):
        raise SweepStateError(
            f"--resume: nothing to resume at {exp_path} (no experiment state there); "
            "drop --resume to start this sweep, or check --storage and --name"
        )


#: seconds between Tune's experiment-state snapshots (``TUNE_GLOBAL_CHECKPOINT_S``) on local disk, and on
#: object storage, where each snapshot uploads every trial's result files (docs/cluster.md, "Load")
SNAPSHOT_S = {"local": "1", "remote": "10"}
_USER_SNAPSHOT_S = os.environ.get("TUNE_GLOBAL_CHECKPOINT_S")  # a user's own setting wins


def snapshot_period(storage: str) -> str:
    """``TUNE_GLOBAL_CHECKPOINT_S`` for a sweep on ``storage``: the user's, else :data:`SNAPSHOT_S`'s."""
    if _USER_SNAPSHOT_S:
        return _USER_SNAPSHOT_S
    return SNAPSHOT_S["remote" if "://" in storage and not storage.startswith("file://") else "local"]


def build_tuner(sweep: Sweep, storage: str, *, resume: bool = False, verbose: int = 1):
    """A ``tune.Tuner`` for ``sweep`` (fresh) or restored from ``<storage>/<name>`` (resume)."""
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = snapshot_period(storage)
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "1000")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the classic engine honours our SweepReporter
    # keeping the best checkpoint forces a state snapshot per report: wanted (resume is fresher)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    logging.getLogger("ray.tune.tune").addFilter(DropRestoreHint())
    logging.getLogger("ray.tune.analysis.experiment_analysis").addFilter(TrialsWithoutResults())
    quiet_worker_logs()
    retry_system_failures_only()  # a lost node is retried, an error of the training is not
    exp_path = storage.rstrip("/") + "/" + sweep.name
    runnable = tune.with_resources(trainable, trial_resources(sweep.cpus_per_trial, sweep.gpus_per_trial))
    if resume:
        if not tune.Tuner.can_restore(exp_path):
            raise SweepStateError(f"--resume: nothing to resume at {exp_path}")
        # an errored trial keeps its id and continues from its last checkpoint (none: from scratch)
        return tune.Tuner.restore(exp_path, trainable=runnable, resume_unfinished=True, resume_errored=True)

    all_configs = concrete_configs(sweep)
    # HParams columns after method, strategy, seed and the schedule's: the searched fields, then those that vary
    hp_fields = list(dict.fromkeys([*searched_fields(sweep.param_space or {}), *varying_fields(all_configs)]))
    search_alg: Searcher | None
    if sweep.variants is not None:
        param_space = dict(sweep.base)
        if sweep.race is not None:  # the variants are strategies, raced over seeds
            search_alg = RaceSearcher(sweep.variants, sweep.race, base=sweep.base)
            num_samples = sweep.race.tune_samples(len(sweep.variants))
        else:
            search_alg = VariantSearcher(sweep.variants)
            num_samples = len(sweep.variants)
    else:
        assert sweep.param_space is not None, "a Sweep holds variants or a param space"
        param_space = {**sweep.base, **sweep.param_space}
        search_alg = None
        num_samples = sweep.num_samples
    scheduler: TrialScheduler
    if sweep.scheduler == "asha":
        max_t, grace, factor = asha_settings(sweep)
        scheduler = ASHAScheduler(
            time_attr="training_iteration", max_t=max_t, grace_period=grace, reduction_factor=factor
        )
    elif sweep.scheduler == "pbt":
        scheduler = make_scheduler(sweep.pbt)
    else:
        scheduler = FIFOScheduler()
    tune_config = tune.TuneConfig(
        metric=sweep.tune_metric,
        mode=sweep.mode,
        num_samples=num_samples,
        search_alg=search_alg,
        scheduler=scheduler,
        reuse_actors=True,
        trial_dirname_creator=trial_dirname,
    )
    run_config = RunConfig(
        name=sweep.name,
        storage_path=storage,
        failure_config=FailureConfig(max_failures=sweep.max_failures, fail_fast=False),
        # PBT keeps every checkpoint: a donor's must outlive the wait of the trial that takes it over.
        # Otherwise the last two: the experiment state may lag a kill by a snapshot, and must find the
        # checkpoint it names (the best epoch's state is mirrored apart, into <trial>/best)
        checkpoint_config=CheckpointConfig(num_to_keep=None if sweep.scheduler == "pbt" else 2),
        callbacks=[
            SweepTBXLogger(hp_fields, metric=sweep.tune_metric, mode=sweep.mode, configs=all_configs),
            StateSnapshot(),
            RestoreLog(),
        ],
        progress_reporter=SweepReporter(sweep.tune_metric, sweep.mode, fields=search_fields(sweep)),
        verbose=verbose,
    )
    return tune.Tuner(runnable, param_space=param_space, tune_config=tune_config, run_config=run_config)
