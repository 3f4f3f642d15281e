"""The command line the sweep scripts share (``sweeps/*.py``): flags, names, output, exit codes.

Each flag is checked when parsed (a usage error, exit 2, no traceback); the named errors of setting
up or resuming a sweep become usage errors too (:func:`usage_errors`). :func:`run_from_args` runs
the sweep and prints the table, the Ray overhead, the TensorBoard command and ready commands for
the best checkpoints; :func:`exit_code` turns the result into the script's exit status.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import stat
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..config import Config, ConfigError, parse_assignments
from ..data.inputs import int_at_least, number_at_least  # noqa: F401 - the sweep scripts import them from here
from ..core.io import FolderLockedError, disk_full_error, is_disk_full
from ..core.paths import runnable_path, shell_path
from ..sampling.schedules import SCHEDULES
from ..nn.testing import make_tiny_encoder
from ..analysis.methods import METHODS, parse_methods, slug
from .recovery import SweepStateError
from .runner import Sweep, SweepResult, local_experiment_dir, run_sweep, storage_uri, tensorboard_command
from ..analysis.summary import console_table
from ..analysis.trials import best_per_group, overhead


def parse_range(text: str) -> tuple[float, float]:
    """``LO,HI`` with 0 < LO < HI (the log-uniform ranges of --margin-range / --lr-range)."""
    parts = [x.strip() for x in text.split(",")]
    try:
        lo, hi = (float(x) for x in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two numbers), got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        raise argparse.ArgumentTypeError(f"expected 0 < LO < HI (a log-uniform range), got {text!r}")
    return lo, hi


def seeds_arg(text: str) -> list[int]:
    """argparse type of --seeds: comma-separated integers, each named when it is not one."""
    try:
        return parse_seeds(text, ())
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def methods_arg(text: str) -> list[str]:
    """argparse type of --methods: comma-separated names of :data:`counterarg.analysis.methods.METHODS`;
    an unknown one is a usage error naming it."""
    try:
        return parse_methods(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def method_arg(text: str) -> str:
    """argparse type of --method: one name of :data:`counterarg.analysis.methods.METHODS`."""
    names = methods_arg(text)
    if len(names) != 1:
        raise argparse.ArgumentTypeError(f"expected one method, got {text!r}")
    return names[0]


def add_methods_arg(p) -> None:
    """``--methods reference,recipe``: the methods every strategy is crossed with (default: all)."""
    p.add_argument("--methods", type=methods_arg, default=list(METHODS), metavar="NAME,...",
                   help="methods each strategy trains with, comma-separated: "
                        + "; ".join(f"{m.name} = {m.doc}" for m in METHODS.values())
                        + f" (default: {','.join(METHODS)})")


def add_common_args(p, start: Mapping[str, Any] | None = None) -> None:
    """Flags shared by the sweep scripts; each is checked when parsed (usage error, exit 2). ``start``:
    the preset the script's trials start from (its epochs are the --epochs default)."""
    p.add_argument("--corpus", help="ArguAna zip or folder (default: the built-in demo corpus)")
    p.add_argument("--encoder", help="encoder folder or name (default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--epochs", type=int_at_least(1),
                   help=f"epochs per trial, >= 1 (default: {Config.from_dict(dict(start or {})).epochs})")
    p.add_argument("--seeds", type=seeds_arg, default=None, help="comma-separated integer seeds, e.g. 0,1,2")
    p.add_argument("--storage", default=None,
                   help="experiment root: path or URI (file://, s3://, gs://); default results/")
    p.add_argument("--name", default=None,
                   help="experiment name (folder under --storage; default: a fresh <script>_<date>_<time> per run, "
                        "<script>_smoke_... with --smoke-test)")
    p.add_argument("--address", default=None,
                   help="join a Ray cluster ('auto' or host:port); default: a fresh local Ray bound to 127.0.0.1")
    p.add_argument("--resume", action="store_true",
                   help="continue <storage>/<name>: finished trials kept, unfinished continue "
                        "from their last epoch, errored ones restart (an error if there is nothing to resume)")
    p.add_argument("--smoke-test", action="store_true",
                   help="demo corpus, tiny random BERT, 2 epochs, 1 seed: a fast end-to-end check")
    p.add_argument("--cpus-per-trial", type=number_at_least(1), default=1,
                   help="CPUs per trial, >= 1 and at most what the machine/cluster has (default 1)")
    p.add_argument("--gpus-per-trial", type=number_at_least(0), default=0)
    p.add_argument("--num-cpus", type=int_at_least(1, os.cpu_count() or 1), default=None,
                   help=f"CPUs for a local Ray, at most this machine's {os.cpu_count() or 1} (default: all)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any Config field for every trial (repeatable)")


def add_strategies_arg(p) -> None:
    """``--strategies``: the strategies crossed with every ``--methods`` by the scripts that compare
    them (parsed by :func:`counterarg.sweep.spaces.method_strategies`)."""
    p.add_argument("--strategies", default=None,
                   help="strategies separated by ';', each NAME[:FIELD=V,...], crossed with every --methods; "
                        "names: " + "; ".join(f"{n} = {s.doc.replace('`', '')}" for n, s in SCHEDULES.items())
                        + " (default: each method's main-job list)")


