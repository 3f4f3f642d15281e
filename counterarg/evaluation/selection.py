"""Model selection: which epoch of a run is its best, its per-query ranks, patience.

One rule, read everywhere a best epoch is named: training (early stopping, the ``best/`` state and
its per-query ranks), ``counterarg export``'s model card and the sweep summary. The best epoch is
the earliest with the best ``select_metric`` (:func:`best_row`); its state is kept in ``best/``
beside ``checkpoint/`` and its per-query ranks in every checkpoint (:class:`BestRanks`), and with
``patience`` > 0 a run stops once that many epochs pass without a new best. No Ray here: training
imports it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config

BEST_DIR = "best"  # beside checkpoint/: the state of the epoch with the best config.select_metric

#: every selection metric (acc@k, mrr) is better when higher
DEFAULT_MODE = "max"


def beats(value: float, best: float | None, mode: str = DEFAULT_MODE) -> bool:
    """Whether ``value`` is strictly better than ``best`` under ``mode`` (max | min); anything beats
    None. The one comparison every "best so far" (a run's, a trial's, a sweep's) is made with."""
    return best is None or (value > best if mode == "max" else value < best)


def best_row(
    history: Sequence[dict[str, Any]], metric: str = Config.select_metric, mode: str = DEFAULT_MODE
) -> dict[str, Any] | None:
    """The epoch row with the best ``metric`` (earliest on ties), or None if none has it."""
    best = None
    for r in history:
        v = r.get(metric)
        if v is None or not isinstance(v, (int, float)) or math.isnan(v):
            continue
        if beats(v, None if best is None else best[metric], mode):
            best = r
    return best


class BestRanks:
    """Per-query ranks of a run's best epoch (by ``config.select_metric``), kept in its checkpoint.

    A sweep's significance tests compare strategies query by query at each trial's best epoch; the
    rows in ``metrics.jsonl`` hold only means, and Tune keeps only the last checkpoints, so every
    checkpoint carries the ranks of the best epoch so far in ``best_ranks.npz`` (plain arrays, no
    pickle): ``epoch``, ``{split}/{task}`` ``[Q]`` int ranks, ``{split}/unseen`` ``[Q]`` bool and
    ``{split}/queries`` ``[32]`` uint8, which queries they rank (:func:`counterarg.retrieval.pools.query_digest`).
    The best epoch is the earliest with the highest ``select_metric`` (:func:`best_row`).
    """

    FILE = "best_ranks.npz"

    def __init__(self, metric: str):
        self.metric = metric
        self.value: float | None = None
        self.arrays: dict[str, np.ndarray] = {}

    def update(self, row: dict, ranks: dict[str, dict[str, np.ndarray]], pools: dict) -> bool:
        """Take this epoch's ranks if ``row`` beats the best so far; True if it did."""
        v = row.get(self.metric)
        if v is None or not math.isfinite(v) or not beats(v, self.value):
            return False
        self.value = float(v)
        self.arrays = {"epoch": np.array(int(row["epoch"]))}
        for split, by_task in ranks.items():
            for task, r in by_task.items():
                self.arrays[f"{split}/{task}"] = r
            if pools[split].unseen is not None:
                self.arrays[f"{split}/unseen"] = pools[split].unseen
            if pools[split].queries is not None:
                self.arrays[f"{split}/queries"] = pools[split].queries
        return True

    def save(self, folder: Path) -> None:
        if self.arrays:
            # Any: numpy's stubs read a dict's ** as possibly its bool allow_pickle (numpy >= 2.1 only)
            arrays: dict[str, Any] = self.arrays
            with open(folder / self.FILE, "wb") as f:
                np.savez(f, **arrays)

    def load(self, folder: str | Path, history: list[dict]) -> None:
        """Restore from a checkpoint folder and its history (the best value is recomputed from it)."""
        best = best_row(history, self.metric)
        if best is None:
            return
        self.value = float(best[self.metric])
        self.arrays = read_best_ranks(folder) or {}


def parse_best_ranks(data: bytes | str | Path, where: str) -> dict[str, np.ndarray] | None:
    """The arrays of a ``best_ranks.npz`` (its bytes or its path), or None with a warning naming
    ``where`` when it cannot be used: cut short, not a zip, an object array, a non-numeric array."""
    from io import BytesIO

    try:
        with np.load(BytesIO(data) if isinstance(data, bytes) else data, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        bad = [k for k, a in arrays.items() if a.dtype.kind not in "biuf"]
        if bad:
            raise ValueError(f"array {bad[0]!r} is {arrays[bad[0]].dtype}, not numbers")
    except Exception as e:  # noqa: BLE001 - BadZipFile, EOFError, ValueError, ...: each skips this file only
        print(
            f"[counterarg] warning: per-query ranks {where} cannot be read ({type(e).__name__}: {e}); left out",
            flush=True,
        )
        return None
    return arrays


def read_best_ranks(folder: str | Path) -> dict[str, np.ndarray] | None:
    """The ``best_ranks.npz`` arrays of a checkpoint folder, or None if it has none (or a bad one)."""
    path = Path(folder) / BestRanks.FILE
    if not path.exists():
        return None
    return parse_best_ranks(path, str(path))


def early_stop(config: Config, history: list[dict], epoch: int) -> dict | None:
    """The best row so far when ``patience`` epochs have passed since it before ``epoch`` (0-based):
    the run stops there. None while the run goes on (always, with ``patience`` 0)."""
    top = best_row(history, config.select_metric)
    if config.patience and top is not None and epoch - top["epoch"] >= config.patience:
        return top
    return None


def best_epoch(history: list[dict], metric: str) -> int | None:
    """The best epoch of ``history`` by ``metric`` (None while no row reports it)."""
    top = best_row(history, metric)
    return None if top is None else top["epoch"]
