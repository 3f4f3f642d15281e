#!/usr/bin/env python
"""Random or ASHA search over margin and lr (log-uniform) for one random_rate strategy.

Same outputs and flags as compare_strategies.py, plus --num-samples, --scheduler, --strategy,
--method (one of compare_strategies' --methods) and the search ranges. Guide: docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import sys

from counterarg.analysis.trials import MAX_NUM_SAMPLES
from counterarg.data.inputs import DefaultsHelpFormatter
from counterarg.sweep.cli import (
    add_common_args,
    add_method_arg,
    add_range_arg,
    base_from_args,
    exit_code,
    int_at_least,
    parse_seeds,
    run_from_args,
    sweep_name,
    trial_resources,
    usage_errors,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    add_common_args(p)
    p.add_argument("--strategy", default="decay", help="NAME[:FIELD=V,...] (default: decay)")
    add_method_arg(p, "the method the strategy trains with", "reference")
    p.add_argument(
        "--num-samples",
        type=int_at_least(1, MAX_NUM_SAMPLES),
        default=None,
        help=f"sampled (margin, lr) points, 1 to {MAX_NUM_SAMPLES} (default 12; smoke 2)",
    )
    p.add_argument(
        "--scheduler",
        choices=("asha", "fifo"),
        default="fifo",
        help="fifo: every trial trains its epochs; asha: trials that fall behind are stopped early",
    )
    add_range_arg(p, "--margin-range", "0.1,3.0", "log-uniform, 0 < LO < HI")
    add_range_arg(p, "--lr-range", "1e-4,1e-2", "log-uniform, 0 < LO < HI")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    from counterarg.sweep.runner import Sweep  # Ray: after parsing, so --help loads none of it
    from counterarg.sweep.spaces import margin_lr_space, parse_strategy

    with usage_errors(p):  # a bad flag value, a locked or missing experiment: exit 2, no traceback
        seeds = parse_seeds(args.seeds, (0,))
        num_samples = args.num_samples if args.num_samples is not None else (2 if args.smoke_test else 12)
        name = sweep_name(args, "search_margin_lr")
        base = base_from_args(args)
        space = margin_lr_space(
            parse_strategy(args.strategy, args.method),
            margin=args.margin_range,
            lr=args.lr_range,
            seeds=seeds,
            base=base,
        )
        sweep = Sweep(
            name=name,
            base=base,
            param_space=space,
            num_samples=num_samples,
            scheduler=args.scheduler,
            **trial_resources(args),
        )
        result = run_from_args(args, sweep)
    return exit_code(result)  # 1 when a trial errored (named above)


if __name__ == "__main__":
    sys.exit(main())
