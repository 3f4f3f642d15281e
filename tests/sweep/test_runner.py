"""Running sweeps (counterarg.sweep.runner): errored trials, the summary and TensorBoard, sharded
trials side by side, local Ray on loopback, ASHA, refused and resumed sweeps, and a real two-node
Ray cluster on this machine (file:// storage, the driver SIGKILLed mid-sweep and restored from a new
driver; nodes and drivers with token authentication, as the README's cluster recipe does).

The sweep tests run the real ``train()`` on the demo corpus with a tiny random BERT.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from counterarg.sweep.runner import Sweep, init_ray, run_sweep
from counterarg.sweep.spaces import margin_lr_space
from counterarg.sweep.trainable import NODE_KEY

from .conftest import (
    kill_and_resume,
    kill_process_group,
    reported_epochs,
    start_driver,
    sweep_base,
    sweep_script,
    tiny_sweep_args,
    trial_dirs,
    unique_name,
)


@pytest.mark.slow
def test_sweep_errored_trial_summary_and_tensorboard(tiny, tmp_path):
    """Two good trials and one with a missing encoder: the sweep goes on, the error is reported,
    the summary is written, and TensorBoard event files hold per-task scalars and HParams."""
    import ray

    from counterarg.analysis.methods import labelled

    good = sweep_base(tiny, epochs=2)
    variants = [
        labelled({**good, "schedule": "fixed", "rate": 0.8, "seed": 0}, "recipe"),  # named as the grid names
        labelled({**good, "schedule": "random", "seed": 0}, "recipe"),
        labelled({**good, "schedule": "decay", "seed": 0, "encoder": str(tmp_path / "no-such-bert")}, "recipe"),
    ]
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
    assert ok["test_unseen/mean/acc@1"].notna().all() and ok["best_checkpoint"].str.endswith("/best").all()
    for r in res.records:  # each CSV row is its trial's best epoch (by the select metric; a tie: the first)
        if r.status == "TERMINATED":
            metric = r.config["select_metric"]
            top = max(r.history, key=lambda h: (h[metric], -h["epoch"]))
            row = csv[csv["trial_id"] == r.trial_id].iloc[0]
            assert row["best_epoch"] == top["epoch"] and len(r.history) == 2
            assert row["test/sdoc/acc@1"] == pytest.approx(top["test/sdoc/acc@1"])
            assert row[metric] == pytest.approx(top[metric])
    for png in ("validation_mean_acc1.png", "test_acc1_per_task.png"):
        img = mpimg.imread(exp / png)
        assert img.ndim == 3 and img.shape[0] > 300 and img.std() > 0.05, png  # a drawn figure, not blank
    from counterarg.analysis.plots import read_plot_data

    curves = read_plot_data(exp / "validation_mean_acc1.png")["curves"]  # one curve per group that finished
    assert sorted(curves) == sorted(ok["group"]) and all(c["epochs"] == [1, 2] for c in curves.values())
    for r in res.records:
        if r.status == "TERMINATED":
            label = csv[csv["trial_id"] == r.trial_id].iloc[0]["group"]
            assert curves[label]["mean"] == pytest.approx([h[r.config["select_metric"]] for h in r.history])
    bars = read_plot_data(exp / "test_acc1_per_task.png")["all"]
    for _, row in ok.iterrows():
        assert bars[row["group"]]["test/epa/acc@1"][0] == pytest.approx(row["test/epa/acc@1"])
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
    assert "## Unseen test queries" in md and "## Which strategy trains the better model" in md
    assert "> partial: 2 of 3 trials finished" in md and "no verdict (partial sweep)" in md  # decay errored
    good_rows = [r for r in res.rows if r["status"] == "TERMINATED"]
    assert all(r["best_epoch"] in (1, 2) and r["train_s"] > 0 for r in good_rows)
    # the best epoch's checkpoint is kept besides the latest and named; it evaluates to its own row
    from counterarg.cli import main as cli_main
    from counterarg.model.checkpoint import read_checkpoint

    for row in good_rows:
        ck = Path(row["best_checkpoint"])
        assert ck.name == "best", ck  # the mirrored best state, not one of Tune's rolling checkpoints
        run = ck.parent / "run"  # train()'s own files, mirrored beside the trial's checkpoints
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
        assert json.loads((run / "config.json").read_text())["epochs"] == 2
        assert read_checkpoint(ck)["epoch"] == row["best_epoch"], row
        out = tmp_path / f"{row['trial_id']}.json"
        assert (
            cli_main(["evaluate", "--checkpoint", str(ck), "--split", "validation", "--json", str(out), "--quiet"]) == 0
        )
        import json as _json

        assert _json.loads(out.read_text())["validation/mean/acc@1"] == pytest.approx(row["validation/mean/acc@1"])
    assert "## Best checkpoint per strategy" in md

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trial = next(Path(r.path) for r in res.records if r.config["schedule"] == "fixed")
    acc = EventAccumulator(str(trial))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    # the metrics' own names (TensorBoard tags cannot hold "@": acc@1 is written acc_1), no ray/tune/ prefix
    assert "test/sdoc/acc_1" in tags and "test_unseen/sdoc/acc_1" in tags, tags[:10]
    assert not [t for t in tags if t.startswith("ray/")] and "training_iteration" not in tags
    assert [e.step for e in acc.Scalars("test/sdoc/acc_1")] == [1, 2]
    # the HParams plugin data, parsed: the sweep's columns in every trial's run, none at the root
    from tensorboard.plugins.hparams import plugin_data_pb2

    data = {
        tag: plugin_data_pb2.HParamsPluginData.FromString(raw) for tag, raw in acc.PluginTagToContent("hparams").items()
    }
    assert not list(exp.glob("events.out.tfevents.*"))  # no "." run
    experiment = data["_hparams_/experiment"].experiment
    columns = [h.display_name for h in experiment.hparam_infos]
    assert columns[:5] == ["method", "strategy", "seed", "schedule", "rate"], columns
    metric_tags = [m.name.tag for m in experiment.metric_infos]
    assert metric_tags[:2] == ["selected/validation_unseen/mean/acc_1", "selected/test_unseen/mean/acc_1"]
    session = data["_hparams_/session_start_info"].session_start_info
    assert session.hparams["02 strategy"].string_value == "fixed 0.8"  # summary.csv's strategy column
    assert session.hparams["01 method"].string_value == "recipe"
    assert session.group_name == trial.name.split("_")[1]  # the Trial ID column: the short id, in full
    assert trial.name.endswith("_recipe-fixed-0.8_seed0"), trial.name  # trial_<id>_<name>_seed<N>
    assert session.hparams["05 rate"].number_value == pytest.approx(0.8)
    assert "06 rate_start" not in session.hparams  # fields the trial's schedule does not read are left out
    from tensorboard.plugins.hparams import api_pb2

    assert data["_hparams_/session_end_info"].session_end_info.status == api_pb2.STATUS_SUCCESS  # a finished seed
    best_row = next(
        r for r in res.rows if r["trial_id"] == next(x.trial_id for x in res.records if x.config["schedule"] == "fixed")
    )
    logged = acc.Scalars("selected/test/mean/acc_1")
    assert logged[-1].value == pytest.approx(best_row["test/mean/acc@1"], abs=1e-6)
    assert logged[-1].step == best_row["best_epoch"]
    assert "fixed" in trial.name and "seed0" in trial.name  # TensorBoard run names tell curves apart


@pytest.mark.slow
def test_two_sharded_trials_run_side_by_side_on_two_cpus(tiny, tmp_path):
    """index=sharded-balltree, shards=2: two trials, each with 2 shard actors, on a 2-CPU Ray."""
    name = unique_name("sharded")
    exp = tmp_path / "results" / name
    args = tiny_sweep_args(tiny, tmp_path / "results", name, 3, num_cpus=2, sets=("index=sharded-balltree", "shards=2"))
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
        iters = acc.Scalars("time/epoch_s")
        assert [e.step for e in iters] == [1, 2, 3]
        spans.append((iters[0].wall_time - iters[0].value, iters[-1].wall_time))
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, f"the two trials did not overlap in time: {spans}"


@pytest.mark.slow
def test_local_ray_listens_on_loopback_only():
    """GCS and raylet of a purely local sweep listened on every interface."""
    import ray

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


@pytest.mark.slow
def test_more_gpus_per_trial_than_there_are_is_refused(tmp_path, capsys):
    """A trial asking for resources that do not exist would wait forever."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    try:
        with pytest.raises(SystemExit) as e:
            sweep_script("compare_strategies")(
                ["--storage", str(tmp_path), "--name", "x", "--seeds", "0", "--num-cpus", "1", "--gpus-per-trial", "64"]
            )
        assert e.value.code == 2
        assert "--gpus-per-trial 64 is more than the" in capsys.readouterr().err
    finally:
        ray.shutdown()


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

    space = margin_lr_space("fixed", margin=(0.5, 0.5000001))
    space["lr"] = tune.grid_search([3e-3, 1e-9, 1e-9])  # in this order: the learner first
    sweep = Sweep(
        name=unique_name("asha"), base=sweep_base(tiny, epochs=4), param_space=space, num_samples=1, scheduler="asha"
    )
    try:
        res = run_sweep(sweep, storage=tmp_path / "results", num_cpus=1, verbose=0)
    finally:
        ray.shutdown()
    by_lr = sorted(res.records, key=lambda r: -r.config["lr"])
    assert [r.status for r in by_lr] == ["TERMINATED"] * 3, [(r.status, r.error) for r in by_lr]
    assert [len(r.history) for r in by_lr] == [4, 2, 2], [(r.config["lr"], len(r.history)) for r in by_lr]
    assert all(_result_epochs(r.path) == [1, 2, 3, 4][: len(r.history)] for r in by_lr)
    csv = pd.read_csv(tmp_path / "results" / sweep.name / "summary.csv")
    assert len(csv) == 3 and set(csv["status"]) == {"TERMINATED"}
    assert "Trials: 3 (0 errored, 0 unfinished)" in (tmp_path / "results" / sweep.name / "summary.md").read_text()


