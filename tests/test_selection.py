"""Model selection (counterarg.selection): the best epoch of a history, by hand."""

from __future__ import annotations

import math

from counterarg.config import Config
from counterarg.selection import best_row


def test_best_epoch_is_the_best_metric_earliest_on_ties():
    m = Config.select_metric
    history = [{"epoch": 1, m: 0.2}, {"epoch": 2, m: 0.5}, {"epoch": 3, m: 0.5}, {"epoch": 4, m: 0.1}]
    assert best_row(history)["epoch"] == 2  # the default metric is Config's select_metric; ties: earliest
    assert best_row(history, m, mode="min")["epoch"] == 4
    assert best_row([{"epoch": 1, m: math.nan}, {"epoch": 2}, {"epoch": 3, m: None}]) is None  # no value: none
    assert best_row([{"epoch": 1, m: math.nan}, {"epoch": 2, m: 0.0}])["epoch"] == 2  # NaN is skipped
    assert best_row([]) is None
    assert best_row(history, "validation/mean/mrr") is None  # a metric the rows do not hold
