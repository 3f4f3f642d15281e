"""The command line the sweep scripts share (``sweeps/*.py``): flags, names, output, exit codes.

Each flag is checked when parsed (a usage error, exit 2, no traceback); the named errors of setting
up or resuming a sweep become usage errors too (:func:`usage_errors`). :func:`run_from_args` runs
the sweep and prints the table, the Ray overhead, the TensorBoard command and ready commands for
the best checkpoints; :func:`exit_code` turns the result into the script's exit status.

Ray, Tune and the summary's pandas and matplotlib are imported by the functions that run a sweep,
never at parse time: a script's ``--help`` and a flag's usage error load none of them.
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
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..analysis.methods import METHODS, parse_methods, slug
from ..analysis.trials import best_per_group, overhead
from ..config import PRESET_DOCS, PRESETS, Config, ConfigError, parse_assignments
from ..core.io import FolderLockedError, disk_full_error, folder_problem, is_disk_full
from ..core.paths import runnable_path, shell_path
from ..data.inputs import int_at_least, number_at_least  # noqa: F401 - the sweep scripts import them from here
from ..sampling.schedules import SCHEDULES
from . import DEFAULT_MAX_FAILURES

if TYPE_CHECKING:
    from .runner import Sweep, SweepResult


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
    p.add_argument(
        "--methods",
        type=methods_arg,
        default=list(METHODS),
        metavar="NAME,...",
        help="methods each strategy trains with, comma-separated: "
        + "; ".join(f"{m.name} = {m.doc}" for m in METHODS.values())
        + f" (default: {','.join(METHODS)})",
    )


def add_method_arg(p, what: str, default: str) -> None:
    """``--method NAME``: the one method a script's trials train with; ``what`` says what it is for."""
    p.add_argument(
        "--method",
        type=method_arg,
        default=default,
        help=f"{what}: " + "; ".join(f"{m.name} = {m.doc}" for m in METHODS.values()) + f" (default {default})",
    )


def add_range_arg(p, flag: str, default: str, what: str) -> None:
    """``--lr-range LO,HI``-style flag: a range of a searched or resampled field (``default`` in the
    flag's own form, e.g. ``"1e-4,1e-2"``)."""
    p.add_argument(
        flag, type=parse_range, default=parse_range(default), metavar="LO,HI", help=f"{what} (default {default})"
    )


