#!/usr/bin/env python
"""Random or ASHA search over margin and lr (log-uniform) for one random_rate strategy.

Same outputs and flags as compare_strategies.py, plus --num-samples, --scheduler, --strategy and
the search ranges. See README "Sweeps".
"""

from __future__ import annotations

import argparse
import sys

from counterarg.tune import (Sweep, add_common_args, base_from_args, margin_lr_space,
                             parse_seeds, parse_strategy, run_from_args)


def _range(text: str) -> tuple[float, float]:
    lo, hi = (float(x) for x in text.split(","))
    return lo, hi


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--strategy", default="decay", help="NAME[:FIELD=V,...] (default: decay)")
    p.add_argument("--num-samples", type=int, default=None, help="sampled (margin, lr) points (default 12; smoke 2)")
    p.add_argument("--scheduler", choices=("asha", "fifo"), default="fifo")
    p.add_argument("--margin-range", type=_range, default=(0.1, 3.0), metavar="LO,HI")
    p.add_argument("--lr-range", type=_range, default=(1e-4, 1e-2), metavar="LO,HI")
    args = p.parse_args(argv)
    seeds = parse_seeds(args.seeds, (0,))
    num_samples = args.num_samples or (2 if args.smoke_test else 12)
    name = args.name or ("search_margin_lr_smoke" if args.smoke_test else "search_margin_lr")
    space = margin_lr_space(parse_strategy(args.strategy), margin=args.margin_range,
                            lr=args.lr_range, seeds=seeds)
    sweep = Sweep(name=name, base=base_from_args(args), param_space=space, num_samples=num_samples,
                  scheduler=args.scheduler, cpus_per_trial=args.cpus_per_trial,
                  gpus_per_trial=args.gpus_per_trial)
    run_from_args(args, sweep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
