"""Ray Tune sweeps: search spaces, trainable contract, errored trials, TensorBoard, kill + resume.

The sweep tests run the real ``train()`` on the demo corpus with a tiny random BERT.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from counterarg.config import FIELD_NAMES, Config, ConfigError
from counterarg.tune import (STRATEGIES, Sweep, VariantSearcher, grid, margin_lr_space,
                             parse_strategy, strategy, strategy_grid, trial_bundles)

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


# ----------------------------------------------------------------------------- search spaces
def test_default_grid_is_flat_config_fields():
    variants = strategy_grid()
    assert len(variants) == 9
    for v in variants:
        assert set(v) <= set(FIELD_NAMES)
        Config.from_dict(v)
    schedules = sorted({v["schedule"] for v in variants})
    assert schedules == ["decay", "fixed", "random"]
    assert {v["seed"] for v in variants} == {0, 1, 2}
    decay = next(v for v in variants if v["schedule"] == "decay")
    assert decay["rate_start"] == 0.8 and decay["rate_step"] == 0.02
    assert next(v for v in variants if v["schedule"] == "fixed")["rate"] == 0.8


def test_strategy_parsing_and_errors():
    assert parse_strategy("fixed:rate=0.5") == {"schedule": "fixed", "rate": 0.5}
    assert parse_strategy("random") == {"schedule": "random"}
    with pytest.raises(ConfigError):
        strategy("nope")
    with pytest.raises(ConfigError):
        parse_strategy("fixed:rat=0.5")  # typo fails loudly
    with pytest.raises(ValueError, match="more than one"):
        grid([{"seed": 1}], {"seed": [0, 1]})
    with pytest.raises(ConfigError):
        Sweep(name="x", base={"strategy": "fixed"}, variants=[{}])
    assert set(STRATEGIES) >= {"fixed", "decay", "random", "cosine", "step"}
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


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny random BERT and a feature-cache folder shared by the sweep tests."""
    from counterarg.testing import make_tiny_encoder

    root = tmp_path_factory.mktemp("tiny")
    return {"encoder": make_tiny_encoder(root / "bert"), "cache_dir": str(root / "cache")}


def _base(tiny, **kw):
    return {"encoder": tiny["encoder"], "cache_dir": tiny["cache_dir"], "corpus": None,
            "device": "cpu", "max_length": 32, **kw}


def _trial_dirs(exp: Path) -> list[Path]:
    return sorted(p for p in exp.glob("trial_*") if p.is_dir())


def _epochs(trial_dir: Path) -> list[int]:
    """Epochs reported to Tune, in order (result.json gets one line per report, resumes append)."""
    f = trial_dir / "result.json"
    if not f.exists():
        return []
    out = []
    for line in f.read_text().splitlines():
        try:
            out.append(int(json.loads(line)["epoch"]))
        except (ValueError, KeyError):
            pass  # a line cut by the kill
    return out


# ----------------------------------------------------------------------------- in-process sweep
@pytest.mark.slow
def test_sweep_errored_trial_summary_and_tensorboard(tiny, tmp_path):
    """Two good trials and one with a missing encoder: the sweep goes on, the error is reported,
    the summary is written, and TensorBoard event files hold per-task scalars and HParams."""
    import ray

    from counterarg.tune import run_sweep

    good = _base(tiny, epochs=2)
    variants = [{**good, "schedule": "fixed", "rate": 0.8, "seed": 0},
                {**good, "schedule": "random", "seed": 0},
                {**good, "schedule": "decay", "seed": 0, "encoder": str(tmp_path / "no-such-bert")}]
    sweep = Sweep(name="err", variants=variants)
    try:
        res = run_sweep(sweep, storage=tmp_path / "results", num_cpus=2, verbose=0)
    finally:
        ray.shutdown()
    status = {r.config["schedule"]: r.status for r in res.records}
    assert status == {"fixed": "TERMINATED", "random": "TERMINATED", "decay": "ERROR"}
    bad = next(r for r in res.records if r.status == "ERROR")
    assert "no-such-bert" in bad.error, bad.error
    exp = tmp_path / "results" / "err"
    for f in ("summary.csv", "summary.md", "validation_mean_acc1.png", "test_acc1_per_task.png"):
        assert (exp / f).stat().st_size > 0
    md = (exp / "summary.md").read_text()
    assert "ERROR" in md and "no-such-bert" in md and "Ray overhead" in md
    good_rows = [r for r in res.rows if r["status"] == "TERMINATED"]
    assert all(r["best_epoch"] in (1, 2) and r["train_s"] > 0 for r in good_rows)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trial = next(Path(r.path) for r in res.records if r.config["schedule"] == "fixed")
    acc = EventAccumulator(str(trial))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    # TensorBoard tag names cannot hold "@": tensorboardX writes acc@1 as acc_1.
    assert "ray/tune/test/sdoc/acc_1" in tags, tags[:10]
    assert [e.step for e in acc.Scalars("ray/tune/test/sdoc/acc_1")] == [1, 2]
    content = b"".join(acc.PluginTagToContent("hparams").values())
    assert b"schedule" in content and b"strategy" in content


