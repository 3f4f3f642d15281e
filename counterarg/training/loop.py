"""One full training run: the reference method or the default recipe: re-mine hard negatives, train,
evaluate, checkpoint, per epoch.

``train(config, out_dir, report)`` is all a caller needs; the Tune adapter (sweep/trainable.py) wraps it and this
module never imports Ray. This module is the epoch loop and the run folder (``config.json``,
``machine.jsonl``, ``metrics.jsonl``, ``checkpoint/``, ``best/``); one epoch's work is
:class:`~counterarg.training.trainer.Trainer` (which owns the model, model.biencoder.BiEncoder), the
checkpoint's format :mod:`counterarg.model.checkpoint`, the best epoch and patience
:mod:`counterarg.evaluation.selection`. A resumed run on CPU gives the same metrics as an
uninterrupted one.

The run folder is locked while a run writes it, and a swap of ``checkpoint/`` or ``best/`` a kill
interrupted is completed or rolled back before anything else happens (io.recover_dir). ``best/`` is
swapped before ``checkpoint/``, so a kill or a full disk between the two leaves a checkpoint whose
next epoch (retrained on resume) writes ``best/`` again; a full disk is an io.DiskFullError that
names what was kept.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..config import Config
from ..core.io import (
    DiskFullError,
    append_jsonl,
    atomic_replace_dir,
    atomic_write_text,
    folder_lock,
    recover_dir,
    remove_temp_files,
)
from ..evaluation.selection import BEST_DIR, BestRanks, best_epoch, early_stop
from ..model.checkpoint import check_resumable, make_state, read_checkpoint, resumed_changes, write_state
from ..model.over_corpus import over_corpus
from ..nn.encoder import EncoderError
from ..nn.precision import run_precision
from .machine import MACHINE_FILE, machine_record
from .trainer import Trainer, TrainingError, say

Report = Callable[[dict, Path], None]


def prepare_features(config: Config, *, progress: bool = True) -> None:
    """Build the on-disk feature cache for ``config`` (a sweep driver calls this before its trials)."""
    over_corpus(config, announce=False).features(config, progress=progress)


def train(
    config: Config,
    out_dir: str | Path,
    report: Report | None = None,
    resume_from: str | Path | None = None,
    progress: bool = True,
    resume_latest: bool = False,
) -> list[dict]:
    """Train ``config.epochs`` epochs into ``out_dir``; returns the per-epoch metric rows.

    Writes ``config.json``, appends this session's machine to ``machine.jsonl`` (training/machine.py),
    appends a row per epoch to ``metrics.jsonl`` and replaces ``checkpoint/``
    atomically after each epoch, then calls ``report(row, checkpoint_dir)``; ``best/`` beside it holds
    the epoch with the highest ``config.select_metric`` (earliest on ties), and with ``patience`` > 0
    the run stops once that many epochs pass without a new best. ``resume_from`` is a
    checkpoint folder; the run continues at the epoch after it. ``resume_latest`` continues from
    ``out_dir/checkpoint`` when there is one (after repairing an interrupted swap), else starts fresh.
    The folder is locked for the whole run (:class:`~counterarg.core.io.FolderLockedError` for a second writer).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):
        for line in recover_dir(out / "checkpoint") + recover_dir(out / BEST_DIR) + remove_temp_files(out):
            say(line, True)  # said even when quiet: the folder was changed
        if resume_latest and resume_from is None:
            if (out / "checkpoint").exists():
                resume_from = out / "checkpoint"
            elif _recorded_epochs(out):  # starting fresh would empty metrics.jsonl
                raise TrainingError(
                    f"--resume: {out / 'metrics.jsonl'} holds {_recorded_epochs(out)} epoch row(s) "
                    f"but {out} has no checkpoint to continue from; nothing was changed. Move the "
                    "folder away to start again, or restore its checkpoint/"
                )
            else:
                say(f"--resume: no checkpoint in {out}, starting fresh", True)
        return _train_locked(config, out, report, resume_from, progress)


def _recorded_epochs(out: Path) -> int:
    try:
        return sum(1 for ln in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if ln.strip())
    except OSError:
        return 0


