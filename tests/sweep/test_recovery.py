"""Crash recovery (counterarg.sweep.recovery): SIGKILL the driver, resume; finished trials are not
rerun; torn experiment state is repaired only from safe copies.

The sweep tests run the real ``train()`` on the demo corpus with a tiny random BERT.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from counterarg.core.io import MANIFEST
from counterarg.sweep.recovery import (
    SNAPSHOT_DIR,
    TRAIN_TIME_FILE,
    StateSnapshot,
    SweepStateError,
    final_checkpoint_after,
    repair_experiment_state,
)

from .conftest import (
    PY,
    REPO,
    kill_and_resume,
    kill_process_group,
    reported_epochs,
    resume_to_end,
    tiny_sweep_args,
    trial_dirs,
    unique_name,
)


def test_final_checkpoint_after_finds_a_finished_trial(tmp_path):
    import pyarrow.fs as pafs
    from ray import tune

    trial = tmp_path / "trial_x"
    for index, epoch in ((27, 28), (28, 29), (29, 30)):
        d = trial / f"checkpoint_{index:06d}"
        d.mkdir(parents=True)
        (d / TRAIN_TIME_FILE).write_text(json.dumps({"train_total_s": 1.0, "epoch": epoch}))
    (trial / "checkpoint_000030").mkdir()  # cut short by the kill: no sidecar
    fs = pafs.LocalFileSystem()
    restored = tune.Checkpoint(str(trial / "checkpoint_000028"), filesystem=fs)
    assert final_checkpoint_after(restored, 30) == str(trial / "checkpoint_000029")
    assert final_checkpoint_after(restored, 31) is None  # not finished: resume from Tune's own
    last = tune.Checkpoint(str(trial / "checkpoint_000029"), filesystem=fs)
    assert final_checkpoint_after(last, 30) is None  # only later checkpoints count
    (trial / "checkpoint_000029" / TRAIN_TIME_FILE).write_text('{"epo')  # a torn sidecar
    assert final_checkpoint_after(restored, 30) is None


@pytest.mark.slow
def test_sigkill_driver_then_resume(tiny, tmp_path):
    epochs = 30  # demo epochs take ~0.2 s: a wide window to kill mid-trial
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    name = unique_name("kill")
    args = tiny_sweep_args(tiny, tmp_path / "results", name, epochs)
    kill_and_resume(args, tmp_path / "results" / name, epochs, env, tmp_path / "driver.log", n_trials=2)


def _snapshot_status(exp: Path) -> dict[str, str] | None:
    """Trial folder name -> status in the newest experiment state Tune wrote (None: cut short)."""
    try:
        state = json.loads(max(exp.glob("experiment_state-*.json")).read_text())
    except ValueError:
        return None  # killed while copying it to storage: the resume must repair it
    out = {}
    folders = {d.name.split("_")[1]: d.name for d in trial_dirs(exp)}  # trial_<id>_<strategy>_seed<N>
    for trial_json, _run_json in state["trial_data"]:
        t = json.loads(trial_json)
        out[folders.get(t["trial_id"], f"trial_{t['trial_id']}")] = t["status"]
    return out


def _has_final_checkpoint(trial_dir: Path, epochs: int) -> bool:
    for f in trial_dir.glob(f"checkpoint_*/{TRAIN_TIME_FILE}"):
        try:
            if json.loads(f.read_text()).get("epoch") == epochs:
                return True
        except (OSError, ValueError):
            pass  # still being copied
    return False


#: Runs a sweep script with Tune's experiment-state snapshot held: as soon as a trial has reported
#: its last epoch, the driver waits for the previous snapshot's upload to finish and SIGKILLs itself
#: instead of writing the snapshot that would record the trial as finished. ``torn`` first cuts the
#: snapshot in storage short, as a kill during its copy does; ``torn_everywhere`` cuts the driver's
#: staging copy too (Tune rewrites it in place while an upload may read it).
#: argv: EPOCHS stale|torn|torn_everywhere SCRIPT ARGS...
HOLD_SNAPSHOT = r"""
import os, runpy, signal, sys
from pathlib import Path

from ray.tune.execution.tune_controller import TuneController

epochs, mode, script = int(sys.argv[1]), sys.argv[2], sys.argv[3]
real = TuneController.checkpoint