def add_common_args(p, start: Mapping[str, Any] | None = None, seeds: str = "0") -> None:
    """Flags shared by the sweep scripts; each is checked when parsed (usage error, exit 2). ``start``:
    the preset the script's trials start from (its epochs are the --epochs default; kept as the parser's
    ``config_start`` for the test that compares shown defaults with Config's); ``seeds``: the script's
    default --seeds as its help says it."""
    defaults = Config.from_dict(dict(start or {}))
    p.config_start = dict(start or {})
    start_name = next((n for n, v in PRESETS.items() if start and dict(v) == dict(start)), None)
    p.add_argument(
        "--config",
        metavar="PRESET|FILE",
        help="what every trial starts from, under the strategy, --epochs and --set: a preset ("
        + "; ".join(f"{n} = {PRESET_DOCS[n]}" for n in PRESETS)
        + f"), {DEFAULT_START!r} (the Config defaults, what `counterarg train` trains with no --config) or a "
        f"JSON file of config fields (default: {start_name or DEFAULT_START})",
    )
    p.add_argument("--corpus", help="ArguAna zip or folder (default: the built-in demo corpus)")
    p.add_argument("--encoder", help=f"encoder folder or name (default: {defaults.encoder}, embedded)")
    p.add_argument("--epochs", type=int_at_least(1), help=f"epochs per trial, >= 1 (default: {defaults.epochs})")
    p.add_argument(
        "--seeds",
        type=seeds_arg,
        default=None,
        metavar="N,...",
        help=f"comma-separated integer seeds in [0, {MAX_SEED}], each once, e.g. 0,1,2 (default: {seeds})",
    )
    p.add_argument(
        "--storage", default=None, help="experiment root: path or URI (file://, s3://, gs://) (default: results/)"
    )
    p.add_argument(
        "--name",
        default=None,
        help="experiment name (folder under --storage; default: a fresh <script>_<date>_<time> per run, "
        "<script>_smoke_... with --smoke-test)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="join a Ray cluster ('auto' or host:port) (default: a fresh local Ray bound to 127.0.0.1)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue <storage>/<name>: finished trials kept, unfinished continue "
        "from their last epoch, errored ones too (an error if there is nothing to resume)",
    )
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help="demo corpus, tiny random BERT, 2 epochs, 1 seed: a fast end-to-end check",
    )
    p.add_argument(
        "--cpus-per-trial",
        type=number_at_least(1),
        default=1,
        help="CPUs per trial, >= 1 and at most what the machine/cluster has",
    )
    p.add_argument(
        "--gpus-per-trial",
        type=number_at_least(0),
        default=0,
        help="GPUs per trial, >= 0; a fraction such as 0.5 lets two trials share one GPU",
    )
    p.add_argument(
        "--max-failures",
        type=int_at_least(0),
        default=DEFAULT_MAX_FAILURES,
        help="lost nodes or worker processes one trial survives, each time continuing from its last epoch "
        "checkpoint; 0: a lost node errors the trial (an error of the training itself is never retried)",
    )
    p.add_argument(
        "--num-cpus",
        type=int_at_least(1, os.cpu_count() or 1),
        default=None,
        help=f"CPUs for a local Ray, at most this machine's {os.cpu_count() or 1} (default: all)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override any Config field for every trial (repeatable; default: none)",
    )


def trial_resources(args) -> dict[str, Any]:
    """The :class:`~counterarg.sweep.runner.Sweep` fields the shared flags set for each trial: its CPUs
    and GPUs, and how many lost nodes or workers it survives."""
    return {
        "cpus_per_trial": args.cpus_per_trial,
        "gpus_per_trial": args.gpus_per_trial,
        "max_failures": args.max_failures,
    }


def add_strategies_arg(p) -> None:
    """``--strategies``: the strategies crossed with every ``--methods`` by the scripts that compare
    them (parsed by :func:`counterarg.sweep.spaces.method_strategies`)."""
    p.add_argument(
        "--strategies",
        default=None,
        help="strategies separated by ';', each NAME[:FIELD=V,...], crossed with every --methods; "
        "names: "
        + "; ".join(f"{n} = {s.doc.replace('`', '')}" for n, s in SCHEDULES.items())
        + " (default: each method's main-job list)",
    )


def sweep_name(args, script: str) -> str:
    """The experiment name: ``--name``, else ``<script>[_smoke]_<date>_<time>``, a fresh folder per run,
    so that a user's sweep never rewrites the committed reference results (regenerated on purpose
    with ``--name <script>``). ``--resume`` without ``--name`` takes the newest such folder."""
    if args.name:
        return args.name
    base = f"{script}_smoke" if args.smoke_test else script
    if not args.resume:
        return f"{base}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    from .recovery import SweepStateError
    from .runner import local_experiment_dir, storage_uri

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
    except (ConfigError, FileExistsError, FolderLockedError) as e:
        parser.error(str(e))
    except Exception as e:  # a sweep's own state error: only once its module is loaded can it be raised
        recovery = sys.modules.get(f"{__package__}.recovery")
        if recovery is None or not isinstance(e, recovery.SweepStateError):
            raise
        parser.error(str(e))


def smoke_encoder_dir() -> Path:
    """This user's tiny smoke-test BERT: ``<tmp>/counterarg-smoke-encoder-<uid>`` (not shared)."""
    return Path(tempfile.gettempdir()) / f"counterarg-smoke-encoder-{os.getuid()}"


def _own_folder(folder: Path) -> None:
    """Refuse a folder another user owns or may write (its weights would be loaded as ours)."""
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise ConfigError(
            f"{folder} is not a folder owned by you and writable only by you; remove it (the smoke test makes it again)"
        )


