"""random_rate schedules: the probability, per epoch, of taking a random negative instead of a hard one.

This module is the one home of schedules (the registry :data:`SCHEDULES`). Each schedule is one
:class:`Schedule` entry: its rate function, the Config fields it reads, its default strategy (the
field values of the sweep strategy named after it) and a short human label. Config validation
(``schedule`` must name an entry), the sweep's named strategies (``counterarg.sweep.spaces.strategy``,
``parse_strategy``, ``strategy_grid``) and the summary's strategy labels all read this registry, so
adding a schedule is one :func:`register` call here (plus its test).

A schedule is data in the config (``schedule`` plus the fields it reads); epochs count from 0, so
the reference implementation's decaying schedule gives 0.8 at the first epoch. Nothing here imports
:mod:`counterarg.config` at import time (config.py imports this module for the default name).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from .config import Config


class ScheduleError(ValueError):
    """A schedule entry that does not fit the registry (duplicate name, unknown Config field)."""


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
    rate: Callable[["Config", int], float]
    fields: tuple[str, ...] = ()
    strategy: Mapping[str, Any] = field(default_factory=dict)
    short: tuple[str, ...] = ()
    sep: str = "-"
    check: Callable[["Config"], str | None] | None = None
    default: bool = False
    doc: str = ""


#: The registry: schedule name -> entry, in registration order.
SCHEDULES: dict[str, Schedule] = {}


def register(entry: Schedule) -> Schedule:
    """Add ``entry`` to :data:`SCHEDULES`; its fields must be Config fields, its name new."""
    if entry.name in SCHEDULES:
        raise ScheduleError(f"schedule {entry.name!r} is already registered")
    config = sys.modules.get(f"{__package__}.config")
    field_names = getattr(config, "FIELD_NAMES", None)
    if field_names is not None:  # else config.py checks every entry when it has loaded
        check_entry(entry, field_names)
    SCHEDULES[entry.name] = entry
    return entry


def check_entry(entry: Schedule, field_names) -> None:
    """An entry may name only Config fields, and set or show only fields it reads."""
    for name in (*entry.fields, *entry.strategy, *entry.short):
        if name not in field_names:
            raise ScheduleError(f"schedule {entry.name!r} names {name!r}, which is not a Config field")
        if name not in entry.fields:
            raise ScheduleError(f"schedule {entry.name!r}: {name!r} is not among the fields it reads")


def get(name: str) -> Schedule:
    """The entry named ``name``, or a ValueError listing the known names."""
    try:
        return SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown schedule {name!r}; known: {', '.join(SCHEDULES)}") from None


def random_rate(config: "Config", epoch: int) -> float:
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


def all_fields() -> tuple[str, ...]:
    """Every Config field some schedule reads, plus ``schedule`` (the fields that name a strategy)."""
    return ("schedule",) + tuple(sorted({f for s in SCHEDULES.values() for f in s.fields}))


def format_value(v: Any) -> str:
    """A field's value as labels and ``--strategies`` show it: ``0.8``, ``0.6,0.5`` for a list."""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ",".join(format_value(x) for x in v)
    return str(v)


def _fmt_table(values) -> str:
    """``0.8,0.8,0.8,0.6`` -> ``0.8*3,0.6``: a learned table stays readable."""
    out: list[str] = []
    for v in values:
        text = format_value(float(v))
        if out and out[-1].split("*")[0] == text:
            head, _, count = out[-1].partition("*")
            out[-1] = f"{head}*{int(count or 1) + 1}"
        else:
            out.append(text)
    return ",".join(out)


def short_label(config: Mapping[str, Any]) -> str:
    """A short human label of a config's strategy: ``decay 0.8-0.02``, ``fixed 0.8``, ``random``.

    Fields not in the entry's short form show as ``field=value`` where they differ from the
    Config default. An unknown schedule name is shown as it is.
    """
    from .config import Config

    full = {**Config().to_dict(), **dict(config)}
    entry = SCHEDULES.get(full["schedule"])
    if entry is None:
        return str(full["schedule"])
    parts = []
    if entry.short:
        values = [_fmt_table(full[f]) if isinstance(full[f], (list, tuple)) else format_value(full[f])
                  for f in entry.short]
        parts.append(entry.sep.join(values))
    defaults = Config().to_dict()
    for f in entry.fields:
        if f not in entry.short and format_value(full[f]) != format_value(defaults[f]):
            parts.append(f"{f}={format_value(full[f])}")
    return " ".join([entry.name, *parts])