# ----------------------------------------------------------------------------- kill + resume
def _driver(args, env, log):
    return subprocess.Popen([PY, str(REPO / "sweeps" / "compare_strategies.py"), *args], cwd=REPO,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_group(proc):
    """SIGKILL the driver's process group: Ray processes a killed local driver left behind."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_and_resume(args, exp: Path, epochs: int, env: dict, log_path: Path, n_trials: int,
                    kill_group_before_resume: bool = False, timeout: float = 240):
    """Start a driver, SIGKILL it once one trial finished and another is mid-way, resume to the
    end; check no finished trial reran and each unfinished trial lost at most one epoch."""
    with open(log_path, "w") as log:
        proc = _driver(args, env, log)
        try:
            t0 = time.time()
            while True:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.time() - t0 < timeout, "driver never reached the kill point"
                eps = {d.name: _epochs(d) for d in _trial_dirs(exp)}
                done = [k for k, e in eps.items() if e and max(e) == epochs]
                mid = [k for k, e in eps.items() if e and 2 <= max(e) < epochs - 2]
                if done and mid:
                    break
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)  # the driver only
            proc.wait()
            at_kill = {d.name: _epochs(d) for d in _trial_dirs(exp)}
        finally:
            if kill_group_before_resume or proc.poll() is None:
                _kill_group(proc)
    with open(log_path, "a") as log:
        proc2 = _driver([*args, "--resume"], env, log)
        try:
            assert proc2.wait(timeout=timeout) == 0, log_path.read_text()[-5000:]
        finally:
            _kill_group(proc2)
            _kill_group(proc)
    after = {d.name: _epochs(d) for d in _trial_dirs(exp)}
    assert len(after) == n_trials
    for name, eps in after.items():
        before = at_kill.get(name, [])
        assert max(eps) == epochs, (name, eps)
        if before and max(before) == epochs:
            assert eps == before, f"finished trial {name} reran: {before} -> {eps}"
        elif before:
            # rows after the kill restart at the epoch after the last checkpoint Tune kept:
            # at most one epoch is trained twice.
            resumed_from = eps[len(before)]
            assert resumed_from >= max(before), (name, before, eps)
            assert resumed_from > 1, f"{name} restarted from scratch: {eps}"
    summary = (exp / "summary.md").read_text()
    assert f"Trials: {n_trials} (0 errored, 0 unfinished)" in summary
    return at_kill, after


@pytest.mark.slow
def test_sigkill_driver_then_resume(tiny, tmp_path):
    epochs = 30  # demo epochs take ~0.2 s: a wide window to kill mid-trial
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = ["--storage", str(tmp_path / "results"), "--name", "kill",
            "--strategies", "fixed;random", "--seeds", "0", "--num-cpus", "1",
            "--encoder", tiny["encoder"], "--epochs", str(epochs),
            "--set", f"cache_dir={tiny['cache_dir']}", "--set", "device=cpu",
            "--set", "max_length=32"]
    kill_and_resume(args, tmp_path / "results" / "kill", epochs, env, tmp_path / "driver.log",
                    n_trials=2)


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
    exp = tmp_path / "results" / "sharded"
    args = ["--storage", str(tmp_path / "results"), "--name", "sharded", "--strategies", "fixed;random",
            "--seeds", "0", "--num-cpus", "2", "--encoder", tiny["encoder"], "--epochs", "3",
            "--set", f"cache_dir={tiny['cache_dir']}", "--set", "device=cpu", "--set", "max_length=32",
            "--set", "index=sharded-balltree", "--set", "shards=2"]
    with open(tmp_path / "driver.log", "w") as log:
        proc = _driver(args, {**os.environ, "PYTHONUNBUFFERED": "1"}, log)
        try:
            rc = proc.wait(timeout=240)
        finally:
            _kill_group(proc)
    assert rc == 0, (tmp_path / "driver.log").read_text()[-4000:]
    assert "Trials: 2 (0 errored, 0 unfinished)" in (exp / "summary.md").read_text()
    spans = []
    for d in _trial_dirs(exp):
        rows = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2, 3]
        spans.append((rows[0]["timestamp"] - rows[0]["time_this_iter_s"], rows[-1]["timestamp"]))
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, f"the two trials did not overlap in time: {spans}"