def sweep_name(args, script: str) -> str:
    """The experiment name: ``--name``, else ``<script>[_smoke]_<date>_<time>``, a fresh folder per run,
    so that a user's sweep never rewrites the committed reference results (regenerated on purpose
    with ``--name <script>``). ``--resume`` without ``--name`` takes the newest such folder."""
    if args.name:
        return args.name
    base = f"{script}_smoke" if args.smoke_test else script
    if not args.resume:
        return f"{base}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    local = local_experiment_dir(storage_uri(args.storage), base)
    if local is None:
        raise SweepStateError("--resume on remote storage needs --name (the folder to resume)")
    runs = sorted((p for p in local.parent.glob(f"{base}_20*") if p.is_dir()), key=lambda p: p.name)
    if not runs:
        raise SweepStateError(f"--resume: no earlier {base}_<date> sweep under {local.parent}; pass --name")
    print(f"[sweep] resuming the newest {base} sweep: {runs[-1]}", flush=True)
    return runs[-1].name


@contextmanager
def usage_errors(parser):
    """Turn the named errors of setting up or resuming a sweep into ``parser.error`` (exit 2)."""
    try:
        yield
    except (ConfigError, SweepStateError, FileExistsError, FolderLockedError) as e:
        parser.error(str(e))


def smoke_encoder_dir() -> Path:
    """This user's tiny smoke-test BERT: ``<tmp>/counterarg-smoke-encoder-<uid>`` (not shared)."""
    return Path(tempfile.gettempdir()) / f"counterarg-smoke-encoder-{os.getuid()}"


def _own_folder(folder: Path) -> None:
    """Refuse a folder another user owns or may write (its weights would be loaded as ours)."""
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise ConfigError(f"{folder} is not a folder owned by you and writable only by you; "
                          "remove it (the smoke test makes it again)")


def base_from_args(args, smoke_dir: Path | None = None, start: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Shared Config overrides from the flags (validated), on top of ``start`` (a preset's fields, e.g.
    config.FROZEN_RECIPE for the strategy sweeps); the smoke test, --epochs and --set win over it."""
    base: dict[str, Any] = dict(start or {})
    if args.smoke_test:
        folder = smoke_dir or smoke_encoder_dir()
        if folder.exists() or folder.is_symlink():
            _own_folder(folder)
        else:
            folder.mkdir(mode=0o700)
        base.update(encoder=make_tiny_encoder(folder), epochs=2, corpus=None, max_length=64,
                    device="cpu")
    for k in ("corpus", "encoder", "epochs"):
        v = getattr(args, k)
        if v is not None:
            base[k] = v
    base.update(parse_assignments(args.overrides))
    cfg = Config.from_dict(base)
    values = cfg.to_dict()
    out = {k: values[k] for k in base}
    return absolute_paths(out)


def absolute_paths(fields: dict[str, Any]) -> dict[str, Any]:
    """Make local paths absolute: trials run in their own working folders (and on other nodes)."""
    out = dict(fields)
    for k in ("corpus", "cache_dir", "encoder"):
        v = out.get(k)
        if isinstance(v, str) and v and "://" not in v:
            p = Path(v).expanduser()
            if p.exists() or k != "encoder":  # a hub name such as bert-base-uncased stays as it is
                out[k] = str(p.resolve())
    return out


#: the largest seed numpy's generators take
MAX_SEED = 2**32 - 1


def parse_seeds(text: str | list[int] | None, default: Sequence[int]) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; ``None`` (no --seeds) -> ``default``. A part that is not an
    integer in [0, 2**32 - 1], a seed given twice (two identical trials) or no seed at all (``''``,
    ``','``) is a ConfigError naming it."""
    if text is None:
        return list(default)
    parts = [str(s) for s in text] if isinstance(text, list) else [s.strip() for s in text.split(",")]
    seeds = []
    for part in filter(None, parts):
        try:
            seed = int(part)
        except ValueError:
            raise ConfigError(f"--seeds expects comma-separated integers, got {part!r} in {text!r}") from None
        if not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"--seeds: seed {seed} is out of range (0 to {MAX_SEED})")
        if seed in seeds:
            raise ConfigError(f"--seeds repeats {seed} in {text!r}: two identical trials; give each seed once")
        seeds.append(seed)
    if not seeds:
        raise ConfigError(f"--seeds holds no seed: {text!r}")
    return seeds


def export_folder(sweep_dir: Path, group: str) -> Path:
    """Where the printed export command of a strategy's best checkpoint writes: inside the sweep's
    own folder (``<sweep>/models/<slug>``), so it is unique per sweep and, under the default
    ``results/``, ignored by git (a sweep's commands never dirty the repository)."""
    return Path(sweep_dir) / "models" / (slug(group, 40) or "model")


