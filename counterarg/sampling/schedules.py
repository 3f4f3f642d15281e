"""random_rate schedules: the probability, per epoch, of taking a random negative instead of a hard one.

This module is the one home of schedules (the registry :data:`SCHEDULES`). Each schedule is one
:class:`Schedule` entry: its rate function, the Config fields it reads, its default strategy (the
field values of the sweep strategy named after it) and a short human label. Config validation
(``schedule`` must name an entry), the sweep's named strategies (``counterarg.sweep.spaces.strategy``,
``parse_strategy``, ``strategy_grid``) and the summary's strategy labels all read this registry, so
adding a schedule is one :func:`register` call here (plus its test).

A schedule is data in the config (``schedule`` plus the fields it reads); epochs count from 0, so
the reference implementation's decaying schedule gives 0.8 at the first epoch. Nothing here imports
:mod:`counterarg.config`: config.py imports this registry (for the default name and validation), and
the Config fields a schedule reads carry the ``schedule`` role there (``config.fields_with``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Config


class ScheduleError(ValueError):
    """A schedule entry that does not fit the registry (a duplicate name, a strategy field it does not read)."""


@dataclass(frozen=True)
class Schedule:
    """One schedule: ``rate(config, epoch) -> float`` and what it needs.

    * ``fields``: the Config fields ``rate`` reads; they name the strategy in summaries and are the
      only fields a strategy of this schedule may set besides ``schedule``.
    * ``strategy``: the default values of the strategy named after this schedule (sweeps).
    * ``short``: fields shown, in order, in the short label (``decay 0.8-0.02``); each joined by
      ``sep``. Any other field of ``fields`` appears as ``field=value`` when it differs from its
      Config default, so two different strategies never share a label.
    * ``check``: extra validation when the schedule is selected; returns an error message or None.
    * ``default``: one of the sweep's default strategies (the reference implementation's three).
    """

    name: str
    rate: Callable[[Config, int], float]
    fields: tuple[str, ...] = ()
    strategy: Mapping[str, Any] = field(default_factory=dict)
    short: tuple[str, ...] = ()
    sep: str = "-"
    check: Callable[[Config], str | None] | None = None
    default: bool = False
    doc: str = ""


#: The registry: schedule name -> entry, in registration order.
SCHEDULES: dict[str, Schedule] = {}


def register(entry: Schedule) -> Schedule:
    """Add ``entry`` to :data:`SCHEDULES`: its name new, and it sets or shows only fields it reads.
    That those are Config fields of the ``schedule`` role is config.py's check (``config.check_schedule``,
    at its import and whenever a config selects the schedule): this registry sits below config."""
    if entry.name in SCHEDULES:
        raise ScheduleError(f"schedule {entry.name!r} is already registered")
    for name in (*entry.strategy, *entry.short):
        if name not in entry.fields:
            raise ScheduleError(f"schedule {entry.name!r}: {name!r} is not among the fields it reads")
    SCHEDULES[entry.name] = entry
    return entry


def get(name: str) -> Schedule:
    """The entry named ``name``, or a ValueError listing the known names."""
    try:
        return SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown schedule {name!r}; known: {', '.join(SCHEDULES)}") from None


def random_rate(config: Config, epoch: int) -> float:
    """The random_rate for ``epoch`` (0-based) under ``config``'s schedule, always within [0, 1]."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    rate = get(config.schedule).rate(config, epoch)
    return float(min(1.0, max(0.0, rate)))


# ----------------------------------------------------------------------------- strategies
def strategy_fields(name: str) -> dict[str, Any]:
    """The default strategy named ``name`` as flat Config fields, ``{"schedule": name, ...}``."""
    return {"schedule": name, **dict(get(name).strategy)}


def default_strategies() -> tuple[str, ...]:
    """Names of the sweep's default strategies (fixed 0.8, decay 0.8 - 0.02 * epoch, pure random)."""
    return tuple(n for n, s in SCHEDULES.items() if s.default)


def format_value(v: Any) -> str:
    """A field's value as labels and ``--strategies`` show it: ``0.8``, ``0.6,0.5`` for a list."""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ",".join(format_value(x) for x in v)
    return str(v)


# ----------------------------------------------------------------------------- the schedules
def _fixed(c: Config, epoch: int) -> float:
    return c.rate


def _random(c: Config, epoch: int) -> float:
    return 1.0


def _decay(c: Config, epoch: int) -> float:  # the reference implementation's 0.8 - 0.02 * epoch, floored
    return max(c.rate_floor, c.rate_start - c.rate_step * epoch)


def _cosine(c: Config, epoch: int) -> float:  # half a cosine from rate_start down to rate_floor
    period = c.rate_period or c.epochs
    t = min(epoch, period) / period
    return c.rate_floor + 0.5 * (c.rate_start - c.rate_floor) * (1 + math.cos(math.pi * t))


def _step(c: Config, epoch: int) -> float:  # multiply by rate_gamma every rate_every epochs, floored
    return max(c.rate_floor, c.rate_start * c.rate_gamma ** (epoch // c.rate_every))


def _table(c: Config, epoch: int) -> float:  # an explicit per-epoch list; the last value holds
    return c.rate_table[min(epoch, len(c.rate_table) - 1)]


def _check_table(c: Config) -> str | None:
    if not c.rate_table:
        return "rate_table must list at least one rate for schedule=table, e.g. --set rate_table=0.8,0.6,0.4"
    return None


FIXED = register(
    Schedule(
        "fixed",
        _fixed,
        fields=("rate",),
        strategy={"rate": 0.8},
        short=("rate",),
        default=True,
        doc="`rate` every epoch",
    )
)
DECAY = register(
    Schedule(
        "decay",
        _decay,
        fields=("rate_start", "rate_step", "rate_floor"),
        strategy={"rate_start": 0.8, "rate_step": 0.02},
        short=("rate_start", "rate_step"),
        default=True,
        doc="`rate_start` - `rate_step` x epoch, floored at `rate_floor`",
    )
)
RANDOM = register(Schedule("random", _random, default=True, doc="1.0: every negative random"))
COSINE = register(
    Schedule(
        "cosine",
        _cosine,
        fields=("rate_start", "rate_floor", "rate_period"),
        strategy={"rate_start": 0.8, "rate_floor": 0.0},
        short=("rate_start", "rate_floor"),
        doc="half a cosine from `rate_start` to `rate_floor` over `rate_period` epochs",
    )
)
STEP = register(
    Schedule(
        "step",
        _step,
        fields=("rate_start", "rate_every", "rate_gamma", "rate_floor"),
        strategy={"rate_start": 0.8, "rate_every": 5, "rate_gamma": 0.5},
        short=("rate_start", "rate_gamma", "rate_every"),
        sep="/",
        doc="`rate_start` x `rate_gamma` every `rate_every` epochs, floored",
    )
)
TABLE = register(
    Schedule(
        "table",
        _table,
        fields=("rate_table",),
        strategy={"rate_table": (0.8, 0.6, 0.4)},
        short=("rate_table",),
        check=_check_table,
        doc="`rate_table[epoch]`; a table shorter than `epochs` holds its last value",
    )
)

#: Config's default schedule (the default recipe mines every negative: fixed at rate 0), and the
#: reference implementation's (decay from 0.8)
DEFAULT_SCHEDULE = FIXED.name
REFERENCE_SCHEDULE = DECAY.name
