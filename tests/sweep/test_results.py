"""What a finished, interrupted or resumed sweep leaves (counterarg.sweep.results): a Ctrl-C'd sweep's
partial summary counts only finished seeds (the driver gets SIGINT, a user's Ctrl-C, while one trial
is mid-way), and ``--resume`` completes it with one wall time and a non-negative Ray overhead."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pandas as pd
import pytest

from .conftest import kill_process_group, reported_epochs, start_driver, tiny_sweep_args, trial_dirs, unique_name


def _hparams_sessions(trial_dir: Path) -> list:
    """Every HParams session a trial's event files hold (TensorBoard's own reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(trial_dir))
    acc.Reload()
    try:
        raw = acc.PluginTagToContent("hparams").get("_hparams_/session_start_info")
    except KeyError:  # no HParams in its event files at all
        return []
    return [] if raw is None else [plugin_data_pb2.HParamsPluginData.FromString(raw).session_start_info]


def _run(args, env, log_path: Path, interrupt=None, timeout: float = 420) -> int:
    """A sweep driver to its end; with ``interrupt`` (a condition), SIGINT to the driver once it holds."""
    import time

    with open(log_path, "w") as log:
        proc = start_driver(args, env, log)
        try:
            t0 = time.time()
            while interrupt is not None and not interrupt():
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.time() - t0 < timeout, "the sweep never reached the interrupt point"
                time.sleep(0.1)
            if interrupt is not None:
                proc.send_signal(signal.SIGINT)
            return proc.wait(timeout=timeout)
        finally:
            kill_process_group(proc)


@pytest.mark.slow
def test_a_ctrl_c_partial_summary_counts_finished_seeds_only_and_resume_completes_it(tiny, tmp_path):
    """Tune marks the trials a Ctrl-C stopped TERMINATED; the summary must not count them: the console
    and summary.md say ``1/2 (1 unfinished)``, bold nothing, never name an unfinished trial's
    checkpoint, leave the strategy out of every test, and summary.csv and the HParams rows say which
    trials finished. ``--resume`` then completes them, with the wall time and a non-negative Ray
    overhead over both sessions."""
    name = unique_name("ctrlc")
    exp = tmp_path / "results" / name
    epochs = 5
    args = tiny_sweep_args(tiny, tmp_path / "results", name, epochs, strategies="decay;fixed", seeds="0,1", num_cpus=2)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def mid_way() -> bool:  # one trial finished, another stopped between its first and last epoch
        eps = [max(reported_epochs(d), default=0) for d in trial_dirs(exp)]
        return epochs in eps and any(1 <= e <= epochs - 2 for e in eps)

    first = tmp_path / "first.log"
    assert _run(args, env, first, interrupt=mid_way) == 130, first.read_text()[-4000:]
    csv = pd.read_csv(exp / "summary.csv")
    unfinished = csv[~csv["finished"]]
    assert len(unfinished) >= 1 and set(unfinished["ended"]) <= {"interrupted", "waiting", "not started"}
    assert (unfinished["epochs_done"] < epochs).all() and csv["finished"].any()
    assert (csv[csv["finished"]]["epochs_done"] == epochs).all()
    md = (exp / "summary.md").read_text()
    n_done = int(csv["finished"].sum())
    assert f"> partial: {n_done} of 4 trials finished." in md
    cells = re.findall(r"\| (\d)/2 \((\d) unfinished\) \|", md)
    assert cells and all(int(n) + int(k) == 2 for n, k in cells), md
    assert "**" not in md, md  # no bold cell, no crowned strategy, nothing significant against the zero-shot encoder
    best = md.split("## Best checkpoint per strategy")[1].split("\n\n")[2]
    for tid in unfinished["trial_id"]:
        assert tid not in best, (tid, best)  # an unfinished trial is never a strategy's best checkpoint
    assert set(pd.read_csv(exp / "significance.csv")[["strategy_a", "strategy_b"]].stack()) <= {
        "zero-shot encoder"
    } | set(csv[csv["finished"]]["group"]) - set(unfinished["group"])  # partial strategies are tested against nothing
    out = first.read_text()
    assert re.search(r"\d/2 \(\d unfinished\)", out.split("[sweep] building the summary")[-1]), out[-3000:]
    for d in trial_dirs(exp):  # HParams: a finished trial's row says so; a stopped one has none yet
        tid = d.name.split("_")[1]
        sessions = _hparams_sessions(d)
        if tid in set(unfinished["trial_id"]):
            assert not sessions, d.name
        else:
            assert [_ended(s) for s in sessions] == ["epochs"], d.name  # one row, of a finished seed

    second = tmp_path / "second.log"
    assert _run([*args, "--resume"], env, second) == 0, second.read_text()[-4000:]
    csv = pd.read_csv(exp / "summary.csv")
    assert csv["finished"].all() and (csv["epochs_done"] == epochs).all() and set(csv["ended"]) == {"epochs"}
    assert (csv["ray_overhead"] >= 0).all(), csv[["trial_id", "train_s", "wall_s", "ray_overhead"]]
    md = (exp / "summary.md").read_text()
    assert "> partial:" not in md and "| 2/2 |" in md
    total = float(re.search(r"Sweep wall time: ([\d.]+) s", md).group(1))
    out = second.read_text()
    console = re.search(r"4 trials \(0 errored, 0 unfinished\) in ([\d.]+) min over 2 sessions", out)
    assert console and abs(float(console.group(1)) - total / 60) < 0.06, (out[-2000:], total)
    summary_onwards = out[out.index("[sweep] building the summary") :]
    assert "(trainable pid=" not in summary_onwards and "Restored on" not in out  # nothing from Ray after it
    for d in trial_dirs(exp):
        assert "epochs" in [_ended(s) for s in _hparams_sessions(d)], d.name


def _ended(session) -> str:
    """A trial's HParams row's ``ended`` value (the columns carry their rank: ``NN ended``, hparams_table)."""
    [key] = [k for k in session.hparams if k.split(" ", 1)[-1] == "ended"]
    return session.hparams[key].string_value