def full_label(config: Mapping[str, Any]) -> str:
    """Every field the schedule reads: ``decay(rate_start=0.8, rate_step=0.02, rate_floor=0)``."""
    from .config import Config

    full = {**Config().to_dict(), **dict(config)}
    entry = SCHEDULES.get(full["schedule"])
    if entry is None or not entry.fields:
        return str(full["schedule"])
    return f"{entry.name}(" + ", ".join(f"{n}={format_value(full[n])}" for n in entry.fields) + ")"


# ----------------------------------------------------------------------------- the schedules
def _fixed(c: "Config", epoch: int) -> float:
    return c.rate


def _random(c: "Config", epoch: int) -> float:
    return 1.0


def _decay(c: "Config", epoch: int) -> float:  # the reference implementation's 0.8 - 0.02 * epoch, floored
    return max(c.rate_floor, c.rate_start - c.rate_step * epoch)


def _cosine(c: "Config", epoch: int) -> float:  # half a cosine from rate_start down to rate_floor
    period = c.rate_period or c.epochs
    t = min(epoch, period) / period
    return c.rate_floor + 0.5 * (c.rate_start - c.rate_floor) * (1 + math.cos(math.pi * t))


def _step(c: "Config", epoch: int) -> float:  # multiply by rate_gamma every rate_every epochs, floored
    return max(c.rate_floor, c.rate_start * c.rate_gamma ** (epoch // c.rate_every))


def _table(c: "Config", epoch: int) -> float:  # an explicit per-epoch list; the last value holds
    return c.rate_table[min(epoch, len(c.rate_table) - 1)]


def _check_table(c: "Config") -> str | None:
    if not c.rate_table:
        return ("rate_table must list at least one rate for schedule=table, e.g. "
                "--set rate_table=0.8,0.6,0.4")
    return None


FIXED = register(Schedule("fixed", _fixed, fields=("rate",), strategy={"rate": 0.8}, short=("rate",),
                          default=True, doc="`rate` every epoch"))
DECAY = register(Schedule("decay", _decay, fields=("rate_start", "rate_step", "rate_floor"),
                          strategy={"rate_start": 0.8, "rate_step": 0.02}, short=("rate_start", "rate_step"),
                          default=True, doc="`rate_start` - `rate_step` x epoch, floored at `rate_floor`"))
RANDOM = register(Schedule("random", _random, default=True, doc="1.0: every negative random"))
COSINE = register(Schedule("cosine", _cosine, fields=("rate_start", "rate_floor", "rate_period"),
                           strategy={"rate_start": 0.8, "rate_floor": 0.0}, short=("rate_start", "rate_floor"),
                           doc="half a cosine from `rate_start` to `rate_floor` over `rate_period` epochs"))
STEP = register(Schedule("step", _step, fields=("rate_start", "rate_every", "rate_gamma", "rate_floor"),
                         strategy={"rate_start": 0.8, "rate_every": 5, "rate_gamma": 0.5},
                         short=("rate_start", "rate_gamma", "rate_every"), sep="/",
                         doc="`rate_start` x `rate_gamma` every `rate_every` epochs, floored"))
TABLE = register(Schedule("table", _table, fields=("rate_table",), strategy={"rate_table": (0.8, 0.6, 0.4)},
                          short=("rate_table",), check=_check_table,
                          doc="`rate_table[epoch]`; a table shorter than `epochs` holds its last value"))

#: Config's default schedule (the default recipe mines every negative: fixed at rate 0), and the
#: reference implementation's (decay from 0.8)
DEFAULT_SCHEDULE = FIXED.name
REFERENCE_SCHEDULE = DECAY.name
