#!/usr/bin/env python
"""Measure what a sweep of many short trials sends to object storage, and the driver's CPU.

The sweep is the project's own (``tuner.build_tuner``: its callbacks, reporter, checkpoint and
storage settings, the experiment on ``s3://`` on moto's server on 127.0.0.1, ``S3Server`` from
tests/conftest.py, which counts every request); only the training is replaced by a synthetic
trainable that, per epoch, sleeps ``--epoch-s``, writes a checkpoint of the smoke model's files and
sizes (state.pt 48 KB, best_ranks.npz 9.6 KB, config.json, manifest, sidecar), reports a row of
the smoke model's 189 metric keys and mirrors ``run/`` and ``best/`` as ``counterarg.sweep.trainable``
does. Requests are sorted by who sends them: the trials (checkpoints, mirrors) and the driver
(Tune's experiment state and its trial files: result.json, progress.csv, events, params).

    python tests/sweep/storage_load.py --trials 150 --epochs 3 --period 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: conftest's S3Server
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def synthetic(config: dict) -> None:
    """The storage pattern of counterarg.sweep.trainable per epoch, without the training."""
    import numpy as np
    from ray import tune

    from counterarg.core.io import atomic_replace_dir, write_manifest
    from counterarg.sweep import trainable as tr
    from counterarg.sweep.recovery import TRAIN_TIME_FILE

    trial_id = str(tune.get_context().get_trial_id())
    out = tr.run_folder(trial_id)
    rng = np.random.default_rng(int(config.get("seed", 0)))
    mirrored: dict = {}
    epochs = int(config["epochs"])
    for epoch in range(1, epochs + 1):
        time.sleep(float(os.environ.get("LOAD_EPOCH_S", "0.5")))

        def fill(tmp: Path) -> None:
            (tmp / "state.pt").write_bytes(rng.bytes(48_000))
            (tmp / "best_ranks.npz").write_bytes(rng.bytes(9_600))
            (tmp / "config.json").write_text(json.dumps(config) + " " * 1000)

        atomic_replace_dir(out / "checkpoint", fill, epoch=epoch)
        atomic_replace_dir(out / "best", fill, epoch=epoch)
        ckpt = out / "checkpoint"
        (ckpt / TRAIN_TIME_FILE).write_text(json.dumps({"epoch": epoch, "trial_id": trial_id, "train_total_s": 1.0}))
        write_manifest(ckpt, epoch=epoch)
        (out / "config.json").write_text(json.dumps(config))
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"epoch": epoch}) + "\n")
        row = {f"validation/task{i}/acc@{k}": float(rng.random()) for i in range(43) for k in (1, 3, 5, 10)}
        row.update({"epoch": epoch, METRIC: float(rng.random())})
        tune.report(row, checkpoint=tune.Checkpoint.from_directory(str(ckpt)))
        tr.mirror_run_files(out, mirrored)


def who(path: str, exp: str) -> str:
    rest = path.split(exp + "/", 1)[-1] if exp in path else ""
    if "/" not in rest:
        return "driver: experiment state" if rest else "other (bucket, listing)"
    trial, inner = rest.split("/", 1)
    if not trial.startswith("trial_"):
        return "driver: other"
    if inner.startswith("checkpoint_"):
        return "trials: checkpoints"
    if inner.startswith(("best/", "run/")):
        return "trials: best/ and run/ mirrors"
    return "driver: trial files"


METRIC = "validation/mean/acc@1"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=150)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--epoch-s", type=float, default=0.5)
    p.add_argument("--period", type=float, default=1.0, help="TUNE_GLOBAL_CHECKPOINT_S")
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()

    import multiprocessing as mp

    here, there = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(target=serve, args=(there,), daemon=True)
    proc.start()  # the server in a process of its own: the driver's CPU time is the driver's alone
    env = here.recv()
    os.environ.update(env)
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = str(args.period)
    os.environ["LOAD_EPOCH_S"] = str(args.epoch_s)
    import boto3

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket="load")
    from counterarg.config import Config
    from counterarg.sweep import runner
    from counterarg.sweep import tuner as tuners

    global METRIC
    METRIC = Config().select_metric
    tuners.trainable = synthetic  # build_tuner's trainable
    name = f"load-{args.trials}x{args.epochs}-p{args.period:g}"
    sweep = runner.Sweep(name=name, base={"epochs": args.epochs}, variants=[{"seed": i} for i in range(args.trials)])
    runner.init_ray(None, num_cpus=args.num_cpus)
    tuner = tuners.build_tuner(sweep, "s3://load/sweeps", verbose=0)
    here.send("count")
    n0 = len(here.recv())
    cpu0, t0 = time.process_time(), time.perf_counter()
    tuner.fit()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    here.send("count")
    reqs = here.recv()[n0:]
    by = Counter()
    sent = Counter()
    for _method, path, n_in, _ in reqs:
        k = who(path, f"sweeps/{name}")
        by[k] += 1
        sent[k] += n_in
    trial_epochs = args.trials * args.epochs
    figures = {
        "trials": args.trials,
        "epochs": args.epochs,
        "epoch_s": args.epoch_s,
        "period_s": args.period,
        "num_cpus": args.num_cpus,
        "wall_s": round(wall, 1),
        "driver_cpu_s": round(cpu, 1),
        "driver_cpu_frac": round(cpu / wall, 3),
        "requests": len(reqs),
        "requests_per_s": round(len(reqs) / wall, 1),
        "bytes_in_per_s": round(sum(sent.values()) / wall),
        "methods": dict(Counter(m for m, *_ in reqs)),
        "by_sender": {
            k: {
                "requests": by[k],
                "bytes_in": sent[k],
                "requests_per_trial_epoch": round(by[k] / trial_epochs, 2),
                "bytes_per_trial_epoch": round(sent[k] / trial_epochs),
            }
            for k in sorted(by)
        },
    }
    listed = client.list_objects_v2(Bucket="load", Prefix=f"sweeps/{name}/experiment_state")
    sizes = [o["Size"] for o in listed.get("Contents", [])]
    if sizes:
        figures["experiment_state_bytes"] = max(sizes)
    text = json.dumps(figures, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    import ray

    ray.shutdown()
    here.send("stop")
    proc.join(timeout=30)


def serve(conn) -> None:
    """The S3 server's process: sends its environment, then its request log whenever asked."""
    from conftest import S3Server

    server = S3Server()
    conn.send(server.env())
    while conn.recv() != "stop":
        conn.send(list(server.requests))
    server.stop()


if __name__ == "__main__":
    main()
