#!/usr/bin/env python
"""Race random_rate strategies over seeds (F-Race / irace): drop the ones shown worse, seed the rest.

Every strategy (--strategies, each under every --methods; default: the main job's lists) trains on
a first round of --first-seeds seeds; after each round the strategies the
seed-aware test (Welch over per-run values of the validation select metric, Holm-corrected against
the leader) shows worse than the best are dropped, and each survivor gets one more seed, until one
survives, --max-seeds seeds ran per survivor, or the next round would pass --budget trials.
Outputs in <storage>/<name>: race.csv (round, strategy, seeds, value, p_value, eliminated_in_round),
race.png and the usual test-split summary for every strategy, with the round each left.
Guide: docs/racing.md.
"""

from __future__ import annotations

import argparse
import sys

from counterarg.config import FROZEN_RECIPE
from counterarg.core.paths import runnable_path
from counterarg.data.inputs import DefaultsHelpFormatter
from counterarg.sweep.cli import (
    add_common_args,
    add_methods_arg,
    add_strategies_arg,
    base_from_args,
    exit_code,
    int_at_least,
    parse_seeds,
    run_from_args,
    sweep_name,
    trial_resources,
    usage_errors,
)

SMOKE_STRATEGIES = "fixed;random"  # under both methods unless --methods: four strategies


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    add_common_args(p, start=FROZEN_RECIPE, seeds="0,1,...,--max-seeds - 1, taken in order by the rounds")
    add_methods_arg(p)
    add_strategies_arg(p)
    p.add_argument(
        "--first-seeds",
        type=int_at_least(2),
        default=None,
        help="seeds per strategy in the first round, >= 2 (default 3; smoke 2)",
    )
    p.add_argument(
        "--max-seeds",
        type=int_at_least(2),
        default=None,
        help="at most this many seeds per strategy (default: as many as --seeds gives, else 10; smoke 3); "
        "the rounds take seeds in --seeds order (default 0, 1, 2, ...)",
    )
    p.add_argument(
        "--budget",
        type=int_at_least(1),
        default=None,
        help="at most this many trials in all; a round starts only when it fits whole (default: none)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    from counterarg.sweep.race import RaceOptions  # Ray, scipy: after parsing, so --help loads none of them
    from counterarg.sweep.race_files import survivors
    from counterarg.sweep.runner import Sweep
    from counterarg.sweep.spaces import method_strategies

    if args.smoke_test and args.strategies is None:
        args.strategies = SMOKE_STRATEGIES
    with usage_errors(p):  # a bad flag value, a locked or missing experiment: exit 2, no traceback
        strategies = method_strategies(args.strategies, args.methods)  # every strategy under every method
        first = args.first_seeds or (2 if args.smoke_test else 3)
        seeds = parse_seeds(args.seeds, range(args.max_seeds or (3 if args.smoke_test else 10)))
        most = args.max_seeds or len(seeds)
        race = RaceOptions(seeds=tuple(seeds), first_seeds=first, max_seeds=most, budget=args.budget)
        name = sweep_name(args, "race_strategies")
        sweep = Sweep(
            name=name,
            base=base_from_args(args, start=FROZEN_RECIPE),
            variants=strategies,
            race=race,
            **trial_resources(args),
        )
        result = run_from_args(args, sweep)
    if result.race is None:
        print("[race] no race state was saved: nothing ran", file=sys.stderr)
        return 1
    print(f"Race: {runnable_path(result.local_dir)}/race.csv, race.png ({result.race['stop'] or 'unfinished'})")
    print(f"Survivor(s): {'; '.join(survivors(result.race)) or 'none'}")
    return exit_code(result)  # 1 when a trial errored (named above)


if __name__ == "__main__":
    sys.exit(main())
