"""Model selection within a run: the best epoch by ``config.select_metric``, its per-query ranks, patience.

The best epoch is the earliest with the highest ``select_metric`` (:func:`summary.best_row`); its
state is kept in ``best/`` beside ``checkpoint/`` and its per-query ranks in every checkpoint
(:class:`BestRanks`), and with ``patience`` > 0 a run stops once that many epochs pass without a
new best.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .config import Config

BEST_DIR = "best"  # beside checkpoint/: the state of the epoch with the best config.select_metric


class BestRanks:
    """Per-query ranks of a run's best epoch (by ``config.select_metric``), kept in its checkpoint.

    A sweep's significance tests compare strategies query by query at each trial's best epoch; the
    rows in ``metrics.jsonl`` hold only means, and Tune keeps only the last checkpoints, so every
    checkpoint carries the ranks of the best epoch so far in ``best_ranks.npz`` (plain arrays, no
    pickle): ``epoch``, ``{split}/{task}`` ``[Q]`` int ranks, and ``{split}/unseen`` ``[Q]`` bool.
    The best epoch is the earliest with the highest ``select_metric`` (:func:`summary.best_row`).
    """

    FILE = "best_ranks.npz"

    def __init__(self, metric: str):
        self.metric = metric
        self.value: float | None = None
        self.arrays: dict[str, np.ndarray] = {}

    def update(self, row: dict, ranks: dict[str, dict[str, np.ndarray]], pools: dict) -> bool:
        """Take this epoch's ranks if ``row`` beats the best so far; True if it did."""
        v = row.get(self.metric)
        if v is None or not math.isfinite(v) or (self.value is not None and v <= self.value):
            return False
        self.value = float(v)
        self.arrays = {"epoch": np.array(int(row["epoch"]))}
        for split, by_task in ranks.items():
            for task, r in by_task.items():
                self.arrays[f"{split}/{task}"] = r
            if pools[split].unseen is not None:
                self.arrays[f"{split}/unseen"] = pools[split].unseen
        return True

    def save(self, folder: Path) -> None:
        if self.arrays:
            with open(folder / self.FILE, "wb") as f:
                np.savez(f, **self.arrays)

    def load(self, folder: str | Path, history: list[dict]) -> None:
        """Restore from a checkpoint folder and its history (the best value is recomputed from it)."""
        from .summary import best_row  # the sweep summary's rule, so both pick the same epoch

        best = best_row(history, self.metric)
        path = Path(folder) / self.FILE
        if best is None or not path.exists():
            return
        self.value = float(best[self.metric])
        with np.load(path, allow_pickle=False) as z:
            self.arrays = {k: z[k] for k in z.files}


def read_best_ranks(folder: str | Path) -> dict[str, np.ndarray] | None:
    """The ``best_ranks.npz`` arrays of a checkpoint folder, or None if it has none."""
    path = Path(folder) / BestRanks.FILE
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def early_stop(config: Config, history: list[dict], epoch: int) -> dict | None:
    """The best row so far when ``patience`` epochs have passed since it before ``epoch`` (0-based):
    the run stops there. None while the run goes on (always, with ``patience`` 0)."""
    from .summary import best_row

    top = best_row(history, config.select_metric)
    if config.patience and top is not None and epoch - top["epoch"] >= config.patience:
        return top
    return None


def best_epoch(history: list[dict], metric: str) -> int | None:
    """The best epoch of ``history`` by ``metric`` (None while no row reports it)."""
    from .summary import best_row

    top = best_row(history, metric)
    return None if top is None else top["epoch"]
