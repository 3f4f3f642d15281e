"""A race sweep driver on a synthetic trainable (no BERT), for tests/sweep/test_race.py.

Run as a script: ``python tests/sweep/race_synthetic.py --storage DIR --name N [--block-file F] [--resume]``.
Three strategies (fixed 0.2 / 0.5 / 0.8) whose runs report, per epoch, the sweep metric ``mean of
the strategy + noise * z(seed, strategy) + 0.001 * epoch`` (known means, seeded noise). With
``--block-file F`` the trial of ``fixed 0.2`` on seed :data:`BLOCK_SEED` (the first trial of round
2) creates ``F`` and then blocks until killed, unless ``F`` already exists: the test kills the
driver at that point and resumes it. The race runs through :class:`counterarg.sweep.race.RaceSearcher`
and ends with race.csv and race.png in the experiment folder; like the sweep runner, it keeps
the last whole set of state files (:class:`~counterarg.sweep.recovery.StateSnapshot`) and repairs
a cut one on resume.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's counterarg

from counterarg.analysis.methods import labelled  # noqa: E402
from counterarg.config import Config  # noqa: E402
from counterarg.sweep.race import RaceOptions, RaceSearcher  # noqa: E402
from counterarg.sweep.race_files import load_race_state, reconcile_race_state, write_race  # noqa: E402

METRIC = Config().select_metric
MEANS = {0.2: 0.60, 0.5: 0.55, 0.8: 0.30}  # rate -> mean of the metric: fixed 0.8 far behind, 0.5 a little
NOISE = 0.02
EPOCHS = 2
FIRST_SEEDS, MAX_SEEDS = 3, 6
BLOCK_RATE, BLOCK_SEED = 0.2, FIRST_SEEDS  # the first trial of round 2 (fixed 0.2 always survives round 1)


def synthetic(config: dict) -> None:
    """Per epoch: the strategy's mean plus the seed's noise; blocks at the chosen trial (see module doc)."""
    import time

    import numpy as np
    from ray import tune

    block = config.get("block_file")
    if block and config["rate"] == BLOCK_RATE and config["seed"] == BLOCK_SEED:
        try:
            fd = os.open(block, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass  # the resumed run: go on
        else:
            os.close(fd)
            while True:  # until the test SIGKILLs the driver's process group
                time.sleep(1)
    z = np.random.default_rng([int(config["seed"]), int(round(config["rate"] * 10))]).standard_normal()
    for epoch in range(1, EPOCHS + 1):
        tune.report({METRIC: MEANS[config["rate"]] + NOISE * float(z) + 0.001 * epoch, "epoch": epoch})


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--storage", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--block-file", default=None)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    import ray
    from ray import tune
    from ray.tune import FailureConfig, RunConfig

    from counterarg.sweep.recovery import StateSnapshot, repair_experiment_state
    from counterarg.sweep.runner import init_ray

    exp = Path(args.storage) / args.name
    init_ray(None, num_cpus=2)
    try:
        if args.resume:
            for line in repair_experiment_state(exp, args.name):
                print(f"[race-test] repaired {line}", flush=True)
            for line in reconcile_race_state(exp):
                print(f"[race-test] {line}", flush=True)
            tuner = tune.Tuner.restore(str(exp), trainable=synthetic, resume_unfinished=True, restart_errored=True)
        else:
            strategies = [labelled({"schedule": "fixed", "rate": r}, "recipe") for r in MEANS]
            opts = RaceOptions(seeds=tuple(range(MAX_SEEDS)), first_seeds=FIRST_SEEDS, max_seeds=MAX_SEEDS)
            tuner = tune.Tuner(
                synthetic,
                param_space={"block_file": args.block_file},
                tune_config=tune.TuneConfig(
                    metric=METRIC,
                    mode="max",
                    search_alg=RaceSearcher(strategies, opts),
                    num_samples=opts.tune_samples(len(strategies)),
                ),
                run_config=RunConfig(
                    name=args.name,
                    storage_path=str(Path(args.storage).resolve()),
                    verbose=0,
                    failure_config=FailureConfig(max_failures=0),
                    callbacks=[StateSnapshot()],
                ),
            )
        tuner.fit()
    finally:
        ray.shutdown()
    state = load_race_state(str(exp))
    write_race(state, exp, METRIC)
    print(f"[race-test] {state['stop']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