def best_commands(rows: list[dict[str, Any]], sweep: Sweep, corpus: str | None, sweep_dir: Path) -> str:
    """The best trial per strategy and ready commands to evaluate, rank with and export it (paths
    relative to the current folder where they lie inside it; exports into :func:`export_folder`)."""
    best = best_per_group(rows, sweep.metric)
    if not best:
        return "No trial finished an epoch: no checkpoint to use."
    groups = sorted(best)
    if getattr(sweep, "param_space", None) is not None and len(groups) > 1:  # a search: its selected one
        pick = max if getattr(sweep, "mode", "max") == "max" else min
        groups = [pick(groups, key=lambda g: best[g][sweep.metric])]
        lines = [f"Selected configuration (by {sweep.metric}; the others are ranked in summary.md):"]
    else:
        lines = [f"Best checkpoint per strategy (by {sweep.metric}):"]
    corpus_arg = f" --corpus {shlex.quote(str(corpus))}" if corpus else ""
    for g in groups:
        r = best[g]
        ck = r.get("best_checkpoint")
        lines.append(f"  {g}  (seed {r['seed']}, epoch {r['best_epoch']}, {r[sweep.metric]:.4f})")
        if not ck:
            lines.append("    checkpoint not kept")
            continue
        q = shell_path(ck)
        out = shell_path(export_folder(sweep_dir, g))
        lines += [f"    counterarg evaluate --checkpoint {q}{corpus_arg} --split test",
                  f"    counterarg rank --checkpoint {q} --text \"Your argument ...\" --k 5",
                  f"    counterarg export --checkpoint {q} --out {out}"]
    return "\n".join(lines)


def run_from_args(args, sweep: Sweep, finish: Callable[[SweepResult], SweepResult] | None = None) -> SweepResult:
    """Run the sweep from parsed flags and print the table, overhead and TensorBoard command.

    ``finish``, when given, takes the finished sweep's result before anything is printed and returns
    the one to print (PBT's rewrites the summary with each trial named by its learned schedule).
    Setup errors (a locked or missing experiment, a cut state file, more CPUs than there are)
    raise their named error for :func:`usage_errors`; use :func:`exit_code` for the result.
    """
    storage = storage_uri(args.storage)
    resume_cmd = " ".join(["python", *sys.argv] + ([] if "--resume" in sys.argv else ["--resume"]))
    try:
        result = run_sweep(sweep, storage=storage, address=args.address, resume=args.resume,
                           num_cpus=args.num_cpus)
    except KeyboardInterrupt:  # a second Ctrl-C, past Tune's own graceful stop
        print(f"\n[sweep] interrupted; finished epochs are kept. Resume with:\n  {resume_cmd}", file=sys.stderr)
        raise SystemExit(130) from None
    except (OSError, RuntimeError) as e:  # Tune's own writes to a full storage disk: name it, keep the rest
        where = Path(local_experiment_dir(storage, sweep.name) or storage)
        if not is_disk_full(e, where):
            raise
        err = disk_full_error(where, "every finished epoch's checkpoint and the experiment state already "
                                     f"written; resume with: {resume_cmd}")
        print(f"[sweep] error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    if finish is not None:
        result = finish(result)

    print()
    print(console_table(result.rows, metric=sweep.metric, verdict=result.verdicts, baseline=result.baseline))
    n_err = sum(r.ended == "error" for r in result.records)
    n_open = sum(not r.finished and r.ended != "error" for r in result.records)
    ov = overhead(result.rows)["overhead"]
    print(f"{len(result.records)} trials ({n_err} errored, {n_open} unfinished) in {result.wall_s / 60:.1f} min"
          + (f"; {100 * ov:.1f}% of trial time spent in Ray, outside training" if ov is not None else ""))
    print(f"Summary: {runnable_path(result.local_dir)}/summary.md, summary.csv, significance.csv, *.png")
    print(f"TensorBoard: {tensorboard_command(storage, sweep.name)}")
    print(best_commands(result.rows, sweep, getattr(args, "corpus", None), result.local_dir))
    errored = [r for r in result.records if r.ended == "error"]
    if errored:
        print(f"{len(errored)} trial(s) errored; `--resume` retries them:", file=sys.stderr)
        for r in errored:
            print(f"  {r.trial_id}: {r.error}", file=sys.stderr)
    unfinished = [r for r in result.records if not r.finished and r.ended != "error"]
    if unfinished:  # Ctrl-C: Tune stopped the trials and saved its state
        print(f"[sweep] interrupted: {len(unfinished)} of {len(result.records)} trials unfinished (the summary "
              f"above covers what ran). Resume with:\n  {resume_cmd}", file=sys.stderr)
    return result


def exit_code(result: SweepResult) -> int:
    """0 when every trial finished; 1 when any errored (named by :func:`run_from_args`); 130 when the
    sweep was interrupted (Ctrl-C) with trials unfinished."""
    if any(r.ended == "error" for r in result.records):
        return 1
    return 130 if any(not r.finished for r in result.records) else 0