def _train_locked(config: Config, out: Path, report: Report | None, resume_from, progress: bool) -> list[dict]:
    history: list[dict] = []
    start = 0
    saved = None
    if resume_from is not None:
        saved = read_checkpoint(resume_from)
        check_resumable(config, saved["model"]["config"], Path(resume_from))
        start, history = saved["epoch"], list(saved["history"])
        if start > config.epochs:
            raise TrainingError(
                f"checkpoint {resume_from} already holds {start} epochs, more than epochs="
                f"{config.epochs}; nothing to train (config.json and metrics.jsonl left as they are). "
                f"Pass --epochs {start} or more"
            )
    try:
        run = Trainer(config, progress=progress)
    except EncoderError as e:
        raise TrainingError(str(e)) from None
    if "training" not in run.corpus.splits:
        raise TrainingError(f"corpus {run.corpus.source} has no training split")
    if saved is not None:
        run.restore(saved)
        changed = resumed_changes(config, saved["model"]["config"])
        say(f"resumed from {resume_from} after epoch {start}" + (f" with {changed}" if changed else ""), progress)
    config.save(out / "config.json")
    _record_machine(out / MACHINE_FILE, run, start)
    metrics_path = out / "metrics.jsonl"
    atomic_write_text(metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))
    ckpt = out / "checkpoint"
    best = BestRanks(config.select_metric)
    if saved is not None:
        best.load(resume_from, history)
    try:
        _epochs(run, config, start, history, ckpt, metrics_path, report, progress, best)
    except DiskFullError as e:
        raise DiskFullError(
            f"{e}. The run folder {out} keeps its last complete checkpoint/ and best/; continue it with --resume"
        ) from None
    finally:
        run.close()
    return history


def _epochs(
    run: Trainer,
    config: Config,
    start: int,
    history: list[dict],
    ckpt: Path,
    metrics_path: Path,
    report: Report | None,
    progress: bool,
    best: BestRanks,
) -> None:
    for epoch in range(start, config.epochs):
        top = early_stop(config, history, epoch)
        if top is not None:
            say(
                f"early stop after epoch {epoch}: {config.select_metric} has not improved for "
                f"{config.patience} epochs (best {top[config.select_metric]:.4f} at epoch {top['epoch']}; "
                f"its state is in {ckpt.parent / BEST_DIR})",
                progress,
            )
            break
        t0 = time.perf_counter()
        row = run.train_epoch(epoch)
        row.update(run.evaluate(epoch))
        row["time/epoch_s"] = time.perf_counter() - t0
        for k, v in row.items():
            if isinstance(v, float) and not math.isfinite(v) and not k.startswith("time/"):
                raise TrainingError(f"metric {k} is {v} at epoch {epoch + 1}")
        if config.patience and config.select_metric not in row:
            raise TrainingError(
                f"patience={config.patience} selects on {config.select_metric!r}, which epoch "
                f"{epoch + 1} did not report (has the corpus a validation split?)"
            )
        history.append(row)
        improved = best.update(row, run.ranks, run.pools)
        chosen = best_epoch(history, config.select_metric)
        if chosen is not None:
            row["select/best_epoch"] = chosen
        state = make_state(epoch + 1, history, run.model.state(), run.state())

        def fill(folder: Path, state=state) -> None:  # this epoch's state, bound now (B023)
            write_state(folder, state)
            config.save(folder / "config.json")
            best.save(folder)

        if improved:  # first: a checkpoint never names a best epoch that best/ lacks
            atomic_replace_dir(ckpt.parent / BEST_DIR, fill, epoch=epoch + 1)
        atomic_replace_dir(ckpt, fill, epoch=epoch + 1)
        append_jsonl(metrics_path, row)
        if progress:
            say(_epoch_line(row), True)
        if report is not None:
            report(row, ckpt)


def _epoch_line(row: dict) -> str:
    parts = [
        f"epoch {row['epoch']}",
        f"loss {row['train/loss']:.4f}",
        f"rate {row['mining/rate']:.2f}",
        f"hard {row['mining/hard']} random {row['mining/random']}",
    ]
    for key in (
        "validation/loss",
        "validation/mean/acc@1",
        "validation_unseen/mean/acc@1",
        "test/mean/acc@1",
        "test_unseen/mean/acc@1",
    ):
        if key in row:
            parts.append(f"{key} {row[key]:.4f}")
    parts.append(f"{row['time/epoch_s']:.1f}s")
    return " | ".join(parts)


def _record_machine(path: Path, run: Trainer, start: int) -> None:
    """Appends this session's machine (training/machine.py) to the run's ``machine.jsonl``, one row per
    start or resume, so a resumed run keeps where each of its epochs was trained."""
    precision = run_precision(run.config.precision, run.device)  # what the encoder's passes run at
    row = {
        "from_epoch": start + 1,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),  # two sessions' rows differ
        **machine_record(run.device, precision, torch.get_num_threads()),
    }
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    atomic_write_text(path, old + json.dumps(row, sort_keys=True) + "\n")