#: ``--config default``: the trials start from the Config defaults (the default recipe's training)
DEFAULT_START = "default"


def start_fields(name: str) -> dict[str, Any]:
    """The fields ``--config NAME`` starts every trial from: a preset's (:data:`~counterarg.config.PRESETS`),
    none for :data:`DEFAULT_START`, or a JSON file's (validated: an unknown field is a ConfigError
    naming it)."""
    if name == DEFAULT_START:
        return {}
    data = Config.read_fields(name)  # a preset's, or the file's (its read errors named)
    Config.from_dict(data)  # an unknown or mistyped field, named
    return data


def base_from_args(args, smoke_dir: Path | None = None, start: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Shared Config overrides from the flags (validated), on top of ``start`` (a preset's fields, e.g.
    config.FROZEN_RECIPE for the strategy sweeps; ``--config`` replaces it); the smoke test, --epochs
    and --set win over it."""
    config = getattr(args, "config", None)
    base: dict[str, Any] = start_fields(config) if config else dict(start or {})
    if args.smoke_test:
        folder = smoke_dir or smoke_encoder_dir()
        if folder.exists() or folder.is_symlink():
            _own_folder(folder)
        else:
            folder.mkdir(mode=0o700)
        from ..nn.testing import make_tiny_encoder

        base.update(encoder=make_tiny_encoder(folder), epochs=2, corpus=None, max_length=64, device="cpu")
    for k in ("corpus", "encoder", "epochs"):
        v = getattr(args, k)
        if v is not None:
            base[k] = v
    base.update(parse_assignments(args.overrides))
    cfg = Config.from_dict(base)
    problem = folder_problem(cfg.cache_dir) if cfg.cache_dir else None
    if problem:  # every trial would fail on it
        raise ConfigError(f"cache_dir: {problem}")
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
    """The best finished trial per strategy, one line each, then ready commands to evaluate, rank
    with and export the best of them (a search: its selected configuration); paths relative to the
    current folder where they lie inside it; exports into :func:`export_folder`. A strategy none of
    whose trials finished is named without a checkpoint (an under-trained seed is never offered)."""
    metric = sweep.tune_metric
    best = best_per_group(rows, metric)
    groups = sorted({r["group"] for r in rows} | set(best))
    if not best:
        return "No trial finished: no checkpoint to use (--resume completes the unfinished ones)."
    pick = max if getattr(sweep, "mode", "max") == "max" else min
    top = pick(sorted(best), key=lambda g: best[g][metric])
    searched = getattr(sweep, "param_space", None) is not None and len(best) > 1
    lines = [f"Best checkpoint per strategy (by {metric}; finished trials only):"]
    width = max(len(g) for g in groups)
    for g in groups:
        r = best.get(g)
        if r is None:
            lines.append(f"  {g:<{width}}  none: no trial of it finished")
            continue
        where = shell_path(r["best_checkpoint"]) if r.get("best_checkpoint") else "checkpoint not kept"
        lines.append(f"  {g:<{width}}  seed {r['seed']}, epoch {r['best_epoch']}, {r[metric]:.4f}  {where}")
    r = best[top]
    if not r.get("best_checkpoint"):
        return "\n".join(lines)
    q, out = shell_path(r["best_checkpoint"]), shell_path(export_folder(sweep_dir, top))
    corpus_arg = f" --corpus {shlex.quote(str(corpus))}" if corpus else ""
    what = "the selected configuration" if searched else "the best of them"
    lines += [
        f"Use {what}, {top} (the others likewise):",
        f"  counterarg evaluate --checkpoint {q}{corpus_arg} --split test",
        f'  counterarg rank --checkpoint {q} --text "Your argument ..." --k 5',
        f"  counterarg export --checkpoint {q} --out {out}",
    ]
    return "\n".join(lines)


def run_from_args(args, sweep: Sweep, finish: Callable[[SweepResult], SweepResult] | None = None) -> SweepResult:
    """Run the sweep from parsed flags and print the table, overhead and TensorBoard command.

    ``finish``, when given, takes the finished sweep's result before anything is printed and returns
    the one to print (PBT's rewrites the summary with each trial named by its learned schedule).
    Setup errors (a locked or missing experiment, a cut state file, more CPUs than there are)
    raise their named error for :func:`usage_errors`; use :func:`exit_code` for the result.
    """
    from ..analysis.summary import console_table
    from .runner import local_experiment_dir, run_sweep, storage_uri, tensorboard_command

    storage = storage_uri(args.storage)
    # quoted: a --strategies list holds ";", and the user pastes this into a shell
    resume_cmd = shlex.join(["python", *sys.argv] + ([] if "--resume" in sys.argv else ["--resume"]))
    try:
        result = run_sweep(sweep, storage=storage, address=args.address, resume=args.resume, num_cpus=args.num_cpus)
    except KeyboardInterrupt:  # a second Ctrl-C, past Tune's own graceful stop
        print(f"\n[sweep] interrupted; finished epochs are kept. Resume with:\n  {resume_cmd}", file=sys.stderr)
        raise SystemExit(130) from None
    except (OSError, RuntimeError) as e:  # Tune's own writes to a full storage disk: name it, keep the rest
        disk_at = Path(local_experiment_dir(storage, sweep.name) or storage)
        if not is_disk_full(e, disk_at):
            raise
        err = disk_full_error(
            disk_at,
            f"every finished epoch's checkpoint and the experiment state already written; resume with: {resume_cmd}",
        )
        print(f"[sweep] error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    if finish is not None:
        result = finish(result)
        result.publish()  # object storage: what finish wrote goes into the experiment too

    print()
    print(console_table(result.rows, metric=sweep.tune_metric, verdict=result.verdicts, baseline=result.baseline))
    n_err = sum(r.ended == "error" for r in result.records)
    n_open = sum(not r.finished and r.ended != "error" for r in result.records)
    ov = overhead(result.rows)["overhead"]
    sessions = result.sessions
    this = result.session_s if result.session_s is not None else result.wall_s
    took = f"{result.wall_s / 60:.1f} min" + (
        f" over {sessions} sessions (this one {this / 60:.1f} min)" if sessions > 1 else ""
    )
    print(
        f"{len(result.records)} trials ({n_err} errored, {n_open} unfinished) in {took}"
        + (f"; {100 * ov:.1f}% of trial time spent in Ray, outside training" if ov is not None else "")
    )
    where = result.summary_at if result.remote is not None else runnable_path(result.local_dir)
    print(f"Summary: {where}/summary.md, summary.csv, significance.csv, *.png")
    print(f"TensorBoard: {tensorboard_command(storage, sweep.name)}")
    print(
        best_commands(
            result.rows,
            sweep,
            getattr(args, "corpus", None),
            Path(sweep.name) if result.remote is not None else result.local_dir,
        )
    )
    errored = [r for r in result.records if r.ended == "error"]
    if errored:
        print(
            f"{len(errored)} trial(s) errored; `--resume` continues them from their last checkpoint:", file=sys.stderr
        )
        for r in errored:
            print(f"  {r.trial_id}: {r.error}", file=sys.stderr)
    unfinished = [r for r in result.records if not r.finished and r.ended != "error"]
    if unfinished:  # Ctrl-C: Tune stopped the trials and saved its state
        print(
            f"[sweep] interrupted: {len(unfinished)} of {len(result.records)} trials unfinished (the summary "
            f"above covers what ran). Resume with:\n  {resume_cmd}",
            file=sys.stderr,
        )
    return result


def exit_code(result: SweepResult) -> int:
    """0 when every trial finished; 1 when any errored (named by :func:`run_from_args`); 130 when the
    sweep was interrupted (Ctrl-C) with trials unfinished."""
    if any(r.ended == "error" for r in result.records):
        return 1
    return 130 if any(not r.finished for r in result.records) else 0
