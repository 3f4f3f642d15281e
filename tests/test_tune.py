"""Ray Tune sweeps: search spaces, trainable contract, errored trials, TensorBoard, kill + resume.

The sweep tests run the real ``train()`` on the demo corpus with a tiny random BERT.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from counterarg.config import FIELD_NAMES, REFERENCE_METHOD, Config, ConfigError
from counterarg.schedules import SCHEDULES
from counterarg.tune import (REFERENCE_FIELDS, TRAIN_TIME_FILE, Sweep, VariantSearcher, dedupe_epochs,
                             final_checkpoint_after, grid, margin_lr_space, parse_strategy, strategy,
                             strategy_grid, trial_bundles)

from conftest import (REPO, unique_name, kill_and_resume, kill_process_group, kill_when, reported_epochs, resume_to_end,
                      start_driver, sweep_base, trial_dirs)

PY = sys.executable


# ----------------------------------------------------------------------------- search spaces
def test_default_grid_is_flat_config_fields():
    variants = strategy_grid()
    assert len(variants) == 12  # the reference three and the default recipe, x 3 seeds
    for v in variants:
        assert set(v) <= set(FIELD_NAMES)
        Config.from_dict(v)
    schedules = sorted({v["schedule"] for v in variants})
    assert schedules == ["decay", "fixed", "random"]
    assert {v["seed"] for v in variants} == {0, 1, 2}
    decay = next(v for v in variants if v["schedule"] == "decay")
    assert decay["rate_start"] == 0.8 and decay["rate_step"] == 0.02
    assert sorted({v["rate"] for v in variants if v["schedule"] == "fixed"}) == [0.0, 0.8]  # recipe, reference
    assert {v["loss"] for v in variants} == {Config().loss, REFERENCE_METHOD["loss"]}


def test_strategy_parsing_and_errors():
    ref = {k: (list(v) if isinstance(v, tuple) else v) for k, v in REFERENCE_FIELDS.items()}
    assert ref["loss"] == REFERENCE_METHOD["loss"] and "schedule" not in ref and "epochs" not in ref
    assert parse_strategy("fixed:rate=0.5") == {**ref, "schedule": "fixed", "rate": 0.5}
    assert parse_strategy("random") == {**ref, "schedule": "random"}  # the schedules train the reference method
    recipe = parse_strategy("recipe")  # the default recipe: the same fields at their Config defaults
    defaults = Config().to_dict()
    assert set(ref) <= set(recipe) and all(recipe[k] == defaults[k] for k in recipe)
    assert recipe["schedule"] == defaults["schedule"] and recipe["loss"] == defaults["loss"]
    with pytest.raises(ConfigError):
        strategy("nope")
    with pytest.raises(ConfigError):
        parse_strategy("fixed:rat=0.5")  # typo fails loudly
    with pytest.raises(ValueError, match="more than one"):
        grid([{"seed": 1}], {"seed": [0, 1]})
    with pytest.raises(ConfigError):
        Sweep(name="x", base={"strategy": "fixed"}, variants=[{}])
    assert set(SCHEDULES) >= {"fixed", "decay", "random", "cosine", "step", "table"}
    assert parse_strategy("table:rate_table=0.8,0.6,0.4") == {**ref, "schedule": "table", "rate_table": [0.8, 0.6, 0.4]}
    space = margin_lr_space("fixed", seeds=(0, 1))
    assert set(space) <= set(FIELD_NAMES) and "margin" in space and "lr" in space


def test_placement_bundles():
    assert trial_bundles({"index": "exact"}, cpus=1) == [{"CPU": 1.0}]
    b = trial_bundles({"index": "sharded-balltree", "shards": 3}, cpus=1, gpus=0.5)
    assert len(b) == 4 and b[0]["GPU"] == 0.5
    assert b[0]["CPU"] == 0.5 and [x["CPU"] for x in b[1:]] == pytest.approx([1 / 6] * 3)
    assert sum(x["CPU"] for x in b) == pytest.approx(1.0)  # a sharded trial reserves what a plain one does


def test_variant_searcher_saves_position(tmp_path):
    s = VariantSearcher([{"seed": 0}, {"seed": 1}, {"seed": 2}])
    assert s.suggest("t1") == {"seed": 0}
    s.save(str(tmp_path / "state.json"))
    s2 = VariantSearcher([])
    s2.restore(str(tmp_path / "state.json"))
    assert s2.suggest("t2") == {"seed": 1} and s2.suggest("t3") == {"seed": 2}
    assert s2.suggest("t4") == VariantSearcher.FINISHED


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
    (trial / "checkpoint_000029" / TRAIN_TIME_FILE).write_text("{\"epo")  # a torn sidecar
    assert final_checkpoint_after(restored, 30) is None


def test_dedupe_epochs_keeps_the_last_report_of_each_epoch():
    rows = [{"epoch": 1, "v": 0.1}, {"epoch": 2, "v": 0.2}, {"epoch": 3, "v": 0.3},
            {"epoch": 3, "v": 0.35}, {"epoch": 4, "v": 0.4}]
    assert [(r["epoch"], r["v"]) for r in dedupe_epochs(rows)] == [(1, .1), (2, .2), (3, .35), (4, .4)]


# ----------------------------------------------------------------------------- in-process sweep
@pytest.mark.slow
def test_sweep_errored_trial_summary_and_tensorboard(tiny, tmp_path):
    """Two good trials and one with a missing encoder: the sweep goes on, the error is reported,
    the summary is written, and TensorBoard event files hold per-task scalars and HParams."""
    import ray

    from counterarg.tune import run_sweep

    good = sweep_base(tiny, epochs=2)
    variants = [{**good, "schedule": "fixed", "rate": 0.8, "seed": 0},
                {**good, "schedule": "random", "seed": 0},
                {**good, "schedule": "decay", "seed": 0, "encoder": str(tmp_path / "no-such-bert")}]
    sweep = Sweep(name=unique_name("err"), variants=variants)
    try:
        res = run_sweep(sweep, storage=tmp_path / "results", num_cpus=2, verbose=0)
    finally:
        ray.shutdown()
    status = {r.config["schedule"]: r.status for r in res.records}
    assert status == {"fixed": "TERMINATED", "random": "TERMINATED", "decay": "ERROR"}
    bad = next(r for r in res.records if r.status == "ERROR")
    assert "no-such-bert" in bad.error, bad.error
    exp = tmp_path / "results" / sweep.name
    import matplotlib.image as mpimg
    import pandas as pd

    csv = pd.read_csv(exp / "summary.csv")
    assert len(csv) == 3 and sorted(csv["status"]) == ["ERROR", "TERMINATED", "TERMINATED"]
    ok = csv[csv["status"] == "TERMINATED"]
    assert set(ok["best_epoch"]) <= {1, 2} and ok["test/sdoc/acc@1"].between(0, 1).all()
    assert ok["test_unseen/mean/acc@1"].notna().all() and ok["best_checkpoint"].str.endswith("/best").all()
    for png in ("validation_mean_acc1.png", "test_acc1_per_task.png"):
        img = mpimg.imread(exp / png)
        assert img.ndim == 3 and img.shape[0] > 300 and img.std() > 0.05, png  # a drawn figure, not blank
    md = (exp / "summary.md").read_text()
    assert "ERROR" in md and "no-such-bert" in md and "Ray overhead" in md
    # per-query ranks came back from the trials' checkpoints in storage, at their best epochs
    for r in res.records:
        if r.status == "TERMINATED":
            best = next(row["best_epoch"] for row in res.rows if row["trial_id"] == r.trial_id)
            assert int(r.ranks["epoch"]) == best and r.ranks["test/epa"].shape == r.ranks["test/unseen"].shape
    import pandas as pd

    sig = pd.read_csv(exp / "significance.csv")
    assert len(sig) == 9 * 2 and set(sig["view"]) == {"all", "unseen"}  # 2 strategies: 1 pair per task, view
    assert "## Unseen test queries" in md and "## Significance" in md
    good_rows = [r for r in res.rows if r["status"] == "TERMINATED"]
    assert all(r["best_epoch"] in (1, 2) and r["train_s"] > 0 for r in good_rows)
    # the best epoch's checkpoint is kept besides the latest and named; it evaluates to its own row
    from counterarg.cli import main as cli_main
    from counterarg.train import read_checkpoint

    for row in good_rows:
        ck = Path(row["best_checkpoint"])
        assert ck.name == "best", ck  # the mirrored best state, not one of Tune's rolling checkpoints
        run = ck.parent / "run"  # train()'s own files, mirrored beside the trial's checkpoints
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
        assert json.loads((run / "config.json").read_text())["epochs"] == 2
        assert read_checkpoint(ck)["epoch"] == row["best_epoch"], row
        out = tmp_path / f"{row['trial_id']}.json"
        assert cli_main(["evaluate", "--checkpoint", str(ck), "--split", "validation", "--json", str(out),
                         "--quiet"]) == 0
        import json as _json

        assert _json.loads(out.read_text())["validation/mean/acc@1"] == pytest.approx(row["validation/mean/acc@1"])
    assert "## Best checkpoint per strategy" in md

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trial = next(Path(r.path) for r in res.records if r.config["schedule"] == "fixed")
    acc = EventAccumulator(str(trial))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    # TensorBoard tag names cannot hold "@": tensorboardX writes acc@1 as acc_1.
    assert "ray/tune/test/sdoc/acc_1" in tags and "ray/tune/test_unseen/sdoc/acc_1" in tags, tags[:10]
    assert [e.step for e in acc.Scalars("ray/tune/test/sdoc/acc_1")] == [1, 2]
    # the HParams plugin data, parsed: the hparams of this trial's schedule and the best-epoch metrics
    from tensorboard.plugins.hparams import plugin_data_pb2

    data = {}
    for tag, raw in acc.PluginTagToContent("hparams").items():
        data[tag] = plugin_data_pb2.HParamsPluginData.FromString(raw)
    experiment = data["_hparams_/experiment"].experiment
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    assert {"best/validation/mean/acc_1", "best/test/mean/acc_1", "best/test_unseen/sdoc/acc_1"} <= metric_tags
    session = data["_hparams_/session_start_info"].session_start_info
    assert session.hparams["strategy"].string_value == "fixed 0.8"
    assert session.hparams["rate"].number_value == pytest.approx(0.8)
    assert "rate_start" not in session.hparams  # fields the trial's schedule does not read are left out
    best_row = next(r for r in res.rows if r["trial_id"] == next(
        x.trial_id for x in res.records if x.config["schedule"] == "fixed"))
    logged = acc.Scalars("best/test/mean/acc_1")
    assert logged[-1].value == pytest.approx(best_row["test/mean/acc@1"], abs=1e-6)
    assert logged[-1].step == best_row["best_epoch"]
    assert "fixed" in trial.name and "seed0" in trial.name  # TensorBoard run names tell curves apart


# ----------------------------------------------------------------------------- kill + resume
@pytest.mark.slow
def test_sigkill_driver_then_resume(tiny, tmp_path):
    epochs = 30  # demo epochs take ~0.2 s: a wide window to kill mid-trial
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    name = unique_name("kill")
    args = ["--storage", str(tmp_path / "results"), "--name", name,
            "--strategies", "fixed;random", "--seeds", "0", "--num-cpus", "1",
            "--encoder", tiny["encoder"], "--epochs", str(epochs),
            "--set", f"cache_dir={tiny['cache_dir']}", "--set", "device=cpu",
            "--set", "max_length=32"]
    kill_and_resume(args, tmp_path / "results" / name, epochs, env, tmp_path / "driver.log",
                    n_trials=2)


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
#: snapshot in storage short, as a kill during its copy does. argv: EPOCHS stale|torn SCRIPT ARGS...
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
        if mode == "torn":
            exp = Path(self._checkpoint_manager._storage.experiment_fs_path)
            state = max(exp.glob("experiment_state-*.json"))
            state.write_bytes(state.read_bytes()[:40])
        print("[test] driver killed with the snapshot held", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, force=force, wait=wait)


TuneController.checkpoint = checkpoint
sys.argv = [script, *sys.argv[4:]]
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stale", "torn"])
def test_trial_finished_before_the_snapshot_is_not_rerun(tiny, tmp_path, mode):
    """The driver dies after a trial's last epoch (its final checkpoint stored) but before the
    experiment-state snapshot says so; no race: the snapshot is held by a hook in the driver.

    ``stale``: the state in storage holds the trial RUNNING at epoch 2; ``torn``: it is cut short
    and the resume repairs it from the driver's staging copy (the same epoch-2 state). Either way
    the finished trial trains nothing on resume and each of its epochs is logged once, and the
    other trial (not started at the kill: one CPU) runs to the end.
    """
    epochs = 3
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TUNE_GLOBAL_CHECKPOINT_S": "3600"}
    name = unique_name("late")
    exp = tmp_path / "results" / name
    args = ["--storage", str(tmp_path / "results"), "--name", name,
            "--strategies", "fixed;random", "--seeds", "0", "--num-cpus", "1",
            "--encoder", tiny["encoder"], "--epochs", str(epochs),
            "--set", f"cache_dir={tiny['cache_dir']}", "--set", "device=cpu",
            "--set", "max_length=32"]
    log_path = tmp_path / "driver.log"
    hook = tmp_path / "hold_snapshot.py"
    hook.write_text(HOLD_SNAPSHOT)
    with open(log_path, "w") as log:
        killed = subprocess.Popen([PY, str(hook), str(epochs), mode, str(REPO / "sweeps" / "compare_strategies.py"),
                                   *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
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
    assert ("[sweep] repaired experiment_state-" in log) == (mode == "torn"), log[-3000:]
    assert len(after) == 2 and all(eps == [1, 2, 3] for eps in after.values()), after
    assert "Trials: 2 (0 errored, 0 unfinished)" in (exp / "summary.md").read_text()


def test_repair_experiment_state_from_the_drivers_staging_copy(tmp_path, monkeypatch):
    from counterarg.tune import SweepStateError, repair_experiment_state

    exp = tmp_path / "results" / "sw"
    exp.mkdir(parents=True)
    whole = json.dumps({"trial_data": [], "runner_data": {}, "stats": {}})
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text(whole)  # an older session
    (exp / "experiment_state-2026-01-02_00-00-00.json").write_text(whole[:17])  # cut by the kill
    (exp / "searcher-state-2026-01-02_00-00-00.pkl").write_bytes(b"\x80\x05K\x01.")  # pickle of 1
    (exp / "search_gen_state-2026-01-02_00-00-00.json").write_bytes(b"\x80\x05K")  # a cut pickle
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "raytmp"))
    with pytest.raises(SweepStateError, match="experiment_state-2026-01-02_00-00-00.json is cut "
                       "short.*experiment_state-2026-01-01_00-00-00.json"):
        repair_experiment_state(exp, "sw")
    assert (exp / "experiment_state-2026-01-02_00-00-00.json").read_text() == whole[:17]  # untouched
    staging = tmp_path / "raytmp" / "ray" / "session_1" / "artifacts" / "t" / "sw" / "driver_artifacts"
    staging.mkdir(parents=True)
    (staging / "experiment_state-2026-01-02_00-00-00.json").write_text(whole)
    (staging / "search_gen_state-2026-01-02_00-00-00.json").write_bytes(b"\x80\x05K\x02.")
    done = repair_experiment_state(exp, "sw")
    assert len(done) == 2 and sorted(d.split(" ")[0] for d in done) == [
        "experiment_state-2026-01-02_00-00-00.json", "search_gen_state-2026-01-02_00-00-00.json"]
    assert (exp / "search_gen_state-2026-01-02_00-00-00.json").read_bytes() == b"\x80\x05K\x02."
    assert (exp / "searcher-state-2026-01-02_00-00-00.pkl").read_bytes() == b"\x80\x05K\x01."
    assert (exp / "experiment_state-2026-01-02_00-00-00.json").read_text() == whole
    assert (exp / "experiment_state-2026-01-02_00-00-00.json.torn").read_text() == whole[:17]
    assert repair_experiment_state(exp, "sw") == []  # whole now: nothing to do


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    from counterarg.tune import absolute_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "enc").mkdir()
    got = absolute_paths({"corpus": "data/c.zip", "cache_dir": "~/cache", "encoder": "enc", "epochs": 3})
    assert got["corpus"] == str(tmp_path / "data" / "c.zip")
    assert got["cache_dir"].startswith("/") and "~" not in got["cache_dir"]
    assert got["encoder"] == str(tmp_path / "enc") and got["epochs"] == 3
    assert absolute_paths({"encoder": "bert-base-uncased"})["encoder"] == "bert-base-uncased"
    assert absolute_paths({"corpus": None})["corpus"] is None


@pytest.mark.slow
def test_two_sharded_trials_run_side_by_side_on_two_cpus(tiny, tmp_path):
    """index=sharded-balltree, shards=2: two trials, each with 2 shard actors, on a 2-CPU Ray."""
    name = unique_name("sharded")
    exp = tmp_path / "results" / name
    args = ["--storage", str(tmp_path / "results"), "--name", name, "--strategies", "fixed;random",
            "--seeds", "0", "--num-cpus", "2", "--encoder", tiny["encoder"], "--epochs", "3",
            "--set", f"cache_dir={tiny['cache_dir']}", "--set", "device=cpu", "--set", "max_length=32",
            "--set", "index=sharded-balltree", "--set", "shards=2"]
    with open(tmp_path / "driver.log", "w") as log:
        proc = start_driver(args, {**os.environ, "PYTHONUNBUFFERED": "1"}, log)
        try:
            rc = proc.wait(timeout=240)
        finally:
            kill_process_group(proc)
    assert rc == 0, (tmp_path / "driver.log").read_text()[-4000:]
    assert "Trials: 2 (0 errored, 0 unfinished)" in (exp / "summary.md").read_text()
    # the driver staged its state under this test's own Ray temp root (conftest._own_ray_temp)
    assert list(Path(os.environ["RAY_TMPDIR"]).glob(f"ray/session_*/artifacts/*/{name}/driver_artifacts"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spans = []
    for d in trial_dirs(exp):
        rows = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2, 3]
        # result.json's timestamps are whole seconds; TensorBoard's wall times are floats
        acc = EventAccumulator(str(d))
        acc.Reload()
        iters = acc.Scalars("ray/tune/time_this_iter_s")
        assert [e.step for e in iters] == [1, 2, 3]
        spans.append((iters[0].wall_time - iters[0].value, iters[-1].wall_time))
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, f"the two trials did not overlap in time: {spans}"


# ----------------------------------------------------------------------------- sweep flags and folders
def _script(name: str):
    """A sweep script's ``main`` (sweeps/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"sweep_{name}", REPO / "sweeps" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


