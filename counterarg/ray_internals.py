"""Everything this project assumes about Ray beyond its public API, in one place.

Ray's private modules, logger names, Tune's state files and Tune's retry rule change between
releases without notice. Each assumption sits here, once, and ``tests/test_ray_internals.py`` holds
one test per assumption that fails when an installed Ray breaks it; pyproject pins ``ray[tune]`` to
:data:`RAY_TESTED`, the range the suite has passed on. Nothing else in the package imports
``ray._private``, ``ray.*._internal`` or reads Tune's state files by name.

* **Sessions and storage**: the trial's working folder (:func:`trial_working_dir`), a trial's and an
  experiment's storage (:func:`trial_storage`, :func:`experiment_folders`), a ``ResultGrid``'s trial
  list (:func:`result_grid_trials`).
* **Local Ray on loopback** (:func:`loopback_only`).
* **Logger names** (:data:`AUTH_TOKEN_LOGGER`, :data:`STORAGE_LOGGERS`, :data:`RESTORE_LOGGER`).
* **Tune's state files**: names, the driver's staging folders, the checkpoint paths in the pickled
  checkpoint manager of each trial (:func:`named_checkpoint_blobs`).
* **Which failures are retried** (:func:`retry_system_failures_only`): Tune's
  ``FailureConfig(max_failures)`` counts every error of a trial alike; a lost node or worker process
  (:func:`is_system_failure`) is worth a retry from the last checkpoint, an error of the training itself
  (NaN loss, a bad encoder path) would only fail again, so it ends the trial at once.

Ray is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

#: the Ray releases the suite has passed on (pyproject's ``ray[tune]`` requirement)
RAY_TESTED = ">=2.60,<2.61"

#: Ray's logger of "Token authentication is enabled for this Ray cluster" (said at every local start)
AUTH_TOKEN_LOGGER = "ray._private.authentication.authentication_token_setup"
#: Ray's loggers of "Checkpoint successfully created" (one line per epoch per trial)
STORAGE_LOGGERS = ("ray.train._internal.storage", "ray.train.v2._internal.execution.storage")
#: Tune's trainable logger: "Restored on <ip> from checkpoint: ..." once per restored trial
RESTORE_LOGGER = "ray.tune.trainable.trainable"

#: Tune's state files in an experiment folder: ``<prefix><session stamp>.json|.pkl``
EXPERIMENT_STATE_PREFIX = "experiment_state-"
STATE_FILE_PREFIXES = (EXPERIMENT_STATE_PREFIX, "search_gen_state-", "searcher-state-")
SEARCHER_STATE_GLOB = "searcher-state-*.pkl"
#: the file that marks a folder as holding a Tune experiment (``Tuner.can_restore``)
TUNER_FILE = "tuner.pkl"
#: where a driver stages its state files before copying them into storage, under a Ray temp root
DRIVER_STAGING_GLOB = "session_*/artifacts/*/{name}/driver_artifacts"


def experiment_states(exp_dir: Path) -> list[Path]:
    """The experiment state files of ``exp_dir``, oldest session first (Tune restores the last)."""
    return sorted(Path(exp_dir).glob(f"{EXPERIMENT_STATE_PREFIX}*.json"))


def searcher_state_files(exp_dir: Path) -> list[Path]:
    """The searcher's saved states (``searcher-state-*.pkl``) in an experiment folder, newest session
    first: Tune restores the greatest name (its session's start time), whatever the files' mtimes."""
    return sorted(Path(exp_dir).glob(SEARCHER_STATE_GLOB), reverse=True)


def state_trial_ids(state_file: Path) -> set[str]:
    """The ids of the trials an experiment state file lists (``trial_data``: pairs whose first item is
    the trial's JSON). Raises ``OSError``/``ValueError``/``KeyError``/``TypeError`` on a file that is not one."""
    return {json.loads(t[0])["trial_id"] for t in json.loads(Path(state_file).read_text())["trial_data"]}


def session_stamp(state_file: Path) -> str:
    """``experiment_state-2026-12-07_06-00-00.json`` -> ``2026-12-07_06-00-00`` (the session's files share it)."""
    return Path(state_file).name[len(EXPERIMENT_STATE_PREFIX) : -len(".json")]


def is_state_file(path: Path) -> bool:
    return path.suffix in (".json", ".pkl") and path.name.startswith(STATE_FILE_PREFIXES)


def ray_temp_roots() -> list[Path]:
    """Where Ray keeps its sessions on this machine (``$RAY_TMPDIR``, the temp folder, /tmp), each ``.../ray``."""
    roots = [os.environ.get("RAY_TMPDIR"), tempfile.gettempdir(), "/tmp"]
    return list(dict.fromkeys(Path(r) / "ray" for r in roots if r))


def named_checkpoint_blobs(state_file: Path) -> list[bytes]:
    """Each trial's pickled checkpoint manager in an experiment state file, as bytes (nothing is
    unpickled): the state is JSON whose ``trial_data`` pairs hold a run-metadata JSON string with
    ``checkpoint_manager.value``, the hex of a pickle naming ``<trial folder>/checkpoint_NNNNNN``.
    A file that is not such a state gives ``[]``."""
    try:
        state = json.loads(Path(state_file).read_text(encoding="utf-8"))
        runs = [json.loads(run) for _trial, run in state["trial_data"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    out = []
    for run in runs:
        value = (run.get("checkpoint_manager") or {}).get("value") if isinstance(run, dict) else None
        try:
            out.append(bytes.fromhex(value) if isinstance(value, str) else b"")
        except ValueError:
            continue
    return out


def trial_working_dir() -> Path | None:
    """The trial's working folder on its node (never synced by Tune); None outside a Tune session.

    Ray 2.60 has no public accessor: ``ray.train._internal.session.get_session().storage``."""
    try:
        from ray.train._internal.session import get_session

        session = get_session()
        return None if session is None else Path(session.storage.trial_working_directory)
    except (ImportError, AttributeError, RuntimeError):
        return None


def trial_storage(trial) -> tuple[Any, str]:
    """``(pyarrow filesystem, path)`` of a Tune ``Trial``'s folder in storage (its ``StorageContext``)."""
    return trial.storage.storage_filesystem, trial.storage.trial_fs_path


def experiment_folders(trial) -> tuple[Path, Any, str]:
    """A trial's experiment: the driver's staging folder, the storage filesystem and the experiment's
    path on it (``StorageContext``; every trial of an experiment shares them)."""
    storage = trial.storage
    return Path(storage.experiment_driver_staging_path), storage.storage_filesystem, storage.experiment_fs_path


def result_grid_trials(result_grid) -> list:
    """Tune's own trial list behind a ``ResultGrid``: it also holds the trials that never started,
    which the grid's results leave without a config."""
    analysis = getattr(result_grid, "_experiment_analysis", None)
    return list(getattr(analysis, "trials", None) or [])


@contextmanager
def loopback_only() -> Iterator[None]:
    """Keep ``_node_ip_address="127.0.0.1"`` on the loopback interface while Ray starts.

    Ray 2.60's ``ray.init`` documents ``_node_ip_address`` (the IP address of this node) but passes
    it through ``services.resolve_ip_for_localhost``, which swaps a loopback address for the
    machine's routable one unless ``ray_constants.ENABLE_RAY_CLUSTER`` is false (its value on
    macOS/Windows). Cleared for the call, GCS, raylet and workers of a purely local sweep bind
    127.0.0.1 only instead of every interface; restored after, so joining a cluster is unchanged.
    """
    try:
        from ray._private import ray_constants
    except ImportError:  # a Ray without it: nothing to adjust
        yield
        return
    had = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if had is None:
            del ray_constants.ENABLE_RAY_CLUSTER
        else:
            ray_constants.ENABLE_RAY_CLUSTER = had


# ----------------------------------------------------------------------------- which failures are retried
def system_failure_types() -> tuple[type, ...]:
    """The exceptions that mean a node, a worker process or its raylet was lost, not that the
    training failed: an actor that died or cannot be reached (``RayActorError``: ``ActorDiedError``,
    ``ActorUnavailableError``, an OOM kill), a task whose node or worker died."""
    from ray import exceptions as rx

    return (
        rx.RayActorError,
        rx.NodeDiedError,
        rx.WorkerCrashedError,
        rx.OutOfMemoryError,
        rx.LocalRayletDiedError,
        rx.ObjectLostError,
    )


def is_system_failure(exc: BaseException | None) -> bool:
    """Whether ``exc`` (what Tune hands a failed trial) is a lost node or worker: one of
    :func:`system_failure_types`, or a ``RayTaskError`` caused by one (the trainable's own call of
    an actor, e.g. a shard, on a node that died). Any other error is the training's own."""
    from ray.exceptions import RayTaskError

    kinds = system_failure_types()
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, kinds):
            return True
        if not isinstance(exc, RayTaskError):
            return False
        exc, seen = getattr(exc, "cause", None), seen + 1
    return False


#: The attribute of a ``Trial``'s temporary state (never saved with the experiment) that holds its latest failure
FAILURE_ATTRIBUTE = "counterarg_failure"


def last_failure(trial) -> BaseException | None:
    """The exception of a Tune ``Trial``'s latest failure in this driver (None before any), as
    recorded by :func:`retry_system_failures_only`."""
    return getattr(trial.temporary_state, FAILURE_ATTRIBUTE, None)


def retry_system_failures_only() -> None:
    """Make Tune retry a failed trial (up to its ``FailureConfig(max_failures)``) only after a
    system failure (:func:`is_system_failure`); an error of the training ends the trial at once.

    Tune 2.60 decides in ``TuneController._process_trial_failure``: ``trial.handle_error(exc)``
    counts the failure, then ``trial.should_recover()`` compares the count with ``max_failures``,
    the same for both kinds, and no callback runs in between. Wrapped here (once per process, in
    the driver): ``handle_error`` also keeps the exception in the trial's temporary state (never
    saved with the experiment), and ``should_recover`` refuses when that exception is not a system
    failure. The count, ``error.txt`` and everything else stay Tune's.
    """
    from ray.tune.experiment import Trial

    if _TUNE_TRIAL:  # wrapped already in this process
        return
    _TUNE_TRIAL.update(handle_error=Trial.handle_error, should_recover=Trial.should_recover)
    for name, wrapper in (("handle_error", _handle_error), ("should_recover", _should_recover)):
        wrapper.__doc__ = _TUNE_TRIAL[name].__doc__
        setattr(Trial, name, wrapper)  # by name: a patch of Tune's class, not an attribute of ours


#: Tune's own ``Trial.handle_error`` and ``Trial.should_recover``, kept once
#: :func:`retry_system_failures_only` has wrapped them (empty before)
_TUNE_TRIAL: dict[str, Callable[..., Any]] = {}


def _handle_error(self: Trial, exc: BaseException | None = None) -> None:
    _TUNE_TRIAL["handle_error"](self, exc)
    setattr(self.temporary_state, FAILURE_ATTRIBUTE, exc)  # Tune's class declares no such field


def _should_recover(self: Trial) -> bool:
    exc = last_failure(self)
    return _TUNE_TRIAL["should_recover"](self) and (exc is None or is_system_failure(exc))
