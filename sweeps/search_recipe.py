#!/usr/bin/env python
"""Random or ASHA search over any Config fields, read from a space file, selected on validation.

Each of --num-samples trials starts from a method's fields (--method: recipe, the Config defaults;
or reference) and draws the fields of --space FILE (default sweeps/spaces/recipe.json), a JSON
object of Config fields -> {"choice": [..]}, {"grid": [..]}, {"uniform": [lo, hi]},
{"loguniform": [lo, hi]}, {"randint": [lo, hi]} (hi excluded) or a fixed value. ASHA (the default
scheduler) stops trials that fall behind at epochs grace, grace*factor, ...; the trials are ranked
and one configuration selected on the Config field select_metric (validation only). Outputs in
<storage>/<name> as every sweep's, and summary.md's "Search (validation)" section: each
configuration's searched values, the selected one and its `counterarg train` command.
Guide: docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from counterarg.analysis.methods import DEFAULT_METHOD
from counterarg.analysis.trials import MAX_NUM_SAMPLES
from counterarg.core.paths import portable_path
from counterarg.data.inputs import DefaultsHelpFormatter
from counterarg.sweep.cli import (
    add_common_args,
    add_method_arg,
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

DEFAULT_SPACE = Path(__file__).resolve().parent / "spaces" / "recipe.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    add_common_args(p)
    p.add_argument(
        "--space",
        type=Path,
        default=DEFAULT_SPACE,
        metavar="FILE",
        help="JSON space file of Config fields (default: sweeps/spaces/recipe.json)",
    )
    add_method_arg(p, "the fields every trial starts from", DEFAULT_METHOD)
    p.add_argument(
        "--num-samples",
        type=int_at_least(1, MAX_NUM_SAMPLES),
        default=None,
        help=f"sampled configurations, 1 to {MAX_NUM_SAMPLES}; each runs once per seed and per "
        "grid value (default 8; smoke 2)",
    )
    p.add_argument(
        "--scheduler",
        choices=("asha", "fifo"),
        default="asha",
        help="asha: trials that fall behind at epochs grace, grace*factor, ... are stopped; "
        "fifo: every trial trains its epochs",
    )
    p.add_argument(
        "--grace-period",
        type=int_at_least(1),
        default=None,
        help="asha: epochs every trial trains before it can be stopped (default 1)",
    )
    p.add_argument(
        "--reduction-factor",
        type=number_at_least(1),
        default=None,
        help="asha: the top 1/F of the trials at each rung go on, F > 1 (default 3)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    from counterarg.sweep.runner import Sweep  # Ray: after parsing, so --help loads none of it
    from counterarg.sweep.space_file import read_space_file, search_space
    from counterarg.sweep.spaces import method_start

    with usage_errors(p):  # a bad flag value or space file, a locked or missing experiment: exit 2, no traceback
        seeds = parse_seeds(args.seeds, (0,))
        num_samples = args.num_samples if args.num_samples is not None else (2 if args.smoke_test else 8)
        name = sweep_name(args, "search_recipe")
        base = base_from_args(args)
        # the test split is scored for the selected configuration only (the printed evaluate command),
        # not for every sampled one: --set test_every=N asks for it per trial
        base.setdefault("test_every", 0)
        space = search_space(
            read_space_file(args.space),
            start=method_start(args.method),
            seeds=seeds,
            base=base,
            source=portable_path(args.space),
        )
        grace, factor = args.grace_period, args.reduction_factor
        if args.scheduler == "asha":  # this search's defaults; fifo with either flag is refused by Sweep
            grace, factor = (1 if grace is None else grace), (3 if factor is None else factor)
        sweep = Sweep(
            name=name,
            base=base,
            param_space=space,
            num_samples=num_samples,
            scheduler=args.scheduler,
            grace_period=grace,
            reduction_factor=factor,
            **trial_resources(args),
        )
        result = run_from_args(args, sweep)
    return exit_code(result)  # 1 when a trial errored (named above)


if __name__ == "__main__":
    sys.exit(main())