@pytest.mark.parametrize("script, flags, match", [
    ("search_margin_lr", ["--num-samples", "-1"], "--num-samples: must be between 1 and 1000, got -1"),
    ("search_margin_lr", ["--num-samples", "0"], "--num-samples: must be between 1 and 1000, got 0"),
    ("search_margin_lr", ["--num-samples", "100000"], "must be between 1 and 1000"),
    ("search_margin_lr", ["--epochs", "0"], "--epochs: must be >= 1, got 0"),
    ("search_margin_lr", ["--cpus-per-trial", "0"], "--cpus-per-trial: must be a finite number >= 1"),
    ("search_margin_lr", ["--num-cpus", "2", "--cpus-per-trial", "64"], "64 is more than the 2 CPU"),
    ("search_margin_lr", ["--margin-range", "3,0.1"], "--margin-range: expected 0 < LO < HI"),
    ("search_margin_lr", ["--lr-range", "0,0.1"], "--lr-range: expected 0 < LO < HI"),
    ("search_margin_lr", ["--seeds", "a,b"], "got 'a' in 'a,b'"),
    ("search_margin_lr", ["--strategy", "decy"], "unknown strategy 'decy'; did you mean 'decay'"),
    ("search_margin_lr", ["--set", "foo=1"], "unknown config field.*foo"),
    ("compare_strategies", ["--strategies", "fixed;decy"], "did you mean 'decay'"),
    ("compare_strategies", ["--seeds", "0,x"], "got 'x'"),
    ("compare_strategies", ["--epochs", "0"], "must be >= 1"),
    ("compare_strategies", ["--resume"], "nothing to resume at"),
])
def test_sweep_flags_fail_with_a_named_error_and_exit_2(script, flags, match, tmp_path, capsys):
    """Finding 5/8/9: bad sweep flags stop before any work, exit 2, no traceback; --resume with
    nothing to resume is an error, not a silent fresh start."""
    with pytest.raises(SystemExit) as e:
        _script(script)(["--storage", str(tmp_path), "--name", "x", *flags])
    assert e.value.code == 2
    err = capsys.readouterr().err
    import re

    assert re.search(match, err), err
    assert "Traceback" not in err and not (tmp_path / "x").exists()


