"""Lost nodes and workers (counterarg.sweep.failures): a trial whose worker process or node dies
continues from its last epoch checkpoint within the same sweep, an error of the training is recorded
once and not retried, ``--resume`` continues an errored trial from its checkpoint, and the summary
names every restore. The worker is SIGKILLed (a local Ray) or its node removed (a two-node
``ray.cluster_utils.Cluster``) once the trial has reported a few epochs.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from counterarg.sweep.failures import RESTORES_FILE, read_restores
from counterarg.sweep.runner import Sweep, run_sweep

from .conftest import (
    kill_process_group,
    remote_rows,
    reported_epochs,
    start_driver,
    sweep_base,
    tiny_sweep_args,
    trial_dirs,
    unique_name,
)


def result_rows(trial_dir: Path) -> list[dict]:
    rows = []
    for line in (trial_dir / "result.json").read_text().splitlines() if (trial_dir / "result.json").exists() else []:
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass  # a line being written
    return rows


def at_most_one_epoch_twice(epochs: list[int], total: int) -> None:
    """Every epoch 1..total reported, in order, none twice but the one in flight at the loss."""
    assert sorted(set(epochs)) == list(range(1, total + 1)), epochs
    twice = [e for e, n in Counter(epochs).items() if n > 1]
    assert len(twice) <= 1 and all(Counter(epochs)[e] == 2 for e in twice), epochs


def print_cost(what: str, rows: list[dict], at: int) -> None:
    """The cost of the loss, printed for docs/failure.md (``pytest -s ... | grep cost``): epochs trained
    twice, and the seconds from the last epoch before the loss to the first after it against the
    median epoch of the same trial."""
    epochs = [r["epoch"] for r in rows]
    twice = sum(n - 1 for n in Counter(epochs).values())
    stamps = {r["epoch"]: r["timestamp"] for r in rows}  # Tune's whole-second wall clock per result
    steps = sorted(stamps[e + 1] - stamps[e] for e in stamps if e + 1 in stamps and e not in (at,))
    gap = stamps.get(at + 1, 0) - stamps.get(at, 0)
    print(
        f"[cost] {what}: lost after epoch {at}; epochs retrained: {twice}; {gap} s from epoch {at} to "
        f"epoch {at + 1} against a median epoch of {steps[len(steps) // 2]} s",
        flush=True,
    )


class Killer(threading.Thread):
    """Once a trial of ``exp`` has reported ``after`` epochs (and not more than ``before``), SIGKILL
    its worker process (the ``pid`` in its last result): what an OOM kill or a crash does."""

    def __init__(self, exp: Path, after: int, before: int, timeout: float = 300):
        super().__init__(daemon=True)
        self.exp, self.after, self.before, self.timeout = exp, after, before, timeout
        self.killed: tuple[str, int, int] | None = None  # (trial folder, pid, epochs reported)
        self.missed: list = []

    def run(self) -> None:
        t0 = time.time()
        while time.time() - t0 < self.timeout:
            for d in trial_dirs(self.exp) if self.exp.is_dir() else []:
                rows = [r for r in result_rows(d) if "epoch" in r]
                if rows and self.after <= rows[-1]["epoch"] <= self.before:
                    os.kill(int(rows[-1]["pid"]), signal.SIGKILL)
                    self.killed = (d.name, int(rows[-1]["pid"]), int(rows[-1]["epoch"]))
                    return
                if rows and rows[-1]["epoch"] > self.before:
                    self.missed.append((d.name, rows[-1]["epoch"]))
            time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # three Ray starts and a restarted worker on a loaded machine
def test_killed_worker_continues_from_its_checkpoint_and_a_training_error_is_final(tiny, tmp_path):
    """A trial's worker is SIGKILLed after 3 epochs: the trial goes on by itself from its last
    checkpoint and finishes, no epoch trained twice beyond the one in flight; the summary names the
    restore. A trial with an encoder path that does not exist errors once: one failure in its
    ``error.txt``, ERROR in the summary with the path, never restarted (max_failures=3 allows three)."""
    import ray

    epochs = 20  # ~0.2 s each on idle cores, several seconds under load: the kill window must not close
    base = sweep_base(tiny, epochs=epochs, patience=0)
    variants = [
        {**base, "schedule": "fixed", "rate": 0.8, "seed": 0},
        {**base, "schedule": "decay", "seed": 0, "encoder": str(tmp_path / "no-such-bert")},
    ]
    sweep = Sweep(name=unique_name("lost"), variants=variants, max_failures=3)
    exp = tmp_path / "results" / sweep.name
    killer = Killer(exp, after=3, before=epochs - 8)
    killer.start()
    try:
        res = run_sweep(sweep, storage=tmp_path / "results", num_cpus=2, verbose=0)
    finally:
        ray.shutdown()
    killer.join(timeout=1)
    assert killer.killed, f"the trial was never caught mid-way: {killer.missed}"
    name, pid, at = killer.killed
    by = {r.config["schedule"]: r for r in res.records}
    good, bad = by["fixed"], by["decay"]
    assert good.status == "TERMINATED" and Path(good.path).name == name, (good.status, good.error)
    epochs_seen = reported_epochs(exp / name)
    at_most_one_epoch_twice(epochs_seen, epochs)
    pids = {r["pid"] for r in result_rows(exp / name) if "pid" in r}
    assert pid in pids and len(pids) == 2, pids  # the rows after the kill came from a new worker
    [restore] = good.restores
    assert restore["system_failure"] and restore["after_epoch"] >= at, restore
    print_cost("worker process SIGKILLed", [r for r in result_rows(exp / name) if "epoch" in r], restore["after_epoch"])
    assert "ActorDiedError" in restore["error"] or "RayActorError" in restore["error"], restore
    assert read_restores(__import__("pyarrow.fs").fs.LocalFileSystem(), str(exp / name)) == good.restores
    md = (exp / "summary.md").read_text()
    assert f"- RESTORED {good.trial_id} (" in md and "restored 1x after a lost node or worker, from epoch" in md, md
    assert "Trials: 2 (1 errored, 0 unfinished)" in md
    # the training error: once, with its message, no retry
    assert bad.status == "ERROR" and "no-such-bert" in bad.error and not bad.restores
    errors = (Path(bad.path) / "error.txt").read_text()
    assert errors.count("Failure #") == 1, errors
    assert not (Path(bad.path) / RESTORES_FILE).exists()
    assert "no-such-bert" in md
    import pandas as pd

    csv = pd.read_csv(exp / "summary.csv").set_index("trial_id")
    assert csv.loc[good.trial_id, "restored"] == 1 and csv.loc[bad.trial_id, "restored"] == 0


@pytest.mark.slow
@pytest.mark.timeout(1200)  # three Ray starts and a restarted worker on a loaded machine
def test_resume_continues_a_trial_that_errored_mid_way_from_its_checkpoint(tiny, tmp_path):
    """With ``max_failures=0`` a killed worker ends its trial in ERROR after some epochs; ``--resume``
    continues that trial under its id from its last checkpoint: the epochs before it are not
    trained again."""
    import ray

    epochs = 20
    sweep = Sweep(
        name=unique_name("errmid"),
        variants=[{**sweep_base(tiny, epochs=epochs, patience=0), "schedule": "fixed", "rate": 0.8, "seed": 0}],
        max_failures=0,
    )
    storage = tmp_path / "results"
    exp = storage / sweep.name
    killer = Killer(exp, after=4, before=epochs - 8)
    killer.start()
    try:
        first = run_sweep(sweep, storage=storage, num_cpus=1, verbose=0)
    finally:
        ray.shutdown()
    killer.join(timeout=1)
    assert killer.killed, f"the trial was never caught mid-way: {killer.missed}"
    [rec] = first.records
    assert rec.status == "ERROR" and not rec.restores, (rec.status, rec.error)
    before = reported_epochs(Path(rec.path))
    assert 4 <= max(before) < epochs, before
    try:
        second = run_sweep(sweep, storage=storage, num_cpus=1, resume=True, verbose=0)
    finally:
        ray.shutdown()
    [again] = second.records
    assert again.status == "TERMINATED" and again.trial_id == rec.trial_id and again.path == rec.path
    after = reported_epochs(Path(rec.path))
    assert after[: len(before)] == before
    assert after[len(before)] >= max(before), f"restarted before its checkpoint: {before} -> {after}"
    at_most_one_epoch_twice(after, epochs)
    assert "Trials: 1 (0 errored, 0 unfinished)" in (exp / "summary.md").read_text()


# ----------------------------------------------------------------------------- a node removed from a cluster
@pytest.mark.slow
@pytest.mark.timeout(1200)  # three Ray starts and a restarted worker on a loaded machine
def test_removed_node_costs_at_most_the_epoch_in_flight(tiny, tmp_path, s3_server, s3_bucket):
    """A head that runs no trial and two one-CPU worker nodes, each with its own ``COUNTERARG_CACHE``,
    the sweep's storage a bucket on the loopback S3 server (no shared disk); two trials, one per worker.
    Once one has reported 3 epochs (as the bucket shows) its node is removed: the trial continues on the
    other node from its last checkpoint in the bucket, the sweep exits 0 with both trials complete, no
    epoch reported twice beyond the one in flight, and the summary in the bucket names the restore."""
    import secrets

    from ray.cluster_utils import Cluster

    from counterarg.core.remote import filesystem

    from .test_runner import _auth_env

    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    _auth_env({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    cluster = proc = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        workers = [
            cluster.add_node(num_cpus=1, env_vars={"COUNTERARG_CACHE": str(tmp_path / f"cache-{i}")}) for i in range(2)
        ]
        cluster.wait_for_nodes()
        epochs = 24
        name = unique_name("nodeloss")
        prefix = f"sweeps/{name}/"
        args = tiny_sweep_args(
            tiny,
            f"s3://{s3_bucket}/sweeps",
            name,
            epochs,
            num_cpus=None,
            address=cluster.address,
            cache=False,
            sets=("patience=0",),
        )
        log_path = tmp_path / "driver.log"
        with open(log_path, "w") as log:
            proc = start_driver(args, {**os.environ, "PYTHONUNBUFFERED": "1"}, log, cwd=tmp_path)
            removed = None
            t0 = time.time()
            while removed is None:
                assert proc.poll() is None, log_path.read_text()[-4000:]
                assert time.time() - t0 < 400, "no trial reached its third epoch"
                for trial, rows in remote_rows(s3_server, s3_bucket, prefix).items():
                    rows = [r for r in rows if "node_id" in r]
                    if rows and 3 <= rows[-1]["epoch"] <= epochs - 8:
                        node = next(w for w in workers if w.node_id == rows[-1]["node_id"])
                        cluster.remove_node(node, allow_graceful=False)
                        removed = (trial, rows[-1]["node_id"], rows[-1]["epoch"])
                        break
                time.sleep(0.2)
            assert proc.wait(timeout=400) == 0, log_path.read_text()[-5000:]
        trial, lost_node, at = removed
        every = remote_rows(s3_server, s3_bucket, prefix)
        rows = every[trial]
        at_most_one_epoch_twice([r["epoch"] for r in rows], epochs)
        assert len(every) == 2
        for t, t_rows in every.items():
            assert sorted({r["epoch"] for r in t_rows}) == list(range(1, epochs + 1)), t
        fs, root = filesystem(f"s3://{s3_bucket}/{prefix}{trial}")
        [restore] = read_restores(fs, root)
        assert restore["node"] == lost_node and restore["after_epoch"] >= at, restore
        # the killed node's worker may still report an epoch or two of short epochs before it dies;
        # from the epoch after the one in flight when the driver noticed, the trial runs elsewhere
        after = [r["node_id"] for r in rows if r["epoch"] > restore["after_epoch"] + 1 and "node_id" in r]
        assert after and lost_node not in after, "the trial did not move to the other node"
        print_cost("node removed", rows, restore["after_epoch"])  # the last epoch the driver had when it noticed
        md = s3_server.client().get_object(Bucket=s3_bucket, Key=prefix + "summary.md")["Body"].read().decode()
        assert "Trials: 2 (0 errored, 0 unfinished)" in md
        assert "restored 1x after a lost node or worker, from epoch" in md, md
        assert not (tmp_path / name).exists() and not (tmp_path / "results").exists(), "the driver wrote locally"
        for i in range(2):  # each worker node built its feature cache under its own COUNTERARG_CACHE
            assert (tmp_path / f"cache-{i}").is_dir()
    finally:
        if proc is not None:
            kill_process_group(proc)
        if cluster is not None:
            cluster.shutdown()
        _auth_env(saved)
