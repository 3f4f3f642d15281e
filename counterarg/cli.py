"""``counterarg train | evaluate | rank | embed | export | compare | bench``: parse, build, run."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path
from typing import Any

from .config import (
    EVAL,
    FIELD_NAMES,
    MACHINE_FIELDS,
    PRESET_DOCS,
    PRESETS,
    Config,
    ConfigError,
    fields_with,
    parse_assignments,
)
from .data.inputs import (
    MAX_CANDIDATES_BYTES,
    DefaultsHelpFormatter,
    int_at_least,
    read_input_text,
    read_texts,
)

#: Size limit of the new argument ``rank`` reads from --text-file (checked before reading; a text is cut to
#: max_length * CHARS_PER_TOKEN characters anyway); candidates: inputs.MAX_CANDIDATES_BYTES.
MAX_TEXT_FILE_BYTES = 1 << 20

# fields a user may change when evaluating a checkpoint (their role "eval": the machine's own and how to
# score); the rest describe the trained model
EVAL_FIELDS = set(fields_with(EVAL))
# ... for rank and embed (their --device and --candidates/--corpus flags say the rest)
RANK_FIELDS = EVAL_FIELDS - {"corpus", "device"}
EMBED_FIELDS = set(MACHINE_FIELDS) - {"device"}


def _config(args) -> Config:
    cfg = Config.load(args.config) if getattr(args, "config", None) else Config()
    cfg = cfg.with_overrides(args.set or [])
    if getattr(args, "corpus", None) is not None:
        cfg = cfg.replace(corpus=args.corpus)
    return cfg


def cmd_train(args) -> int:
    from .training.loop import train

    cfg = _config(args)
    if args.epochs is not None:
        cfg = cfg.replace(epochs=args.epochs)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if not args.resume and (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").stat().st_size > 0:
        raise ConfigError(
            f"{out} already holds a run (metrics.jsonl); pass --resume to continue it, or choose another --out"
        )
    history = train(cfg, out, resume_latest=args.resume, progress=not args.quiet)
    last = history[-1] if history else {}
    print(f"[counterarg] done: {len(history)} epochs in {out.resolve()}")
    print(f"  config      {out.resolve() / 'config.json'}")
    print(f"  metrics     {out.resolve() / 'metrics.jsonl'}")
    print(f"  checkpoint  {out.resolve() / 'checkpoint'}")
    for key in ("validation/mean/acc@1", "test/mean/acc@1"):
        if key in last:
            print(f"  {key} = {last[key]:.4f}")
    return 0


def _checkpoint_overrides(args, cfg: Config, allowed) -> dict:
    """The ``--set`` changes a command may make to a checkpoint's config ``cfg``: only fields in
    ``allowed`` (setting another field to the checkpoint's own value is no change); values validated."""
    overrides = Config().with_overrides(args.set or [])  # validates names and values
    changes = {}
    for key in parse_assignments(args.set or []):
        value = getattr(overrides, key)
        if key not in allowed and value != getattr(cfg, key):
            raise ConfigError(
                f"--set {key}: the checkpoint {args.checkpoint} was trained with "
                f"{key}={getattr(cfg, key)!r}; a checkpoint from another model cannot be used "
                f"as {value!r} (changeable here: {', '.join(sorted(allowed))})"
            )
        changes[key] = value
    return changes


def _checkpoint_config(args) -> tuple[Config, dict | None]:
    """The config to evaluate with: the checkpoint's (less this machine's fields,
    config.MACHINE_FIELDS), with only evaluation fields changeable."""
    from .model.checkpoint import read_checkpoint

    if args.zero_shot:
        cfg = Config().with_overrides(args.set or [])
        return (cfg.replace(corpus=args.corpus) if args.corpus else cfg), None
    state = read_checkpoint(args.checkpoint)
    cfg = Config.from_checkpoint(state["model"]["config"])  # this machine's cache_dir, device, ...
    changes = _checkpoint_overrides(args, cfg, EVAL_FIELDS)
    if args.corpus:
        changes["corpus"] = args.corpus
    return cfg.replace(**changes), state


def cmd_evaluate(args) -> int:
    from .evaluation.evaluate import evaluate_corpus_split
    from .retrieval.arguana import TITLE as ARGUANA_TITLE
    from .retrieval.arguana import format_view
    from .retrieval.metrics import format_table, unseen_split

    if args.json and Path(args.json).is_dir():
        raise ConfigError(f"--json {args.json} is a folder; give a file name, e.g. {Path(args.json) / 'metrics.json'}")
    cfg, state = _checkpoint_config(args)
    source = Path(args.checkpoint) if state is not None else None
    report = evaluate_corpus_split(cfg, args.split, state, source=source, progress=not args.quiet)
    metrics, pools, arguana = report.metrics, report.pools, report.view
    what = (
        "zero-shot (pooled encoder output, cosine)"
        if state is None
        else f"checkpoint {args.checkpoint} (epoch {state['epoch']}, {cfg.eval_mode}, {cfg.eval_metric})"
    )
    print(f"{cfg.encoder} [{cfg.pooling}, max_length {cfg.max_length}] on {report.corpus.source} - {what}")
    if args.quiet:  # otherwise said above
        print(pools.describe())
    print(format_table(metrics, args.split, pools, ks=cfg.ks))
    view = unseen_split(args.split)
    if pools.unseen is not None and any(k.startswith(view + "/") for k in metrics):  # the mask gives the view
        print(
            f"\nunseen view: the {int(pools.unseen.sum())} of {pools.num_queries} queries whose point and "
            "counter texts occur nowhere in the training split"
        )
        print(format_table(metrics, view, pools, ks=cfg.ks))
    print(f"\n{ARGUANA_TITLE}, per cent: {arguana.describe()}")
    print(format_view(metrics, args.split, arguana))
    if args.json:
        from .core.io import atomic_write_json

        atomic_write_json(Path(args.json), metrics)
        print(f"[counterarg] metrics written to {Path(args.json).resolve()}")
    return 0


def cmd_rank(args) -> int:
    import json

    import numpy as np

    from .model.biencoder import BiEncoder
    from .serving.candidates import CandidateSource, rank_text, read_candidates

    if args.k < 1:
        raise ConfigError(f"--k must be >= 1, got {args.k}")
    text = read_input_text(args.text_file, "--text-file", MAX_TEXT_FILE_BYTES) if args.text_file else args.text
    if not text.strip():
        raise ConfigError("--text-file holds no text" if args.text_file else "--text is empty")
    model = BiEncoder.from_checkpoint(args.checkpoint, device=args.device, forward_only=True)
    model.config = cfg = model.config.replace(**_checkpoint_overrides(args, model.config, RANK_FIELDS))
    model.scoring_weight(strict=True)  # a weight the scorer needs and the checkpoint lacks: said before encoding
    source = CandidateSource(args.candidates, args.candidate_texts, args.field, args.corpus, args.split)
    ranking = rank_text(model, text, read_candidates(model, source), args.k, progress=not args.quiet)
    cands, sources = ranking.candidates.texts, ranking.candidates.sources
    label = model.scorer.label
    if args.json:
        out = [
            {
                "rank": r,
                "score": None if np.isnan(sc_) else float(sc_),
                "id": int(i),
                "source": sources[i],
                "text": cands[i],
            }
            for r, (i, sc_) in enumerate(zip(ranking.ids, ranking.scores), 1)
        ]
        print(
            json.dumps(
                {"query": text, "mode": cfg.eval_mode, "score": label, "candidates": len(cands), "results": out},
                ensure_ascii=False,
                indent=1,
            )
        )
        return 0
    print(
        f"best {len(ranking.ids)} of {len(cands)} candidates ({cfg.eval_mode}; {label}; "
        f"candidates {ranking.how}; {ranking.seconds:.1f} s):"
    )
    for r, (i, sc_) in enumerate(zip(ranking.ids, ranking.scores), 1):
        t = cands[i].replace("\n", " ")
        print(f"{r:>3}. [{'' if np.isnan(sc_) else f'{sc_:.4f}'}] {t[:160]}{'...' if len(t) > 160 else ''}")
        print(f"     {sources[i]}")
    return 0


def cmd_embed(args) -> int:
    from .model.biencoder import BiEncoder
    from .serving.inference import save_embeddings

    texts = read_texts(args.input, args.field)
    out = Path(args.out)
    if out.is_dir():  # refuse before the model loads
        raise ConfigError(f"--out {out} is a folder; give a .npy file name (--force replaces files only)")
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; pass --force to replace it")
    model = BiEncoder.from_checkpoint(args.checkpoint, device=args.device, forward_only=True)
    model.config = model.config.replace(**_checkpoint_overrides(args, model.config, EMBED_FIELDS))
    _, s = model.embed(texts, progress=not args.quiet)
    save_embeddings(out, s.cpu().numpy(), force=args.force)
    print(f"[counterarg] {len(texts)} embeddings [{s.shape[1]}-d similarity space] written to {out.resolve()}")
    return 0


def cmd_export(args) -> int:
    from .core.paths import portable_command, runnable_path
    from .serving.export import export

    command = "counterarg export " + portable_command(sys.argv[2:]) if sys.argv[1:2] == ["export"] else ""
    out = export(args.checkpoint, args.out, force=args.force, command=command)
    shown = runnable_path(out)  # runnable from here, and no absolute path of this machine
    print(
        f"[counterarg] exported to {shown}\n  from sentence_transformers import SentenceTransformer\n"
        f"  SentenceTransformer({shown!r}).encode([...])"
    )
    return 0


def cmd_compare(args) -> int:
    from .analysis.run_compare import compare_main

    return compare_main(
        args.a,
        args.b,
        split=args.split,
        label_a=args.label_a,
        label_b=args.label_b,
        tasks=args.tasks,
        json_path=args.json,
        progress=not args.quiet,
    )


#: ``counterarg bench WHAT``: the module and function each benchmark runs (each has its own --help)
BENCHES = {
    "mining": ("bench.mining", "main"),
    "eval": ("bench.eval", "main"),
    "train": ("bench.train", "main"),
    "gpu": ("bench.train", "gpu_main"),
    "resume": ("bench.resume", "main"),
    "startup": ("bench.startup", "main"),
}


def cmd_bench(args, rest) -> int:
    import importlib

    module, func = BENCHES[args.what]
    bench_main = getattr(importlib.import_module(f".{module}", __package__), func)
    return int(bench_main(rest) or 0)


def config_help() -> str:
    """What ``--config`` takes: a preset named in config.PRESETS (each with its line) or a JSON file."""
    return (
        "a preset or a JSON file of config fields, under --set and --epochs; presets: "
        + "; ".join(f"{n} = {PRESET_DOCS[n]}" for n in PRESETS)
        + " (default: none, the Config defaults)"
    )


class _SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser: every subcommand shows its defaults in --help."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kw)


def build_parser() -> argparse.ArgumentParser:
    defaults = Config()
    ap = argparse.ArgumentParser(
        prog="counterarg",
        formatter_class=DefaultsHelpFormatter,
        description="Counterargument retrieval: train a model, evaluate it on the eight ArguAna tasks, "
        "rank counters for a new argument, embed texts, export a checkpoint, compare runs, "
        "run benchmarks.",
        epilog="Sweeps over training strategies: python sweeps/compare_strategies.py --help. "
        "Every command: counterarg COMMAND --help.",
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_SubcommandParser)
    set_help = f"override a config field, e.g. --set schedule=decay (fields: {', '.join(FIELD_NAMES)})"
    machine_help = (
        f"this machine's settings, e.g. --set cache_dir=DIR (fields: {', '.join(sorted(EMBED_FIELDS))}); "
        "never taken from the checkpoint"
    )
    quiet_help = "no progress bars"
    device_help = "cpu, cuda or cuda:N: where this command runs (one argument needs no GPU)"
    checkpoint_help = "a run's checkpoint folder (OUT/checkpoint, OUT/best or a sweep's checkpoint_N)"

    t = sub.add_parser("train", help="train one model; writes config.json, metrics.jsonl, checkpoint/")
    t.add_argument("--corpus", help="ArguAna zip or folder (default: the generated demo corpus)")
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument(
        "--epochs",
        type=int_at_least(1),
        help=f"epochs to train, >= 1 (default: the --config's, else {defaults.epochs})",
    )
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    t.add_argument("--config", metavar="PRESET|FILE", help=config_help())
    t.add_argument("--set", action="append", metavar="FIELD=VALUE", help=set_help)
    t.add_argument("--quiet", action="store_true", help=quiet_help)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="the eight tasks and the ArguAna view on one split")
    g = e.add_mutually_exclusive_group(required=True)
    g.add_argument("--checkpoint", help=checkpoint_help)
    g.add_argument("--zero-shot", action="store_true", help="the untrained encoder's pooled output, cosine")
    e.add_argument(
        "--corpus",
        help="ArguAna zip or folder to score on (default: the checkpoint's corpus; "
        "with --zero-shot the generated demo corpus)",
    )
    e.add_argument("--split", default="test", choices=["training", "validation", "test"], help="the split to score")
    e.add_argument("--set", action="append", metavar="FIELD=VALUE", help=set_help)
    e.add_argument("--json", help="write the flat metrics here (default: printed only)")
    e.add_argument("--quiet", action="store_true", help=quiet_help)
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("rank", help="the best counters for a new argument")
    r.add_argument("--checkpoint", required=True, help=checkpoint_help)
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="the new argument")
    src.add_argument("--text-file", help=f"a UTF-8 file holding the new argument (at most {MAX_TEXT_FILE_BYTES} bytes)")
    r.add_argument("--corpus", help="candidates: this corpus's counters (default: the checkpoint's corpus)")
    r.add_argument(
        "--split", default="test", help="the corpus split whose counters are the candidates (each distinct text once)"
    )
    r.add_argument(
        "--candidates",
        help=f"instead of the corpus: a UTF-8 file, one candidate per line, a .jsonl "
        f"file, or a .npy from counterarg embed, at most {MAX_CANDIDATES_BYTES} bytes "
        "(default: the corpus split's counters)",
    )
    r.add_argument("--candidate-texts", help="with a .npy --candidates: the texts it was made from (default: none)")
    r.add_argument("--field", default="text", help="the text field of a .jsonl --candidates file")
    r.add_argument("--k", type=int, default=5, help="how many counters to print (>= 1; at most all candidates)")
    r.add_argument("--json", action="store_true", help="print the ranking as JSON (rank, score, id, source, text)")
    r.add_argument("--device", default="cpu", help=device_help)
    r.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help=f"how to score and this machine's settings (fields: {', '.join(sorted(RANK_FIELDS))}); "
        "the model's fields come from the checkpoint",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_rank)

    m = sub.add_parser("embed", help="similarity-space embeddings of texts with a trained checkpoint")
    m.add_argument("--checkpoint", required=True, help=checkpoint_help)
    m.add_argument("--input", required=True, help="a text file (one text per line) or a .jsonl file")
    m.add_argument("--field", default="text", help="the text field of a .jsonl input")
    m.add_argument("--out", required=True, help="the .npy file to write ([N, sim_dim] float32)")
    m.add_argument("--device", default="cpu", help=device_help)
    m.add_argument("--force", action="store_true", help="replace an existing --out")
    m.add_argument("--set", action="append", metavar="FIELD=VALUE", help=machine_help)
    m.add_argument("--quiet", action="store_true", help=quiet_help)
    m.set_defaults(func=cmd_embed)

    x = sub.add_parser(
        "export", help="the checkpoint as a sentence-transformers folder (+ pair classifier, config, model card)"
    )
    x.add_argument("--checkpoint", required=True, help=checkpoint_help)
    x.add_argument("--out", required=True, help="the folder to write")
    x.add_argument("--force", action="store_true", help="replace an existing --out")
    x.set_defaults(func=cmd_export)

    c = sub.add_parser(
        "compare",
        help="is B better than A? two groups of training runs (one per seed), the seed-aware test per task and view",
    )
    c.add_argument(
        "--a",
        nargs="+",
        required=True,
        metavar="RUN",
        help="group A, one folder per seed: counterarg train --out folders, checkpoint folders or sweep "
        "trial folders (at least 2)",
    )
    c.add_argument("--b", nargs="+", required=True, metavar="RUN", help="group B, as --a")
    c.add_argument("--split", default="test", help="validation or test: the splits whose per-query ranks a run keeps")
    c.add_argument("--label-a", default="A", help="group A's name in the tables")
    c.add_argument("--label-b", default="B", help="group B's name in the tables")
    c.add_argument(
        "--tasks",
        default="all",
        help="all: the eight tasks and their mean, Holm over them per view; mean: the mean alone",
    )
    c.add_argument("--json", help="write the rows and verdicts here (default: printed only)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_compare)

    b = sub.add_parser("bench", help="benchmarks (counterarg bench mining --help)", add_help=False)
    b.add_argument("what", choices=list(BENCHES), help="the benchmark; each has its own --help")
    b.set_defaults(func=None)
    return ap


#: OSErrors that mean a path given cannot be used as given: named (exit 2), not a traceback
PATH_ERRNOS = {errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS}


#: the named errors of input a user gave (exit 2), by the module that raises each: looked up among the
#: modules loaded when one is raised (only a loaded module can raise its own), so that parsing, --help
#: and the commands that use no model import nothing of torch or training for them
NAMED_ERRORS = {
    "model.checkpoint": "CheckpointError",
    "data.corpus": "CorpusError",
    "nn.encoder": "EncoderError",
    "retrieval.tasks": "EvaluationError",
    "training.trainer": "TrainingError",
    "core.remote": "RemoteFolderError",
}


def _named_errors() -> tuple[type[Exception], ...]:
    from .core.io import FolderLockedError

    loaded = (sys.modules.get(f"{__package__}.{m}") for m in NAMED_ERRORS)
    return (
        ConfigError,
        FolderLockedError,
        *(getattr(m, name) for m, name in zip(loaded, NAMED_ERRORS.values()) if m is not None),
    )


def _exit_code(e: Exception) -> int | None:
    """The exit status of an error a user's input caused, said on stderr (2: input, 1: a full disk); None for
    any other error (a bug: its traceback is shown)."""
    from .core.io import DiskFullError

    if isinstance(e, _named_errors()):
        print(f"counterarg: error: {e}", file=sys.stderr)
        return 2
    if isinstance(e, DiskFullError):
        print(f"counterarg: error: {e}", file=sys.stderr)
        return 1
    if isinstance(e, OSError) and e.errno in PATH_ERRNOS and e.filename:
        # a path the user named that cannot be one (a file where a folder must be, ...)
        print(
            f"counterarg: error: {e.filename}: {e.strerror} (check the paths given: --out, --json, "
            "--checkpoint, cache_dir)",
            file=sys.stderr,
        )
        return 2
    return None


def fetch_remote_args(args) -> None:
    """Replace each ``s3://`` / ``gs://`` checkpoint or run folder among the arguments (``--checkpoint``,
    compare's ``--a`` / ``--b``, rank's ``--corpus``) by a local copy: fetched once into the cache
    (``$COUNTERARG_CACHE/remote``, keyed by the URI and its manifest) and checked against its manifest
    (:func:`counterarg.core.remote.localize`); an unsealed or cut-short upload is refused, named."""
    from .core.remote import is_remote, localize

    for key in ("checkpoint", "corpus"):
        if is_remote(getattr(args, key, None)):
            setattr(args, key, localize(getattr(args, key)))
    for key in ("a", "b"):
        values = getattr(args, key, None)
        if isinstance(values, list):
            setattr(args, key, [localize(v) if is_remote(v) else v for v in values])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    args, rest = ap.parse_known_args(argv)
    try:
        if args.command == "bench":
            return cmd_bench(args, rest)
        if rest:
            ap.error(f"unrecognised arguments: {' '.join(rest)}")
        fetch_remote_args(args)
        return args.func(args)
    except KeyboardInterrupt:
        print("counterarg: interrupted; the last finished epoch's checkpoint is kept (use --resume)", file=sys.stderr)
        return 130
    except Exception as e:
        code = _exit_code(e)
        if code is None:
            raise
        return code


if __name__ == "__main__":
    sys.exit(main())