def test_sweep_with_errored_trials_exits_non_zero_and_names_them(monkeypatch, tmp_path, capsys):
    """Finding 9: a sweep whose trials errored exited 0."""
    import counterarg.tune as tune_mod
    from counterarg.summary import TrialRecord
    from counterarg.tune import SweepResult

    records = [TrialRecord("trial_ok", {"seed": 0}, status="TERMINATED"),
               TrialRecord("trial_bad", {"seed": 1}, status="ERROR", error="TrainingError: loss is nan")]
    monkeypatch.setattr(tune_mod, "run_sweep", lambda *a, **k: SweepResult("x", tmp_path, records, [], "table", 1.0))
    assert _script("compare_strategies")(["--storage", str(tmp_path), "--seeds", "0"]) == 1
    err = capsys.readouterr().err
    assert "trial_bad: TrainingError: loss is nan" in err and "trial_ok" not in err
    records[1].status = "TERMINATED"
    assert _script("compare_strategies")(["--storage", str(tmp_path), "--seeds", "0"]) == 0


def test_second_sweep_with_the_same_name_gets_a_named_error(tmp_path, capsys):
    """Finding 4: two sweeps with the same --name both ran; the second now stops at once."""
    from counterarg.io import exclusive_lock

    with exclusive_lock(tmp_path / ".x.lock", "first driver"):
        with pytest.raises(SystemExit) as e:
            _script("compare_strategies")(["--storage", str(tmp_path), "--name", "x", "--seeds", "0"])
    assert e.value.code == 2
    assert f"sweep folder {tmp_path / 'x'} is in use by another process" in capsys.readouterr().err


