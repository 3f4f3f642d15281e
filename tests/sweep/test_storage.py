"""A sweep on object storage (moto's S3 server on 127.0.0.1, the real pyarrow client; fixtures in
tests/conftest.py): the driver's working copy of the experiment's files, inputs staged into the
experiment and fetched per node, ``best/`` mirrored without a rename, checkpoints Tune deleted too
early put back in the bucket; and, slow, a smoke sweep on a two-node cluster whose every output is
in the bucket, and a driver SIGKILLed mid-sweep resumed from another folder with the URI and name."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

from counterarg.core.io import write_manifest
from counterarg.core.remote import filesystem, remote_manifest
from counterarg.sweep.storage import DriverFolder, stage_inputs

from .conftest import kill_when, remote_rows, resume_to_end, tiny_sweep_args, unique_name


def test_driver_folder_pushes_only_what_changed(s3_server, s3_bucket):
    exp = f"s3://{s3_bucket}/sw/exp"
    fs, path = filesystem(exp)
    for name, body in (("experiment_state-1.json", b"{}"), ("sessions.jsonl", b'{"wall_s": 1}\n')):
        with fs.open_output_stream(f"{path}/{name}") as f:
            f.write(body)
    with fs.open_output_stream(f"{path}/trial_1/result.json") as f:
        f.write(b"{}")
    work = DriverFolder(exp)
    try:
        assert work.pull() == ["experiment_state-1.json", "sessions.jsonl"]  # top-level files only
        assert not (work.local / "trial_1").exists()
        (work.local / "sessions.jsonl").write_text('{"wall_s": 1}\n{"wall_s": 2}\n')
        (work.local / "summary.md").write_text("# exp\n")
        assert work.push() == ["sessions.jsonl", "summary.md"]
        assert work.push() == []
        assert s3_server.client().get_object(Bucket=s3_bucket, Key="sw/exp/summary.md")["Body"].read() == b"# exp\n"
    finally:
        work.close()


def test_inputs_are_staged_once_and_fetched_per_node(s3_server, s3_bucket, tmp_path, tiny_encoder, monkeypatch):
    corpus = tmp_path / "corpus.zip"
    corpus.write_bytes(b"PK" + os.urandom(200))
    exp = f"s3://{s3_bucket}/sw/staged"
    before = sorted(Path(tiny_encoder).iterdir())
    staged = stage_inputs({"encoder": tiny_encoder, "corpus": str(corpus), "epochs": 2}, exp)
    assert staged["epochs"] == 2
    assert staged["encoder"].startswith(f"{exp}/inputs/{Path(tiny_encoder).name}-")
    assert staged["corpus"].startswith(f"{exp}/inputs/corpus.zip-") and staged["corpus"].endswith("/corpus.zip")
    assert sorted(Path(tiny_encoder).iterdir()) == before  # the user's folder is not written to
    n = len(s3_server.requests)
    assert stage_inputs({"encoder": tiny_encoder}, exp)["encoder"] == staged["encoder"]
    assert not [r for r in s3_server.requests[n:] if r[0] == "PUT"]  # the same content: not uploaded again
    # a node fetches into its own cache ($COUNTERARG_CACHE), checked against the manifest, when the
    # run loads the URI its config keeps
    from counterarg.core.remote import local_input
    from counterarg.nn.encoder import resolve_encoder

    monkeypatch.setenv("COUNTERARG_CACHE", str(tmp_path / "node-a"))
    encoder = resolve_encoder(staged["encoder"])
    assert Path(encoder).is_relative_to(tmp_path / "node-a")
    assert (Path(encoder) / "model.safetensors").read_bytes() == (Path(tiny_encoder) / "model.safetensors").read_bytes()
    local_corpus = Path(local_input(staged["corpus"]))
    assert local_corpus.is_relative_to(tmp_path / "node-a")
    assert local_corpus.name == "corpus.zip" and local_corpus.read_bytes() == corpus.read_bytes()
    assert stage_inputs({"encoder": tiny_encoder}, str(tmp_path / "local-storage")) == {"encoder": tiny_encoder}


def test_best_is_mirrored_to_s3_without_a_rename(s3_server, s3_bucket, tmp_path):
    from counterarg.sweep.records import best_checkpoint
    from counterarg.sweep.trainable import _mirror_best

    fs, trial = filesystem(f"s3://{s3_bucket}/sw/exp/trial_1")
    best = tmp_path / "best"
    best.mkdir()
    (best / "state.pt").write_bytes(b"epoch 2")
    write_manifest(best, epoch=2)
    mirrored: dict = {}
    _mirror_best(best, fs, f"{trial}/best", mirrored)
    assert mirrored == {"epoch": 2} and remote_manifest(fs, f"{trial}/best")["epoch"] == 2

    class Result:  # what records.best_checkpoint reads of Tune's Result
        filesystem, path, best_checkpoints = fs, trial, []

    assert best_checkpoint(Result, 2) == f"s3://{trial}/best"
    assert best_checkpoint(Result, 3) is None  # the mirror holds another epoch: not claimed
    (best / "state.pt").write_bytes(b"epoch 3")
    write_manifest(best, epoch=3)
    _mirror_best(best, fs, f"{trial}/best", mirrored)
    assert best_checkpoint(Result, 3) == f"s3://{trial}/best"
    fs.delete_file(f"{trial}/best/manifest.json")  # an upload killed before its manifest
    assert best_checkpoint(Result, 3) is None


def test_a_restored_trial_keeps_its_earlier_sessions_machine_rows(s3_server, s3_bucket, tmp_path):
    """A restored trial's fresh run folder holds only its own session's machine.jsonl row; the rows
    stored in the bucket go first, and a folder that already holds them (a killed worker's, same
    node) gains nothing twice."""
    from counterarg.sweep.trainable import keep_stored_rows

    fs, trial = filesystem(f"s3://{s3_bucket}/sw/exp/trial_m")
    local = tmp_path / "machine.jsonl"
    first, second = '{"from_epoch": 1, "started": "a"}', '{"from_epoch": 4, "started": "b"}'
    local.write_text(first + "\n")
    keep_stored_rows(fs, f"{trial}/run/machine.jsonl", local)  # nothing stored yet: the first session
    assert local.read_text() == first + "\n"
    with fs.open_output_stream(f"{trial}/run/machine.jsonl") as f:
        f.write(local.read_bytes())
    fresh = tmp_path / "fresh.jsonl"
    fresh.write_text(second + "\n")
    keep_stored_rows(fs, f"{trial}/run/machine.jsonl", fresh)
    assert fresh.read_text().splitlines() == [first, second]
    local.write_text(first + "\n" + second + "\n")  # the stale folder of the same node
    keep_stored_rows(fs, f"{trial}/run/machine.jsonl", local)
    assert local.read_text().splitlines() == [first, second]


def test_checkpoints_deleted_too_early_are_put_back_in_the_bucket(s3_server, s3_bucket, tmp_path):
    """The state (copied to the driver) names checkpoint_000001 that Tune deleted; the trial's later
    checkpoint_000002 (a readable sidecar) is copied under the name, sidecar last; an older name
    becomes a folder for Tune to delete."""
    from counterarg.sweep.recovery import TRAIN_TIME_FILE, restore_named_checkpoints

    trial = "trial_abc_recipe_seed0"
    manager = b"...%s/checkpoint_000000...%s/checkpoint_000001..." % (trial.encode(), trial.encode())
    state = {
        "trial_data": [[json.dumps({"trial_id": "abc"}), json.dumps({"checkpoint_manager": {"value": manager.hex()}})]]
    }
    (tmp_path / "experiment_state-x.json").write_text(json.dumps(state))
    fs, root = filesystem(f"s3://{s3_bucket}/sw/exp")
    for name, body in (("state.pt", b"w"), (TRAIN_TIME_FILE, b'{"epoch": 3}')):
        with fs.open_output_stream(f"{root}/{trial}/checkpoint_000002/{name}") as f:
            f.write(body)
    done = restore_named_checkpoints(tmp_path, fs=fs, root=root)
    assert len(done) == 2 and "copied from checkpoint_000002" in done[1]
    keys = s3_server.keys(s3_bucket, f"sw/exp/{trial}/checkpoint_000001/")
    assert [k.rsplit("/", 1)[-1] for k in keys] == [TRAIN_TIME_FILE, "state.pt"]
    assert fs.get_file_info(f"{root}/{trial}/checkpoint_000000").type.name == "Directory"
    assert restore_named_checkpoints(tmp_path, fs=fs, root=root) == []  # nothing left to do


# ----------------------------------------------------------------------------- sweeps on the bucket


def _remote_epochs(s3_server, bucket: str, prefix: str) -> dict[str, list[int]]:
    """Trial folder -> the epochs in its result.json in the bucket (a torn last line skipped)."""
    return {t: [int(r["epoch"]) for r in rows] for t, rows in remote_rows(s3_server, bucket, prefix).items()}


def _files(keys: list[str]) -> list[str]:
    return [k for k in keys if not k.endswith("/")]  # pyarrow's empty folder markers aside


@pytest.mark.slow
@pytest.mark.timeout(900)  # two Ray nodes and two trials: 6 min on a loaded 2-core machine
def test_smoke_sweep_on_two_nodes_keeps_every_output_in_the_bucket(s3_server, s3_bucket, tmp_path):
    """Two worker nodes with their own $COUNTERARG_CACHE and no PYTHONPATH (the code reaches them
    through runtime_env's py_modules), the smoke encoder in the driver's temp folder: the trials
    fetch it from the experiment, each node builds its own feature cache, and every file the sweep
    writes is in the bucket; the driver's working folder stays empty."""
    from ray.cluster_utils import Cluster

    from counterarg.sweep.trainable import NODE_KEY

    from .test_runner import _auth_env

    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    _auth_env({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    cluster = None
    caches = {n: tmp_path / f"cache-{n}" for n in ("a", "b")}
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        for cache in caches.values():
            cluster.add_node(num_cpus=1, env_vars={"COUNTERARG_CACHE": str(cache), "PYTHONPATH": ""})
        cluster.wait_for_nodes()
        name = unique_name("s3smoke")
        cwd = tmp_path / "driver-cwd"
        cwd.mkdir()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COUNTERARG_CACHE": str(tmp_path / "cache-driver")}
        args = [
            "--smoke-test",
            "--address",
            cluster.address,
            "--storage",
            f"s3://{s3_bucket}/sweeps",
            "--name",
            name,
            "--methods",
            "reference",
            "--strategies",
            "fixed;random",
        ]
        log = tmp_path / "driver.log"
        with open(log, "w") as out:
            from .conftest import start_driver

            proc = start_driver(args, env, out, cwd=cwd)
            assert proc.wait(timeout=480) == 0, log.read_text()[-5000:]
        text = log.read_text()
        assert list(cwd.iterdir()) == [], list(cwd.iterdir())
        prefix = f"sweeps/{name}/"
        keys = _files(s3_server.keys(s3_bucket, prefix))
        top = {k[len(prefix) :] for k in keys if "/" not in k[len(prefix) :]}
        for f in (
            "summary.md",
            "summary.csv",
            "significance.csv",
            "sessions.jsonl",
            "tuner.pkl",
            "validation_mean_acc1.png",
        ):
            assert f in top, (f, sorted(top))
        assert any(k.startswith("experiment_state-") for k in top)
        # TensorBoard: nothing at the root (no "." run); the strategy runs are uploaded beside the summary
        assert not any(k.startswith("events.out.tfevents") for k in top), sorted(top)
        assert any(k[len(prefix) :].startswith("strategies/") and "events.out.tfevents" in k for k in keys)
        trials = sorted({k[len(prefix) :].split("/")[0] for k in keys if k[len(prefix) :].startswith("trial_")})
        assert len(trials) == 2
        for t in trials:
            names = {k[len(prefix) + len(t) + 1 :] for k in keys if k.startswith(prefix + t + "/")}
            want = {"best/manifest.json", "run/metrics.jsonl", "run/machine.jsonl", "result.json"}
            assert want <= names, sorted(names)
            assert any(n.startswith("events.out.tfevents") for n in names)
            assert any(n.startswith("checkpoint_") for n in names)
            params = json.loads(
                s3_server.client().get_object(Bucket=s3_bucket, Key=f"{prefix}{t}/params.json")["Body"].read()
            )
            assert params["encoder"].startswith(f"s3://{s3_bucket}/sweeps/{name}/inputs/")  # not the driver's path
            run_config = json.loads(
                s3_server.client().get_object(Bucket=s3_bucket, Key=f"{prefix}{t}/best/config.json")["Body"].read()
            )
            assert run_config["encoder"] == params["encoder"]  # the URI, not the node's cache path
        summary = s3_server.client().get_object(Bucket=s3_bucket, Key=prefix + "summary.md")["Body"].read().decode()
        assert "Trials: 2 (0 errored, 0 unfinished)" in summary and "checkpoint not kept" not in text
        assert f"Summary: s3://{s3_bucket}/sweeps/{name}/summary.md" in text
        # both nodes trained, each with the encoder fetched into and features built in its own cache
        nodes = set()
        for t in trials:
            body = s3_server.client().get_object(Bucket=s3_bucket, Key=f"{prefix}{t}/result.json")["Body"].read()
            nodes |= {json.loads(line)[NODE_KEY] for line in body.decode().splitlines()}
        workers = {n.node_id for n in cluster.list_all_nodes()} - {cluster.head_node.node_id}
        assert nodes == workers and len(nodes) == 2
        for cache in caches.values():
            assert list((cache / "remote").glob("*/model.safetensors")), sorted(cache.rglob("*"))[:20]
            assert [p for p in cache.iterdir() if p.name != "remote"], sorted(cache.iterdir())  # its feature cache
    finally:
        if cluster is not None:
            cluster.shutdown()
        _auth_env(saved)


@pytest.mark.slow
@pytest.mark.timeout(1500)  # two drivers' start-up and 24 epochs: 10 min on a loaded 2-core machine
def test_driver_killed_mid_sweep_resumes_from_another_folder_with_the_uri(s3_server, s3_bucket, tiny, tmp_path):
    """SIGKILL the driver (and its local Ray) once one trial finished and another is mid-way; a new
    driver in another working folder, with a fresh Ray temp root, the URI and --name, resumes: no
    finished trial reruns, the unfinished one loses at most the epoch in flight, the sweep ends
    complete, and neither working folder gets a file."""
    epochs = 12  # a window of 8 epochs to kill the second trial in (the trials run one after the other)
    name = unique_name("s3kill")
    storage = f"s3://{s3_bucket}/sweeps"
    prefix = f"sweeps/{name}/"
    args = tiny_sweep_args(tiny, storage, name, epochs, cache=False)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def ready() -> bool:
        eps = list(_remote_epochs(s3_server, s3_bucket, prefix).values())
        return any(e and max(e) == epochs for e in eps) and any(e and 2 <= max(e) < epochs - 2 for e in eps)

    log = tmp_path / "driver.log"
    killed = kill_when(ready, args, env, log, timeout=600, poll_s=0.3, kill_group=True, cwd=first)
    at_kill = _remote_epochs(s3_server, s3_bucket, prefix)
    ray2 = tempfile.mkdtemp(prefix="cr-ray2-", dir="/tmp")  # short: Ray's socket paths are length-limited
    try:  # nothing of the first driver's Ray temp folders (its staging copies of Tune's state)
        resume_to_end(args, {**env, "RAY_TMPDIR": ray2}, log, killed, timeout=600, cwd=second)
    finally:
        shutil.rmtree(ray2, ignore_errors=True)
    after = _remote_epochs(s3_server, s3_bucket, prefix)
    assert len(after) == 2
    for trial, eps in after.items():
        before = at_kill.get(trial, [])
        assert max(eps) == epochs, (trial, eps)
        if before and max(before) == epochs:
            assert eps == before, f"finished trial {trial} reran: {before} -> {eps}"
        elif before:
            resumed_from = eps[len(before)]
            assert resumed_from >= max(before), (trial, before, eps)
        body = s3_server.client().get_object(Bucket=s3_bucket, Key=f"{prefix}{trial}/run/machine.jsonl")["Body"]
        rows = [json.loads(line) for line in body.read().decode().splitlines()]
        restored = bool(before) and max(before) < epochs
        assert [r["from_epoch"] == 1 for r in rows] == [True] + [False] * restored, (trial, rows)  # every session's
    summary = s3_server.client().get_object(Bucket=s3_bucket, Key=prefix + "summary.md")["Body"].read().decode()
    assert "Trials: 2 (0 errored, 0 unfinished)" in summary
    assert "session 1 (resume" in summary  # the killed driver never finished its session
    assert list(first.iterdir()) == [] and list(second.iterdir()) == []