@pytest.mark.slow
def test_existing_sweep_is_refused_and_errored_trials_run_again_on_resume(tiny, tmp_path, capsys):
    """A trial whose encoder is missing errors; starting the sweep again without --resume is refused
    before anything runs; once the encoder exists, --resume runs only the errored trial, under its own id
    and folder (it had no checkpoint: from its first epoch), to the end."""
    import ray

    from counterarg.nn.testing import make_tiny_encoder

    later = tmp_path / "later-bert"
    variants = [
        {**sweep_base(tiny, epochs=2), "schedule": "fixed", "rate": 0.8, "seed": 0},
        {**sweep_base(tiny, epochs=2), "schedule": "random", "seed": 0, "encoder": str(later)},
    ]
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
        sweep_script("compare_strategies")(
            ["--storage", str(storage), "--name", sweep.name, "--seeds", "0", "--encoder", tiny["encoder"]]
        )
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
    assert Path(redone.path).name == bad and (exp / bad / "error.txt").exists()  # resumed, not restarted anew
    assert "Trials: 2 (0 errored, 0 unfinished)" in (exp / "summary.md").read_text()


# ----------------------------------------------------------------------------- a two-node cluster


def _auth_env(values: dict[str, str | None]) -> None:
    """Set the auth env vars and make this process's Ray core re-read them (it caches both)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@pytest.mark.slow
def test_two_node_cluster_kill_driver_and_restore(tiny, tmp_path):
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    _auth_env({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        epochs = 30
        storage = f"file://{tmp_path / 'shared'}"
        name = unique_name("cluster")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        args = tiny_sweep_args(
            tiny, storage, name, epochs, strategies="fixed;decay;random", num_cpus=None, address=cluster.address
        )
        at_kill, after = kill_and_resume(
            args, tmp_path / "shared" / name, epochs, env, tmp_path / "driver.log", n_trials=3
        )
        # the trials ran on both nodes (each result row names its Ray node)
        nodes = set()
        for trial in after:
            for line in (tmp_path / "shared" / name / trial / "result.json").read_text().splitlines():
                row = json.loads(line)
                if NODE_KEY in row:  # rows a resumed finished trial reports from its checkpoint have none
                    nodes.add(row[NODE_KEY])
        cluster_nodes = {n.node_id for n in cluster.list_all_nodes()}
        assert nodes == cluster_nodes and len(nodes) == 2, (nodes, cluster_nodes)
    finally:
        if cluster is not None:
            cluster.shutdown()
        _auth_env(saved)
