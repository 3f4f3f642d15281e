#!/usr/bin/env python
"""Compare random_rate strategies under each training method, over seeds.

Every strategy (--strategies) is crossed with every method (--methods: reference, the reference
implementation; recipe, the project's default recipe) and repeated over --seeds. Without
--strategies it runs the main job: each method's own list (below), x seeds 0,1,2. Every trial
starts from the frozen recipe (``--config frozen``: cached pooled features, heads only, 30 epochs, the
recipe stopping early) rather than the top-layer default, which costs about ten times as much per
epoch; --set finetune=top:1 asks for it. Outputs (the Tune experiment, summary.csv/.md, significance.csv,
plots) go to <storage>/<name>: by default results/compare_strategies_<date>_<time>/, a fresh
folder per run. Guide: docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import sys

from counterarg.analysis.methods import METHODS
from counterarg.config import FROZEN_RECIPE
from counterarg.data.inputs import DefaultsHelpFormatter
from counterarg.sweep.cli import (
    add_common_args,
    add_methods_arg,
    add_strategies_arg,
    base_from_args,
    exit_code,
    parse_seeds,
    run_from_args,
    sweep_name,
    trial_resources,
    usage_errors,
)


def main_job() -> str:
    """The main job's trials, per method, as --help shows them (read from the method registry)."""
    n = sum(len(m.strategies) for m in METHODS.values())
    lines = [
        f"The main job ({n} strategies x 3 seeds = {3 * n} trials, {FROZEN_RECIPE['epochs']} epochs unless --epochs):"
    ]
    lines += [f'  --methods {m.name} --strategies "{";".join(m.strategies)}"' for m in METHODS.values()]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, epilog=main_job(), formatter_class=DefaultsHelpFormatter)
    add_common_args(p, start=FROZEN_RECIPE, seeds="0,1,2; smoke 0")
    add_methods_arg(p)
    add_strategies_arg(p)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    from counterarg.sweep.runner import Sweep  # Ray: after parsing, so --help loads none of it
    from counterarg.sweep.spaces import strategy_grid

    with usage_errors(p):  # a bad flag value, a locked or missing experiment: exit 2, no traceback
        seeds = parse_seeds(args.seeds, (0,) if args.smoke_test else (0, 1, 2))
        variants = strategy_grid(args.strategies, seeds, args.methods)
        name = sweep_name(args, "compare_strategies")
        sweep = Sweep(
            name=name,
            base=base_from_args(args, start=FROZEN_RECIPE),
            variants=variants,
            **trial_resources(args),
        )
        result = run_from_args(args, sweep)
    return exit_code(result)  # 1 when a trial errored (named above)


if __name__ == "__main__":
    sys.exit(main())
