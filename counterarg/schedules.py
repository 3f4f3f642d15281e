"""random_rate schedules: the probability, per epoch, of taking a random negative instead of a hard one.

A schedule is data in the config (``schedule`` plus its ``rate*`` fields); epochs count from 0, so the
seed's decaying schedule gives 0.8 at the first epoch.
"""

from __future__ import annotations

import math

from .config import Config


def random_rate(config: Config, epoch: int) -> float:
    """The random_rate for ``epoch`` (0-based) under ``config``'s schedule, always within [0, 1]."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    name = config.schedule
    if name == "fixed":
        rate = config.rate
    elif name == "random":
        rate = 1.0
    elif name == "decay":  # the seed's 0.8 - 0.02 * epoch, floored
        rate = max(config.rate_floor, config.rate_start - config.rate_step * epoch)
    elif name == "cosine":  # half a cosine from rate_start down to rate_floor over rate_period epochs
        period = config.rate_period or config.epochs
        t = min(epoch, period) / period
        rate = config.rate_floor + 0.5 * (config.rate_start - config.rate_floor) * (1 + math.cos(math.pi * t))
    elif name == "step":  # multiply by rate_gamma every rate_every epochs, floored
        rate = max(config.rate_floor, config.rate_start * config.rate_gamma ** (epoch // config.rate_every))
    else:  # Config.validate rejects other names; kept for direct callers
        raise ValueError(f"unknown schedule {name!r}")
    return float(min(1.0, max(0.0, rate)))