def checkpoint(self, force=False, wait=False):
    if any((t.last_result or {}).get("epoch") == epochs for t in self._trials):
        try:  # as Tune's own wait: a failed upload of files still being written is only logged
            self._checkpoint_manager._storage.syncer.wait()
        except Exception as e:
            print(f"[test] previous upload: {e!r:.200}", flush=True)
        if mode.startswith("torn"):
            storage = self._checkpoint_manager._storage
            folders = [storage.experiment_fs_path]
            if mode == "torn_everywhere":  # the race: the staging copy rewritten in place as well
                folders.append(storage.experiment_driver_staging_path)
            for folder in folders:
                state = max(Path(folder).glob("experiment_state-*.json"))
                state.write_bytes(state.read_bytes()[:40])
        print("[test] driver killed with the snapshot held", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, force=force, wait=wait)


TuneController.checkpoint = checkpoint
sys.argv = [script, *sys.argv[4:]]
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stale", "torn", "torn_everywhere"])
def test_trial_finished_before_the_snapshot_is_not_rerun(tiny, tmp_path, mode):
    """The driver dies after a trial's last epoch (its final checkpoint stored) but before the
    experiment-state snapshot says so; no race: the snapshot is held by a hook in the driver.

    ``stale``: the state in storage holds the trial RUNNING at epoch 2; ``torn``: it is cut short
    and the resume repairs it from the last complete set (``.intact_state``, the same epoch-2
    state); ``torn_everywhere``: the driver's staging copy is cut short too, and the set alone
    holds the state. Either way
    the finished trial trains nothing on resume and each of its epochs is logged once, and the
    other trial (not started at the kill: one CPU) runs to the end.
    """
    epochs = 3
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TUNE_GLOBAL_CHECKPOINT_S": "3600"}
    name = unique_name("late")
    exp = tmp_path / "results" / name
    args = tiny_sweep_args(tiny, tmp_path / "results", name, epochs)
    log_path = tmp_path / "driver.log"
    hook = tmp_path / "hold_snapshot.py"
    hook.write_text(HOLD_SNAPSHOT)
    with open(log_path, "w") as log:
        killed = subprocess.Popen(
            [PY, str(hook), str(epochs), mode, str(REPO / "sweeps" / "compare_strategies.py"), *args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc = killed.wait(timeout=240)
        finally:
            if killed.poll() is None:
                kill_process_group(killed)
    assert rc == -signal.SIGKILL and "snapshot held" in log_path.read_text(), log_path.read_text()[-3000:]
    at_kill = {d.name: reported_epochs(d) for d in trial_dirs(exp)}
    done = [d.name for d in trial_dirs(exp) if _has_final_checkpoint(d, epochs)]
    assert len(done) == 1, at_kill
    snapshot = _snapshot_status(exp)
    if mode == "stale":
        assert snapshot is not None and snapshot[done[0]] == "RUNNING", snapshot
    else:
        assert snapshot is None
    resume_to_end(args, env, log_path, killed)
    after = {d.name: reported_epochs(d) for d in trial_dirs(exp)}
    log = log_path.read_text()
    assert after[done[0]] == [1, 2, 3], (at_kill, after)  # each epoch logged once, none trained again
    assert log.count("not rerun") == 1, log[-3000:]
    assert ("[sweep] repaired experiment_state-" in log) == mode.startswith("torn"), log[-3000:]
    if mode.startswith("torn"):
        assert f"{SNAPSHOT_DIR}/experiment_state-" in log, log[-3000:]
    assert len(after) == 2 and all(eps == [1, 2, 3] for eps in after.values()), after
    assert "Trials: 2 (0 errored, 0 unfinished)" in (exp / "summary.md").read_text()


def test_restore_named_checkpoints_puts_back_what_tune_deleted_before_saving(tmp_path):
    """The state names checkpoints 3 and 4 of a trial; Tune had deleted both (it had registered 5
    and 6) when the driver died. The newest named becomes a copy of the next later one, the older an
    empty folder for Tune to delete; a trial whose named checkpoints exist is left alone."""
    from counterarg.sweep.recovery import named_checkpoints, restore_named_checkpoints

    exp = tmp_path / "sw"
    pickled = b"\x80\x05" + b"".join(
        f"\x8c{chr(60)}{exp}/{t}/checkpoint_{i:06d}\x94".encode()
        for t, i in (("trial_a_fixed-0.8_seed0", 3), ("trial_a_fixed-0.8_seed0", 4), ("trial_b_random_seed0", 7))
    )
    run = json.dumps({"checkpoint_manager": {"_type": "CLOUDPICKLE_FALLBACK", "value": pickled.hex()}})
    exp.mkdir()
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": [["{}", run]]}))
    for trial, index, epoch in (
        ("trial_a_fixed-0.8_seed0", 5, 6),
        ("trial_a_fixed-0.8_seed0", 6, 7),
        ("trial_b_random_seed0", 7, 8),
    ):
        d = exp / trial / f"checkpoint_{index:06d}"
        d.mkdir(parents=True)
        (d / TRAIN_TIME_FILE).write_text(json.dumps({"epoch": epoch}))
    state = exp / "experiment_state-2026-01-01_00-00-00.json"
    assert named_checkpoints(state) == {
        "trial_a_fixed-0.8_seed0": {"checkpoint_000003", "checkpoint_000004"},
        "trial_b_random_seed0": {"checkpoint_000007"},
    }
    done = restore_named_checkpoints(exp)
    a = exp / "trial_a_fixed-0.8_seed0"
    assert json.loads((a / "checkpoint_000004" / TRAIN_TIME_FILE).read_text()) == {"epoch": 6}  # from 5
    assert list((a / "checkpoint_000003").iterdir()) == []
    assert len(done) == 2 and "copied from checkpoint_000005" in done[1], done
    assert restore_named_checkpoints(exp) == []  # nothing left to do; trial_b never needed anything


#: Runs a sweep script and SIGKILLs the driver right after Tune registered its Nth checkpoint,
#: the moment its ``num_to_keep`` deletes the oldest one, before any state naming the new one is
#: saved. argv: N SCRIPT ARGS...
KILL_AFTER_REGISTER = r"""
import os, runpy, signal, sys

from ray.train._internal.checkpoint_manager import _CheckpointManager

kill_at, script = int(sys.argv[1]), sys.argv[2]
real = _CheckpointManager.register_checkpoint
seen = [0]


def register(self, result):
    real(self, result)
    seen[0] += 1
    if seen[0] == kill_at:
        print(f"[test] driver killed after checkpoint {kill_at} was registered", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


_CheckpointManager.register_checkpoint = register
sys.argv = [script, *sys.argv[3:]]
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.slow
def test_driver_killed_after_tune_deleted_a_checkpoint_resumes_the_trial(tiny, tmp_path):
    """Without a race: the driver dies right after Tune registered a trial's 6th
    checkpoint (deleting its 4th, which the last saved state names). The first resume exits 0, the
    trial keeps its id and continues where it was (no epoch trained from scratch); Tune never
    copied the folder ``train()`` swaps (no ``run/checkpoint`` or ``.checkpoint.*`` in storage, no
    failed experiment-state upload in the log)."""
    epochs = 12
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    name = unique_name("deleted")
    exp = tmp_path / "results" / name
    args = tiny_sweep_args(tiny, tmp_path / "results", name, epochs, strategies="fixed", sets=("patience=0",))
    log_path = tmp_path / "driver.log"
    hook = tmp_path / "kill_after_register.py"
    hook.write_text(KILL_AFTER_REGISTER)
    with open(log_path, "w") as log:
        killed = subprocess.Popen(
            [PY, str(hook), "6", str(REPO / "sweeps" / "compare_strategies.py"), *args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc = killed.wait(timeout=240)
        finally:
            if killed.poll() is None:
                kill_process_group(killed)
    assert rc == -signal.SIGKILL and "[test] driver killed" in log_path.read_text(), log_path.read_text()[-3000:]
    (trial,) = trial_dirs(exp)
    at_kill = reported_epochs(trial)
    assert at_kill and max(at_kill) >= 2, at_kill  # storage lags the registered checkpoints
    resume_to_end(args, env, log_path, killed)  # exit 0 on the first resume
    (after,) = trial_dirs(exp)
    eps = reported_epochs(after)
    log = log_path.read_text()
    assert after.name == trial.name and eps[: len(at_kill)] == at_kill, (at_kill, eps)
    assert max(eps) == epochs and eps[len(at_kill)] >= max(at_kill) - 1, (at_kill, eps)  # no restart from 1
    assert sorted(set(eps)) == list(range(1, epochs + 1)), eps
    assert "Trials: 1 (0 errored, 0 unfinished)" in (exp / "summary.md").read_text()
    assert "does not exist on storage" not in log and "Saving experiment state" not in log, log[-3000:]
    assert not list(exp.glob("trial_*/run/checkpoint")) and not list(exp.glob("trial_*/run/.checkpoint*"))


def test_repair_experiment_state_from_the_drivers_staging_copy(tmp_path, monkeypatch):
    exp = tmp_path / "results" / "sw"
    exp.mkdir(parents=True)
    whole = json.dumps({"trial_data": [], "runner_data": {}, "stats": {}})
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text(whole)  # an older session
    (exp / "experiment_state-2026-01-02_00-00-00.json").write_text(whole[:17])  # cut by the kill
    (exp / "searcher-state-2026-01-02_00-00-00.pkl").write_bytes(b"\x80\x05K\x01.")  # pickle of 1
    (exp / "search_gen_state-2026-01-02_00-00-00.json").write_bytes(b"\x80\x05K")  # a cut pickle
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "raytmp"))
    with pytest.raises(
        SweepStateError,
        match="experiment_state-2026-01-02_00-00-00.json is cut short.*experiment_state-2026-01-01_00-00-00.json",
    ):
        repair_experiment_state(exp, "sw")
    assert (exp / "experiment_state-2026-01-02_00-00-00.json").read_text() == whole[:17]  # untouched
    staging = tmp_path / "raytmp" / "ray" / "session_1" / "artifacts" / "t" / "sw" / "driver_artifacts"
    staging.mkdir(parents=True)
    (staging / "experiment_state-2026-01-02_00-00-00.json").write_text(whole)
    (staging / "search_gen_state-2026-01-02_00-00-00.json").write_bytes(b"\x80\x05K\x02.")
    done = repair_experiment_state(exp, "sw")
    assert len(done) == 2 and sorted(d.split(" ")[0] for d in done) == [
        "experiment_state-2026-01-02_00-00-00.json",
        "search_gen_state-2026-01-02_00-00-00.json",
    ]
    assert (exp / "search_gen_state-2026-01-02_00-00-00.json").read_bytes() == b"\x80\x05K\x02."
    assert (exp / "searcher-state-2026-01-02_00-00-00.pkl").read_bytes() == b"\x80\x05K\x01."
    assert (exp / "experiment_state-2026-01-02_00-00-00.json").read_text() == whole
    assert (exp / "experiment_state-2026-01-02_00-00-00.json.torn").read_text() == whole[:17]
    assert repair_experiment_state(exp, "sw") == []  # whole now: nothing to do


class _Storage:  # what StateSnapshot reads of a trial's storage context
    def __init__(self, staging: Path, exp: Path):
        import pyarrow.fs as pafs

        self.experiment_driver_staging_path, self.experiment_fs_path = str(staging), str(exp)
        self.storage_filesystem = pafs.LocalFileSystem()


def test_state_snapshot_keeps_the_last_whole_set_and_repair_prefers_it(tmp_path, monkeypatch):
    """The race the kill tests once lost: storage and staging copies both cut short. The callback
    copied the last whole set when Tune asked for callback state; the repair restores that set."""
    from types import SimpleNamespace

    exp, staging = tmp_path / "results" / "sw", tmp_path / "staging"
    exp.mkdir(parents=True)
    staging.mkdir()
    stamp = "2026-01-02_00-00-00"
    state = json.dumps({"trial_data": [["t1"]], "runner_data": {}, "stats": {}})
    (staging / f"experiment_state-{stamp}.json").write_text(state)
    (staging / f"searcher-state-{stamp}.pkl").write_bytes(b"\x80\x05K\x01.")
    (staging / "trial_x").mkdir()  # trial folders are not state files
    snap = StateSnapshot()
    assert snap.get_state() is None and not (exp / SNAPSHOT_DIR).exists()  # no trial seen yet: nothing
    snap.on_step_begin(0, [SimpleNamespace(storage=_Storage(staging, exp))])
    assert snap.get_state() is None  # Tune saves no callback state for it
    assert sorted(p.name for p in (exp / SNAPSHOT_DIR).iterdir()) == [
        f"experiment_state-{stamp}.json",
        MANIFEST,
        f"searcher-state-{stamp}.pkl",
    ]  # sealed by its manifest
    # a later save cut short in staging (Tune's in-place rewrite): the snapshot keeps the last whole set
    (staging / f"experiment_state-{stamp}.json").write_text(state[:20])
    assert snap.snapshot() is False
    assert (exp / SNAPSHOT_DIR / f"experiment_state-{stamp}.json").read_text() == state
    # storage: the state cut short, the searcher state from a later save; staging useless too
    (exp / f"experiment_state-{stamp}.json").write_text(state[:25])
    (exp / f"searcher-state-{stamp}.pkl").write_bytes(b"\x80\x05K\x02.")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "raytmp"))
    done = repair_experiment_state(exp, "sw")
    assert len(done) == 2 and all(f"<- {exp / SNAPSHOT_DIR}" in d for d in done), done
    assert (exp / f"experiment_state-{stamp}.json").read_text() == state
    assert (exp / f"searcher-state-{stamp}.pkl").read_bytes() == b"\x80\x05K\x01."  # one save: consistent
    assert (exp / f"experiment_state-{stamp}.json.torn").read_text() == state[:25]
    assert (exp / f"searcher-state-{stamp}.pkl.replaced").read_bytes() == b"\x80\x05K\x02."
    assert repair_experiment_state(exp, "sw") == []
    # a snapshot of another session, or one whose files fail the manifest, is not used
    (exp / f"experiment_state-{stamp}.json").write_text(state[:25])
    (exp / SNAPSHOT_DIR / f"searcher-state-{stamp}.pkl").write_bytes(b"\x80\x05K\x03.")
    with pytest.raises(SweepStateError, match="cut short"):
        repair_experiment_state(exp, "sw")


def test_state_snapshot_does_nothing_on_remote_storage(tmp_path):
    from types import SimpleNamespace

    storage = _Storage(tmp_path, tmp_path / "exp")
    storage.storage_filesystem = object()  # e.g. S3FileSystem
    (tmp_path / "experiment_state-x.json").write_text("{}")
    snap = StateSnapshot()
    snap.on_step_begin(0, [SimpleNamespace(storage=storage)])
    assert snap.get_state() is None and not (tmp_path / "exp").exists()


def test_repair_ignores_state_copies_others_could_have_planted(tmp_path, monkeypatch):
    """A staging copy writable by others (or owned by another user) is never used."""
    exp = tmp_path / "results" / "sw"
    exp.mkdir(parents=True)
    (exp / "experiment_state-2026-01-02_00-00-00.json").write_text('{"trial_d')  # cut by the kill
    (exp / "tuner.pkl").write_bytes(b"\x80\x05K")  # cut pickle
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "raytmp"))
    staging = tmp_path / "raytmp" / "ray" / "session_1" / "artifacts" / "t" / "sw" / "driver_artifacts"
    staging.mkdir(parents=True)
    (staging / "experiment_state-2026-01-02_00-00-00.json").write_text("{}")
    planted = staging / "tuner.pkl"
    planted.write_bytes(b"\x80\x05K\x02.")
    planted.chmod(0o666)
    with pytest.raises(
        SweepStateError,
        match=r"tuner\.pkl is cut short.*1 copy ignored: not owned by you, "
        "writable by others",
    ):
        repair_experiment_state(exp, "sw")
    assert (exp / "tuner.pkl").read_bytes() == b"\x80\x05K"
    link = staging / "tuner.pkl"
    link.unlink()
    good = tmp_path / "elsewhere.pkl"
    good.write_bytes(b"\x80\x05K\x02.")
    link.symlink_to(good)  # a symlink is not followed either
    with pytest.raises(SweepStateError, match="ignored"):
        repair_experiment_state(exp, "sw")
    if os.getuid() == 0:  # root can make a file another user owns
        link.unlink()
        link.write_bytes(b"\x80\x05K\x02.")
        os.chown(link, 12345, 12345)
        with pytest.raises(SweepStateError, match="ignored"):
            repair_experiment_state(exp, "sw")
        os.chown(link, 0, 0)
        link.chmod(0o644)
        assert any(d.startswith("tuner.pkl") for d in repair_experiment_state(exp, "sw"))  # own: used
        assert (exp / "tuner.pkl").read_bytes() == b"\x80\x05K\x02."