def test_repair_ignores_state_copies_others_could_have_planted(tmp_path, monkeypatch):
    """Finding 7: a staging copy writable by others (or owned by another user) is never used."""
    from counterarg.tune import SweepStateError, repair_experiment_state

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
    with pytest.raises(SweepStateError, match=r"tuner\.pkl is cut short.*1 copy ignored: not owned by you, "
                                              "writable by others"):
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


def test_smoke_encoder_folder_is_per_user_and_checked(tmp_path):
    """Finding 9: /tmp/counterarg-smoke-encoder was shared and reused without a check."""
    import argparse

    from counterarg.tune import base_from_args, smoke_encoder_dir

    assert smoke_encoder_dir().name == f"counterarg-smoke-encoder-{os.getuid()}"
    args = argparse.Namespace(smoke_test=True, corpus=None, encoder=None, epochs=None, overrides=[])
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ConfigError, match="not a folder owned by you and writable only by you"):
        base_from_args(args, smoke_dir=shared)
    own = tmp_path / "own"
    assert base_from_args(args, smoke_dir=own)["encoder"] == str(own)
    assert (own.stat().st_mode & 0o777) == 0o700
    weights = next(own.glob("*.safetensors"))
    weights.write_bytes(b"changed since")  # reused only when its files match their manifest
    base_from_args(args, smoke_dir=own)
    assert weights.stat().st_size > 1000


