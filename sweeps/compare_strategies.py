#!/usr/bin/env python
"""Compare random_rate strategies (fixed 0.8, decay 0.8-0.02*epoch, pure random) over seeds.

Default: 3 strategies x 3 seeds on the Config defaults (frozen all-MiniLM-L6-v2, 20 epochs),
experiment, summary.csv/.md and plots in results/compare_strategies/. See README "Sweeps".
"""

from __future__ import annotations

import argparse
import sys

from counterarg.sweep.cli import (add_common_args, add_strategies_arg, base_from_args, exit_code, parse_seeds,
                                  run_from_args, strategies_from_args, sweep_name, usage_errors)
from counterarg.sweep.runner import Sweep
from counterarg.sweep.spaces import strategy_grid


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    add_strategies_arg(p)
    args = p.parse_args(argv)
    with usage_errors(p):  # a bad flag value, a locked or missing experiment: exit 2, no traceback
        strategies = strategies_from_args(args)
        seeds = parse_seeds(args.seeds, (0,) if args.smoke_test else (0, 1, 2))
        name = sweep_name(args, "compare_strategies")
        sweep = Sweep(name=name, base=base_from_args(args), variants=strategy_grid(strategies, seeds),
                      cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial)
        result = run_from_args(args, sweep)
    return exit_code(result)  # 1 when a trial errored (named above)


if __name__ == "__main__":
    sys.exit(main())
