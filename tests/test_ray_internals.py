"""One test per assumption of ``counterarg.ray_internals`` about Ray: each fails when an installed Ray
release breaks what the project relies on (a private module moved, a logger renamed, Tune's state
files laid out otherwise, Tune's retry decision made elsewhere), and pyproject pins the range they
passed on. The slow ones share one small Tune experiment on a local Ray (three trials: one reports a
checkpoint, one raises, one loses its worker process once)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from counterarg import ray_internals as ri

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- without a Ray session
def test_pyproject_pins_ray_to_the_tested_range_and_the_installed_ray_is_in_it():
    import ray
    from packaging.specifiers import SpecifierSet

    text = (REPO / "pyproject.toml").read_text()
    pinned = re.search(r'"ray\[tune\]([^"]*)"', text).group(1)
    assert SpecifierSet(pinned) == SpecifierSet(ri.RAY_TESTED), (pinned, ri.RAY_TESTED)
    assert ray.__version__ in SpecifierSet(ri.RAY_TESTED), ray.__version__


@pytest.mark.parametrize("name", [ri.AUTH_TOKEN_LOGGER, *ri.STORAGE_LOGGERS])
def test_logger_names_are_modules_of_ray_that_log_under_their_own_name(name):
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin, f"{name} is no module of this Ray"
    source = Path(spec.origin).read_text(encoding="utf-8")
    assert re.search(r"logging\.getLogger\(__name__\)", source), f"{name} logs under another name"


def test_auth_token_logger_says_what_the_filter_drops():
    from counterarg.sweep.console import DropTokenAuthNotice  # noqa: F401 - the filter of this message

    source = Path(importlib.util.find_spec(ri.AUTH_TOKEN_LOGGER).origin).read_text(encoding="utf-8")
    assert "Token authentication is enabled for this Ray cluster" in source


def test_loopback_only_keeps_a_loopback_address_and_restores_the_constant():
    from ray._private import ray_constants, services

    before = ray_constants.ENABLE_RAY_CLUSTER
    with ri.loopback_only():
        assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"
    assert ray_constants.ENABLE_RAY_CLUSTER == before


def test_trial_working_dir_is_none_outside_a_session():
    from ray.train._internal.session import get_session  # noqa: F401 - the accessor it reads

    assert ri.trial_working_dir() is None


def test_system_failures_are_told_from_errors_of_the_training():
    import ray.exceptions as rx

    app = rx.RayTaskError("train", "Traceback ...", ValueError("metric train/loss is nan at epoch 3"))
    assert not ri.is_system_failure(app) and not ri.is_system_failure(app.as_instanceof_cause())
    assert not ri.is_system_failure(ValueError("x")) and not ri.is_system_failure(None)
    for lost in (
        rx.ActorDiedError(),
        rx.ActorUnavailableError("Socket closed", b"\0" * 16),
        rx.NodeDiedError("node gone"),
        rx.WorkerCrashedError(),
        rx.OutOfMemoryError("oom"),
    ):
        assert ri.is_system_failure(lost), type(lost)
    # the trainable's own call of an actor on a node that died
    assert ri.is_system_failure(rx.RayTaskError("train", "tb", rx.ActorDiedError()))


def test_tune_decides_a_retry_by_handle_error_then_should_recover():
    """What :func:`~counterarg.ray_internals.retry_system_failures_only` wraps: the controller counts the
    failure with ``trial.handle_error(exc)``, then asks ``trial.should_recover()``, nothing in between."""
    import inspect

    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial

    src = inspect.getsource(TuneController._process_trial_failure)
    assert src.index("trial.handle_error(exception)") < src.index("trial.should_recover()"), src
    assert "temporary_state" in inspect.getsource(Trial.__init__)
    assert "def __getstate__(self):\n        return {}" in inspect.getsource(
        Trial.__init__.__globals__["_TemporaryTrialState"]
    )


def test_the_retry_rule_wraps_tunes_trial_once_and_keeps_its_methods():
    """Installed twice (two sweeps in one driver), the rule wraps Tune's ``Trial`` once: a second wrap
    would call the first wrapper as if it were Tune's method. What it runs is the slow test's below."""
    from ray.tune.experiment import Trial

    ri.retry_system_failures_only()
    tunes = dict(ri._TUNE_TRIAL)
    ri.retry_system_failures_only()
    assert ri._TUNE_TRIAL == tunes and sorted(tunes) == ["handle_error", "should_recover"]
    for name, tune_method in tunes.items():
        assert tune_method.__module__ == Trial.__module__  # Tune's own, not a wrapper
        assert getattr(Trial, name) is not tune_method and getattr(Trial, name).__doc__ == tune_method.__doc__


# ----------------------------------------------------------------------------- one small Tune experiment
@pytest.fixture(scope="module")
def tune_run(tmp_path_factory):
    """Three trials with ``max_failures=2`` and the retry rule installed: ``ok`` reports one
    checkpoint and where its working folder is, ``app`` raises, ``lost`` SIGKILLs its own worker
    on its first attempt and reports on its second. A callback records the trials' storage."""
    import ray
    from ray import tune
    from ray.tune import Callback, FailureConfig, RunConfig

    from counterarg.retrieval.shards import ensure_ray
    from counterarg.sweep.spaces import VariantSearcher  # the sweeps' searcher: its state files too

    root = tmp_path_factory.mktemp("tune")
    ray_root = tempfile.mkdtemp(prefix="cr-ri-", dir="/tmp")
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = ray_root
    marker = root / "markers"
    marker.mkdir()

    def trainable(config):
        import signal
        import tempfile as tf
        from pathlib import Path as P

        from ray import tune as t

        from counterarg.ray_internals import trial_working_dir

        if config["kind"] == "app":
            raise ValueError("deterministic failure of the training")
        first = P(config["marker"]) / config["kind"]
        if config["kind"] == "lost" and not first.exists():
            first.write_text("killed once")
            os.kill(os.getpid(), signal.SIGKILL)
        with tf.TemporaryDirectory() as d:
            P(d, "weights").write_text("1")
            t.report({"score": 1.0, "working": str(trial_working_dir())}, checkpoint=t.Checkpoint.from_directory(d))

    class Record(Callback):
        seen: dict = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            Record.seen[trial.trial_id] = {"trial": ri.trial_storage(trial), "experiment": ri.experiment_folders(trial)}

    ri.retry_system_failures_only()
    ensure_ray(
        2, runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}}
    )
    try:
        searcher = VariantSearcher([{"kind": k} for k in ("ok", "app", "lost")])
        tuner = tune.Tuner(
            trainable,
            param_space={"marker": str(marker)},
            tune_config=tune.TuneConfig(
                metric="score",
                mode="max",
                search_alg=searcher,
                num_samples=3,
                trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
            ),
            run_config=RunConfig(
                name="exp",
                storage_path=str(root / "storage"),
                verbose=0,
                failure_config=FailureConfig(max_failures=2),
                callbacks=[Record()],
            ),
        )
        grid = tuner.fit()
        trials = {t.config["kind"]: t for t in ri.result_grid_trials(grid)}
        yield {
            "grid": grid,
            "trials": trials,
            "exp": root / "storage" / "exp",
            "seen": Record.seen,
            "ray_root": ray_root,
        }
    finally:
        ray.shutdown()
        shutil.rmtree(ray_root, ignore_errors=True)
        if old is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old