@pytest.mark.slow
def test_local_ray_listens_on_loopback_only():
    """Finding 9: GCS and raylet of a purely local sweep listened on every interface."""
    import ray

    from counterarg.tune import init_ray

    if ray.is_initialized():
        ray.shutdown()
    init_ray(None, num_cpus=1)
    try:
        node = ray._private.worker._global_node
        assert node.node_ip_address == "127.0.0.1"
        pids = {p.process.pid for procs in node.all_processes.values() for p in procs}
        out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
        ours = [ln for ln in out.splitlines() if any(f"pid={pid}," in ln for pid in pids)]
        assert ours, out
        for ln in ours:
            local = ln.split()[3]
            assert local.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"), ln
    finally:
        ray.shutdown()


def test_user_sweeps_get_their_own_folder_and_resume_finds_the_newest(tmp_path, capsys):
    from argparse import Namespace

    from counterarg.tune import SweepStateError, sweep_name

    args = Namespace(name=None, smoke_test=False, resume=False, storage=str(tmp_path))
    name = sweep_name(args, "compare_strategies")
    assert name.startswith("compare_strategies_20") and name != "compare_strategies"  # never the reference
    assert sweep_name(Namespace(**{**vars(args), "smoke_test": True}), "compare_strategies").startswith(
        "compare_strategies_smoke_20")
    assert sweep_name(Namespace(**{**vars(args), "name": "mine"}), "compare_strategies") == "mine"
    with pytest.raises(SweepStateError, match="no earlier compare_strategies_<date> sweep"):
        sweep_name(Namespace(**{**vars(args), "resume": True}), "compare_strategies")
    for n in ("compare_strategies_2026-01-01_00-00-00", "compare_strategies_2026-02-01_00-00-00",
              "compare_strategies_smoke_2026-03-01_00-00-00"):
        (tmp_path / n).mkdir()
    assert sweep_name(Namespace(**{**vars(args), "resume": True}), "compare_strategies") == \
        "compare_strategies_2026-02-01_00-00-00"
    assert "resuming the newest" in capsys.readouterr().out


