"""How a trial ended, and whether that makes it a finished seed.

A trial is a *finished* seed only when it trained its planned epochs or stopped by its own rule:
early stopping (``patience`` epochs without a new best, :func:`counterarg.evaluation.selection.early_stop`)
or its scheduler (ASHA cut it at a rung: Tune marks that last result ``done``). A Ctrl-C stops
every running trial too, and Tune then marks those trials TERMINATED as well, epochs short; they
are *interrupted*, not finished, and ``--resume`` continues them. So the ending is read from the
trial's own rows (its epochs, its selection metric, the scheduler's ``done``), never from Tune's
status alone. One word per trial (:data:`ENDINGS`), computed once when the records are collected
(:mod:`counterarg.sweep.records`) and read by every table, verdict, best checkpoint and HParams row.
No Ray here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..config import Config, ConfigError
from ..evaluation.selection import early_stop

#: how a trial ended -> what that means; the first three make it a finished seed
ENDINGS = {
    "epochs": "trained its planned epochs",
    "patience": "stopped early: no new best for `patience` epochs",
    "scheduler": "stopped by its scheduler (ASHA)",
    "interrupted": "stopped before its end (Ctrl-C, a killed driver); --resume continues it",
    "waiting": "paused or pending when the sweep stopped; --resume continues it",
    "error": "errored; --resume restarts it",
    "not started": "never reported an epoch",
}
FINISHED_ENDINGS = ("epochs", "patience", "scheduler")
#: the best epoch so far, which the training loop writes into every epoch's row
BEST_EPOCH_KEY = "select/best_epoch"


def is_finished(ended: str) -> bool:
    """Whether a trial that ended so (:data:`ENDINGS`) counts as a finished seed."""
    return ended in FINISHED_ENDINGS


def trial_ending(
    config: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    *,
    error: bool = False,
    done: bool = False,
    waiting: bool = False,
) -> str:
    """How a trial ended (a key of :data:`ENDINGS`) from its config, its per-epoch rows (epoch
    ascending, each once), whether it errored, whether Tune's last result for it is ``done`` (set
    by a scheduler's stop, and by Tune when the trainable returns; never by a Ctrl-C) and whether
    Tune still holds it paused or pending (PBT waits at a Ctrl-C). ``history`` may hold only the
    last rows (a callback that saw a resumed trial's later epochs): the patience rule then reads the
    best epoch the run itself recorded in its last row."""
    if error:
        return "error"
    if not history:
        return "not started"
    try:
        cfg = Config.from_dict(dict(config))
    except ConfigError:
        cfg = Config()
    last = history[-1]
    epochs_done = int(last.get("epoch") or 0)
    if epochs_done >= cfg.epochs:
        return "epochs"
    if _stopped_early(cfg, history, epochs_done):
        return "patience"
    if waiting:
        return "waiting"
    return "scheduler" if done else "interrupted"


def _stopped_early(cfg: Config, history: Sequence[Mapping[str, Any]], epochs_done: int) -> bool:
    """Whether the training loop stopped after ``epochs_done`` by its patience rule
    (:func:`~counterarg.evaluation.selection.early_stop` over the rows, or over the best epoch the
    loop wrote into the last row, ``select/best_epoch``, when the rows before it are not at hand)."""
    best = history[-1].get(BEST_EPOCH_KEY)
    if best is not None and not any(int(r.get("epoch") or 0) == int(best) for r in history):
        return bool(cfg.patience) and epochs_done - int(best) >= cfg.patience
    return early_stop(cfg, [dict(r) for r in history], epochs_done) is not None