@pytest.mark.slow
def test_a_training_error_ends_its_trial_at_once_and_a_lost_worker_is_retried(tune_run):
    t = tune_run["trials"]
    assert t["app"].status == "ERROR" and t["app"].num_failures == 1
    assert Path(t["app"].path, "error.txt").read_text().count("Failure #") == 1
    assert t["lost"].status == "TERMINATED" and t["lost"].num_failures == 1
    assert ri.is_system_failure(ri.last_failure(t["lost"]))
    assert t["ok"].status == "TERMINATED" and t["ok"].num_failures == 0


@pytest.mark.slow
def test_trial_working_dir_inside_a_session_is_the_trials_own_folder_on_its_node(tune_run):
    ok = tune_run["trials"]["ok"]
    working = Path(ok.last_result["working"])
    assert working.name == Path(ok.path).name and working != Path(ok.path), working


@pytest.mark.slow
def test_trial_and_experiment_storage_of_a_trial(tune_run):
    import pyarrow.fs as pafs

    ok = tune_run["trials"]["ok"]
    fs, path = tune_run["seen"][ok.trial_id]["trial"]
    assert isinstance(fs, pafs.LocalFileSystem) and Path(path) == Path(ok.path)
    staging, efs, exp_path = tune_run["seen"][ok.trial_id]["experiment"]
    assert isinstance(efs, pafs.LocalFileSystem) and Path(exp_path) == tune_run["exp"]
    assert staging.is_relative_to(tune_run["ray_root"])


@pytest.mark.slow
def test_result_grid_trials_are_tunes_trials(tune_run):
    assert sorted(tune_run["trials"]) == ["app", "lost", "ok"]
    assert all(t.trial_id and t.status for t in tune_run["trials"].values())


@pytest.mark.slow
def test_state_files_are_laid_out_as_recovery_reads_them(tune_run):
    """JSON experiment state, pickled search-generator state, one session stamp, ``tuner.pkl``, and in
    each trial's run metadata the hex pickle of a checkpoint manager naming its checkpoint folders."""
    from counterarg.sweep.recovery import _intact, named_checkpoints

    exp = tune_run["exp"]
    [state] = ri.experiment_states(exp)
    stamp = ri.session_stamp(state)
    assert (exp / ri.TUNER_FILE).is_file()
    session = sorted(f.name for f in exp.iterdir() if ri.is_state_file(f))
    assert session == [
        f"experiment_state-{stamp}.json",
        f"search_gen_state-{stamp}.json",
        f"searcher-state-{stamp}.pkl",
    ]
    assert ri.searcher_state_files(exp) == [exp / f"searcher-state-{stamp}.pkl"]
    json.loads(state.read_text())  # the experiment state is JSON ...
    assert (exp / f"search_gen_state-{stamp}.json").read_bytes().startswith(b"\x80")  # ... this one a pickle
    assert all(_intact(exp / n) for n in session)
    trials = tune_run["trials"]
    assert ri.state_trial_ids(state) == {t.trial_id for t in trials.values()}
    named = named_checkpoints(state)
    for kind in ("ok", "lost"):
        folder = Path(trials[kind].path).name
        assert named.get(folder) == {"checkpoint_000000"}, named
        assert (exp / folder / "checkpoint_000000").is_dir()
    assert len(ri.named_checkpoint_blobs(state)) == 3


@pytest.mark.slow
def test_the_driver_stages_its_state_where_repair_looks(tune_run, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", tune_run["ray_root"])
    roots = ri.ray_temp_roots()
    assert Path(tune_run["ray_root"]) / "ray" in roots
    staged = list((Path(tune_run["ray_root"]) / "ray").glob(ri.DRIVER_STAGING_GLOB.format(name="exp")))
    assert staged and any(f.name.startswith(ri.EXPERIMENT_STATE_PREFIX) for f in staged[0].iterdir()), staged
