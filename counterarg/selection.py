"""Model selection: which epoch of a run is its best.

One rule, read everywhere a best epoch is named: training (early stopping, the ``best/`` state and
its per-query ranks), ``counterarg export``'s model card and the sweep summary. The best epoch is
the one with the best ``metric`` (Config ``select_metric``, a validation metric); ties go to the
earliest epoch. No Ray here: training imports it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from .config import Config

#: every selection metric (acc@k, mrr) is better when higher
DEFAULT_MODE = "max"


def best_row(history: Sequence[dict[str, Any]], metric: str = Config.select_metric,
             mode: str = DEFAULT_MODE) -> dict[str, Any] | None:
    """The epoch row with the best ``metric`` (earliest on ties), or None if none has it."""
    best = None
    for r in history:
        v = r.get(metric)
        if v is None or not isinstance(v, (int, float)) or math.isnan(v):
            continue
        if best is None or (v > best[metric] if mode == "max" else v < best[metric]):
            best = r
    return best
