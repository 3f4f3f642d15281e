#!/usr/bin/env python
"""Learn a random_rate schedule with Population Based Training (Ray Tune PBT), then replay it.

A population of trials trains one method (--method: recipe, the default recipe, by default; or
reference) and starts from rates spread over [0, 1] (fixed schedule); every
--perturbation-interval epochs the bottom --quantile of the population (by the Config field
select_metric, on validation) takes the weights of a top trial and a perturbed copy of its rate
(and lr / margin with --mutate). Outputs in <storage>/<name>: schedules.csv (every trial's lineage:
trial, epoch, random_rate, lr, margin, donor, trained_by, metric), schedules.png (the learned
schedules beside decay) and the usual summary. The run ends with the best learned schedule as a
rate_table and the one command that replays it from scratch with 3 seeds under the same method,
beside that method's hand-written schedules (sweeps/compare_strategies.py --methods METHOD).
Guide: docs/pbt.md.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from counterarg.analysis.methods import DEFAULT_METHOD
from counterarg.config import FROZEN_RECIPE, Config, ConfigError
from counterarg.core.paths import runnable_path
from counterarg.data.inputs import DefaultsHelpFormatter
from counterarg.sampling.schedules import format_value
from counterarg.sweep.cli import (
    add_common_args,
    add_method_arg,
    add_range_arg,
    base_from_args,
    exit_code,
    int_at_least,
    number_at_least,
    parse_seeds,
    run_from_args,
    sweep_name,
    trial_resources,
    usage_errors,
)

if TYPE_CHECKING:
    from counterarg.sweep.pbt import Learned
    from counterarg.sweep.runner import SweepResult


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    add_common_args(p, start=FROZEN_RECIPE, seeds="0; PBT takes one seed")
    add_method_arg(p, "the method the population trains", DEFAULT_METHOD)
    p.add_argument(
        "--population",
        type=int_at_least(2, 64),
        default=None,
        help="trials in the population, 2..64 (default 4; smoke 2)",
    )
    p.add_argument(
        "--perturbation-interval",
        type=int_at_least(1),
        default=None,
        help="epochs between exploit/explore steps (default 2; smoke 1)",
    )
    p.add_argument(
        "--quantile",
        type=number_at_least(0.0),
        default=0.25,
        help="the bottom fraction that takes over the weights of the top fraction, (0, 0.5] (default 0.25)",
    )
    p.add_argument(
        "--resample-probability",
        type=number_at_least(0.0),
        default=0.25,
        help="chance that explore draws a value afresh instead of a step (default 0.25)",
    )
    p.add_argument(
        "--mutate",
        default="rate",
        help="fields PBT changes: rate plus any of lr, margin, comma-separated (default rate)",
    )
    add_range_arg(p, "--lr-range", "1e-4,1e-2", "lr resampling range, log-uniform (with --mutate rate,lr)")
    add_range_arg(p, "--margin-range", "0.1,3.0", "margin resampling range, uniform (with --mutate rate,margin)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    from counterarg.sweep.pbt import PBTOptions, finish, param_space, replay_command  # Ray: after parsing
    from counterarg.sweep.runner import Sweep

    if args.smoke_test and args.epochs is None:
        args.epochs = 4  # room for three exploit/explore steps
    with usage_errors(p):  # a bad flag value, a locked or missing experiment: exit 2, no traceback
        seeds = parse_seeds(args.seeds, (0,))
        if len(seeds) != 1:
            raise ConfigError(
                "PBT learns one schedule from one seed (--seeds takes one value); the "
                "replay command it prints repeats the learned schedule over 3 seeds"
            )
        opts = PBTOptions(
            population=args.population or (2 if args.smoke_test else 4),
            perturbation_interval=args.perturbation_interval or (1 if args.smoke_test else 2),
            quantile=args.quantile,
            resample_probability=args.resample_probability,
            mutate=tuple(m.strip() for m in args.mutate.split(",") if m.strip()),
            lr_range=args.lr_range,
            margin_range=args.margin_range,
        )
        base = {**base_from_args(args, start=FROZEN_RECIPE), "seed": seeds[0]}
        epochs = Config.from_dict(base).epochs
        name = sweep_name(args, "pbt_schedule")
        sweep = Sweep(
            name=name,
            base=base,
            param_space=param_space(base, opts, args.method),
            scheduler="pbt",
            pbt=opts,
            **trial_resources(args),
        )
        print(
            f"[pbt] {args.method}: population {opts.population}, {epochs} epochs, exploit/explore every "
            f"{opts.perturbation_interval} epoch(s) by {sweep.metric}: the bottom {opts.quantile:g} takes the "
            f"weights of the top {opts.quantile:g}; mutating {', '.join(opts.mutate)}",
            flush=True,
        )
        learned: list[Learned] = []

        def learn(result: SweepResult) -> SweepResult:  # the summary by lineage, before the table prints
            learned.append(finish(result, sweep, result.local_dir))
            return replace(result, rows=learned[0].rows, verdicts=learned[0].verdicts)

        result = run_from_args(args, sweep, finish=learn)
    got = learned[0]
    print(
        f"Learned schedules: {runnable_path(got.paths['schedules_csv'])}, {runnable_path(got.paths['schedules_png'])}"
    )
    for problem in got.problems:
        print(f"[pbt] WARNING {problem}", file=sys.stderr)
    if got.best is None:
        print("[pbt] no trial finished an epoch: nothing learned", file=sys.stderr)
        return 1
    print()
    print(f"Best learned schedule ({got.best}, by {sweep.metric}):")
    print(f"  --set schedule=table --set rate_table={format_value(got.best_table)}")
    print(
        f"Replay it from scratch with 3 seeds under {args.method}, beside its hand-written schedules "
        "(significance tests in its summary):"
    )
    print(f"  {replay_command(args, got.best_table, sweep.name, args.method)}")
    if set(opts.mutate) - {"rate"}:
        print("  (the replay repeats the rate schedule only; lr and margin stay at their configured values)")
    return exit_code(result) or (1 if got.problems else 0)


if __name__ == "__main__":
    sys.exit(main())