@pytest.mark.slow
def test_more_gpus_per_trial_than_there_are_is_refused(tmp_path, capsys):
    """Finding 5: a trial asking for resources that do not exist would wait forever."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    try:
        with pytest.raises(SystemExit) as e:
            _script("compare_strategies")(["--storage", str(tmp_path), "--name", "x", "--seeds", "0",
                                           "--num-cpus", "1", "--gpus-per-trial", "64"])
        assert e.value.code == 2
        assert "--gpus-per-trial 64 is more than the" in capsys.readouterr().err
    finally:
        ray.shutdown()


def test_gpu_fractions_pack_two_trials_on_one_gpu_and_fall_back_to_cpu(tmp_path):
    """A CPU-only Ray cluster declared with one logical GPU: with --gpus-per-trial 0.5 two trials run
    at once on the same GPU, each holding half of it, and device=auto trains on the CPU there."""
    import ray
    import torch
    from ray import tune
    from ray.tune import RunConfig

    from counterarg.tune import REPO_ROOT, trial_resources

    def probe(config):
        import time as _time
        from pathlib import Path as _Path

        import ray as _ray
        from ray import tune as _tune

        from counterarg.model import pick_device

        folder = _Path(config["folder"])
        (folder / f"{config['i']}.start").write_text("")
        deadline = _time.time() + 120
        while len(list(folder.glob("*.start"))) < 2 and _time.time() < deadline:  # wait for the other trial
            _time.sleep(0.05)
        bundles = _tune.get_context().get_trial_resources().bundles
        _tune.report({"gpu": sum(b.get("GPU", 0) for b in bundles), "gpu_ids": [str(g) for g in _ray.get_gpu_ids()],
                      "both_running": len(list(folder.glob("*.start"))) == 2, "device": str(pick_device("auto"))})

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    try:
        (tmp_path / "marks").mkdir()
        tuner = tune.Tuner(tune.with_resources(probe, trial_resources(cpus=1, gpus=0.5)),
                           param_space={"i": tune.grid_search([0, 1]), "folder": str(tmp_path / "marks")},
                           run_config=RunConfig(storage_path=str(tmp_path / "store"), verbose=0))
        results = [r.metrics for r in tuner.fit()]
    finally:
        ray.shutdown()
    assert len(results) == 2
    for m in results:
        assert m["gpu"] == 0.5 and m["gpu_ids"] == ["0"], m  # half of the one GPU each
        assert m["both_running"], "the two trials did not run at the same time"
        if not torch.cuda.is_available():
            assert m["device"] == "cpu", m  # a logical GPU without CUDA: device=auto trains on the CPU


# ----------------------------------------------------------------------------- ASHA, existing folders, errored trials
def _result_epochs(res_path) -> list[int]:
    return reported_epochs(Path(res_path))


@pytest.mark.slow
def test_asha_margin_lr_search_stops_weak_trials_early(tiny, tmp_path):
    """The margin/lr search under ASHA (grace 2, reduction 2, max_t 4): the trial that learns runs
    first and to the end; the two whose lr is too small to move the heads score below it at the
    epoch-2 rung and are stopped there. All three count as finished, and the summary lists them."""
    import pandas as pd
    import ray
    from ray import tune

    from counterarg.tune import run_sweep

    space = margin_lr_space("fixed", margin=(0.5, 0.5000001))
    space["lr"] = tune.grid_search([3e-3, 1e-9, 1e-9])  # in this order: the learner first
    sweep = Sweep(name=unique_name("asha"), base=sweep_base(tiny, epochs=4), param_space=space, num_samples=1, scheduler="asha")
    try:
        res = run_sweep(sweep, storage=tmp_path / "results", num_cpus=1, verbose=0)
    finally:
        ray.shutdown()
    by_lr = sorted(res.records, key=lambda r: -r.config["lr"])
    assert [r.status for r in by_lr] == ["TERMINATED"] * 3, [(r.status, r.error) for r in by_lr]
    assert [len(r.history) for r in by_lr] == [4, 2, 2], [(r.config["lr"], len(r.history)) for r in by_lr]
    assert all(_result_epochs(r.path) == [1, 2, 3, 4][:len(r.history)] for r in by_lr)
    csv = pd.read_csv(tmp_path / "results" / sweep.name / "summary.csv")
    assert len(csv) == 3 and set(csv["status"]) == {"TERMINATED"}
    assert "Trials: 3 (0 errored, 0 unfinished)" in (tmp_path / "results" / sweep.name / "summary.md").read_text()


@pytest.mark.slow
def test_existing_sweep_is_refused_and_errored_trials_restart_on_resume(tiny, tmp_path, capsys):
    """A trial whose encoder is missing errors; starting the sweep again without --resume is refused
    before anything runs; once the encoder exists, --resume reruns only the errored trial, to the end."""
    import ray

    from counterarg.testing import make_tiny_encoder
    from counterarg.tune import run_sweep

    later = tmp_path / "later-bert"
    variants = [{**sweep_base(tiny, epochs=2), "schedule": "fixed", "rate": 0.8, "seed": 0},
                {**sweep_base(tiny, epochs=2), "schedule": "random", "seed": 0, "encoder": str(later)}]
    sweep = Sweep(name=unique_name("again"), variants=variants)
    storage = tmp_path / "results"
    exp = storage / sweep.name
    try:
        first = run_sweep(sweep, storage=storage, num_cpus=1, verbose=0)
    finally:
        ray.shutdown()
    assert sorted(r.status for r in first.records) == ["ERROR", "TERMINATED"]
    good = next(Path(r.path).name for r in first.records if r.status == "TERMINATED")
    bad = next(Path(r.path).name for r in first.records if r.status == "ERROR")
    assert str(later) in next(r.error for r in first.records if r.status == "ERROR")
    state = sorted(p.name for p in exp.iterdir())
    with pytest.raises(FileExistsError, match="already holds an experiment; pass --resume"):
        run_sweep(sweep, storage=storage, num_cpus=1, verbose=0)
    with pytest.raises(SystemExit) as e:  # the script: exit 2, named error, nothing started
        _script("compare_strategies")(["--storage", str(storage), "--name", sweep.name, "--seeds", "0",
                                       "--encoder", tiny["encoder"]])
    assert e.value.code == 2 and "already holds an experiment" in capsys.readouterr().err
    assert not ray.is_initialized() and sorted(p.name for p in exp.iterdir()) == state
    make_tiny_encoder(later)
    try:
        second = run_sweep(sweep, storage=storage, num_cpus=1, resume=True, verbose=0)
    finally:
        ray.shutdown()
    assert [r.status for r in second.records] == ["TERMINATED", "TERMINATED"], [r.error for r in second.records]
    assert reported_epochs(exp / good) == [1, 2], "the finished trial was not run again"
    redone = next(r for r in second.records if r.config["schedule"] == "random")
    assert reported_epochs(Path(redone.path)) == [1, 2] and redone.history[-1]["epoch"] == 2
    assert (exp / bad / "error.txt").exists()  # Tune restarts an errored trial under a new id and folder
    assert "Trials: 2 (0 errored, 0 unfinished)" in (exp / "summary.md").read_text()


def test_a_trial_that_never_started_keeps_its_strategy_in_the_summary():
    """After Ctrl-C, Tune's result for a trial that never started has no config; its strategy comes
    from Tune's trial list (not the Config defaults), and the sweep's shared fields from ``base``."""
    from types import SimpleNamespace as NS

    from counterarg.tune import collect_records

    variant = {**REFERENCE_FIELDS, "schedule": "random", "seed": 0}
    res = NS(config=None, path="/x/exp/trial_ab12_random_seed0", metrics_dataframe=None, error=None, metrics={},
             filesystem=None, best_checkpoints=[], checkpoint=None)

    class Grid(list):
        _experiment_analysis = NS(trials=[NS(trial_id="ab12", config=variant)])

    rec, = collect_records(Grid([res]), base={"epochs": 7})
    assert rec.config["schedule"] == "random" and rec.config["loss"] == REFERENCE_METHOD["loss"]
    assert rec.config["epochs"] == 7 and rec.status == "UNFINISHED" and rec.history == []
