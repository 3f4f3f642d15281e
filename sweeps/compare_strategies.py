#!/usr/bin/env python
"""Compare random_rate strategies (fixed 0.8, decay 0.8-0.02*epoch, pure random) over seeds.

Default: every strategy of the --strategies default below x seeds 0,1,2 on the Config defaults
(frozen all-MiniLM-L6-v2, --epochs as below), written to a fresh folder per run,
results/compare_strategies_<date>_<time>/ (experiment, summary.csv/.md, plots). See README "Sweeps".
"""

from __future__ import annotations

import argparse
import sys

from counterarg.schedules import SCHEDULES
from counterarg.sweep.cli import (add_common_args, base_from_args, exit_code, parse_seeds, run_from_args, sweep_name,
                                  usage_errors)
from counterarg.sweep.runner import Sweep
from counterarg.sweep.spaces import DEFAULT_STRATEGIES, parse_strategy, strategy_grid


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--strategies", default=None,
                   help=f"comma-free list separated by ';' of NAME[:FIELD=V,...]; names: "
                        f"{', '.join(SCHEDULES)} (default: {';'.join(DEFAULT_STRATEGIES)})")
    args = p.parse_args(argv)
    with usage_errors(p):  # a bad flag value, a locked or missing experiment: exit 2, no traceback
        strategies = ([parse_strategy(s) for s in args.strategies.split(";") if s.strip()]
                      if args.strategies else list(DEFAULT_STRATEGIES))
        seeds = parse_seeds(args.seeds, (0,) if args.smoke_test else (0, 1, 2))
        name = sweep_name(args, "compare_strategies")
        sweep = Sweep(name=name, base=base_from_args(args), variants=strategy_grid(strategies, seeds),
                      cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial)
        result = run_from_args(args, sweep)
    return exit_code(result)  # 1 when a trial errored (named above)


if __name__ == "__main__":
    sys.exit(main())
