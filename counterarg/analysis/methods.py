"""The methods a sweep's strategies train, and the one name of every trial (method x strategy).

A *strategy* is a random_rate schedule (the registry in :mod:`counterarg.sampling.schedules`); a *method*
is everything else that decides how a model trains: the head, the loss, lr, batch size, the mining
ranks, early stopping, the evaluation (the fields of :func:`counterarg.config.method_fields`).
:data:`METHODS` is the one home of the methods; sweeps cross strategies with them
(:func:`counterarg.sweep.spaces.strategy_grid`), the command line checks names against it
(``--methods``, :mod:`counterarg.sweep.cli`), and every label is made here:

* ``reference``: the reference implementation (config.REFERENCE_METHOD less its schedule and length);
* ``recipe``: the project's default recipe, the Config defaults of the same fields but lr (the
  heads' lr goes with the encoder mode: the frozen preset trains them at 3e-4, the default at 4e-4).

**One name everywhere**, made once where a variant is made (:func:`variant_label`, called by the
sweep's builders: a grid's strategies under each method, a race's strategies, PBT's population and
its explore steps) and carried with it in the Config fields ``method`` and ``label`` (their role
``label``: nothing trains on them); the live status table, trial folder names, summaries, plots and
TensorBoard read it (:func:`label_of`), none works it out again from the other fields. The default
recipe's own schedule is ``recipe``; any other schedule under a method is ``<method>: <schedule>``,
e.g. ``recipe: decay 0.8-0.02`` or ``reference: fixed 0.8``; a variant of no method is named by its
schedule alone.

Nothing here imports Ray.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import (
    LABEL,
    MACHINE,
    MINING,
    PRESET_DOCS,
    SEED,
    SOURCE,
    Config,
    ConfigError,
    fields_with,
    method_fields,
    preset_of,
)
from ..sampling import schedules
from ..sampling.schedules import format_value

#: The recipe's learned random_rate table: the best lineage of ``sweeps/pbt_schedule.py --method recipe``
#: on ArguAna (population 4, 20 epochs, frozen all-MiniLM-L6-v2, selected on validation_unseen/mean/acc@1;
#: results/pbt_schedule_recipe/schedules.csv): 0.2 for four epochs, 0.1 until the 19th, then 0.
RECIPE_TABLE: tuple[float, ...] = (0.2, 0.2, 0.2, 0.2) + (0.1,) * 14 + (0.0,)


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def strategy_text(config: Mapping[str, Any]) -> str:
    """The ``--strategies`` form of a config's schedule, every field it reads that differs from the
    registry's strategy of that name: ``fixed:rate=0``, ``decay``, ``table:rate_table=0.6,0.5``."""
    defaults = Config().to_dict()
    full = {**defaults, **dict(config)}
    entry = schedules.get(full["schedule"])
    named = {**defaults, **schedules.strategy_fields(entry.name)}
    over = [f"{f}={format_value(full[f])}" for f in entry.fields if format_value(full[f]) != format_value(named[f])]
    return entry.name + (":" + ",".join(over) if over else "")


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


def strategy_label(config: Mapping[str, Any]) -> str:
    """A short human label of a config's random_rate strategy: ``decay 0.8-0.02``, ``fixed 0.8``, ``random``.

    Derived from the config alone through the schedule registry, so a trial's strategy is recoverable
    from its Config with no side channel. summary.md and the console use it; summary.csv also carries
    every field (:func:`strategy_fields_label`).

    Fields not in the entry's short form show as ``field=value`` where they differ from the
    Config default. An unknown schedule name is shown as it is.
    """
    full = {**Config().to_dict(), **dict(config)}
    entry = schedules.SCHEDULES.get(full["schedule"])
    if entry is None:
        return str(full["schedule"])
    parts = []
    if entry.short:
        values = [
            _fmt_table(full[f]) if isinstance(full[f], (list, tuple)) else format_value(full[f]) for f in entry.short
        ]
        parts.append(entry.sep.join(values))
    defaults = Config().to_dict()
    for f in entry.fields:
        if f not in entry.short and format_value(full[f]) != format_value(defaults[f]):
            parts.append(f"{f}={format_value(full[f])}")
    return " ".join([entry.name, *parts])


def strategy_fields_label(config: Mapping[str, Any]) -> str:
    """Every field the schedule reads: ``decay(rate_start=0.8, rate_step=0.02, rate_floor=0)``."""
    full = {**Config().to_dict(), **dict(config)}
    entry = schedules.SCHEDULES.get(full["schedule"])
    if entry is None or not entry.fields:
        return str(full["schedule"])
    return f"{entry.name}(" + ", ".join(f"{n}={format_value(full[n])}" for n in entry.fields) + ")"


@dataclass(frozen=True)
class Method:
    """One method: the values of the method fields it trains with, and the strategies the main job
    (``sweeps/compare_strategies.py`` without ``--strategies``) runs under it."""

    name: str
    fields: Mapping[str, Any]
    strategies: tuple[str, ...]  # --strategies forms: NAME[:FIELD=V,...]
    doc: str


def _recipe_strategies() -> tuple[str, ...]:
    own = strategy_text({})  # the default recipe's own schedule (Config defaults: fixed 0)
    table = f"{schedules.TABLE.name}:rate_table={format_value(RECIPE_TABLE)}"
    return own, "fixed:rate=0.5", schedules.DECAY.name, schedules.RANDOM.name, table


_DEFAULTS = Config().to_dict()
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "reference",
            method_fields(),
            schedules.default_strategies(),
            "the reference implementation (--config reference less its schedule and length)",
        ),
        # the heads' lr goes with the encoder mode, not the method (4e-4 beside the trainable top layer, the
        # default; 3e-4 on frozen features, config.FROZEN_RECIPE, which the strategy sweeps' trials train)
        Method(
            "recipe",
            {k: _DEFAULTS[k] for k in method_fields() if k != "lr"},
            _recipe_strategies(),
            "the project's default recipe (the Config defaults)",
        ),
    )
}
#: The method whose fields are the Config defaults; its own schedule is called by its name alone.
DEFAULT_METHOD = "recipe"
#: The Config fields that tell the methods apart.
METHOD_FIELDS = tuple(method_fields())


def get_method(name: str) -> Method:
    """The method called ``name``; an unknown name is a ConfigError naming it (and a close match)."""
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown method {name!r}; {hint}known: {', '.join(METHODS)}")
    return METHODS[name]


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """``"reference,recipe"`` -> ``["reference", "recipe"]`` (order kept, duplicates dropped); an
    unknown or empty list is a ConfigError naming it."""
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text)]
    names = list(dict.fromkeys(p for p in parts if p))
    if not names:
        raise ConfigError(f"--methods names no method: {text!r}; known: {', '.join(METHODS)}")
    for n in names:
        get_method(n)
    return names


def variant_label(config: Mapping[str, Any], method: str | None) -> str:
    """The one name of a variant the sweep makes: ``config``'s strategy (its schedule fields; missing
    fields read as Config defaults) trained by ``method``. The default method's own schedule is the
    method's name alone (``recipe``); any other schedule is ``<method>: <schedule>``
    (``recipe: decay 0.8-0.02``, ``reference: fixed 0.8``); a variant of no method is its schedule
    alone (``fixed 0.8``). Called where a variant is made (:mod:`counterarg.sweep.spaces`, ``race``,
    ``pbt``), never to recover a method from a config."""
    label = strategy_label(config)
    if method is None:
        return label
    full = {**_DEFAULTS, **dict(config)}
    own = full["schedule"] == _DEFAULTS["schedule"] and all(
        format_value(full[k]) == format_value(_DEFAULTS[k]) for k in schedules.get(full["schedule"]).fields
    )
    mining = _mining_overrides(config, method)
    if method == DEFAULT_METHOD and own:
        return " ".join([method, *mining])
    return f"{method}: " + " ".join([label, *mining])


def _mining_overrides(config: Mapping[str, Any], method: str) -> list[str]:
    """``field=value`` for each mining field (role ``mining``) ``config`` sets apart from ``method``'s
    own value: two variants of one schedule that mine differently get different names
    (``recipe neg_rank=3,10``)."""
    own = get_method(method).fields if method in METHODS else _DEFAULTS
    return [
        f"{k}={format_value(config[k])}"
        for k in fields_with(MINING)
        if k in config and format_value(config[k]) != format_value(own.get(k, _DEFAULTS[k]))
    ]


def labelled(config: Mapping[str, Any], method: str | None) -> dict[str, Any]:
    """``config`` with its method and its one name (:func:`variant_label`) carried beside its fields
    (the Config fields of the ``label`` role)."""
    return {**dict(config), "method": method, "label": variant_label(config, method)}


def label_of(config: Mapping[str, Any]) -> str:
    """The name a config carries (its ``label`` field). A config that carries its method but no name
    yet (a PBT member whose name Tune has not drawn) is named from that method and its schedule; a
    config no sweep labelled (a plain training run, a hand-made config) by its schedule alone."""
    label = config.get("label")
    return label if isinstance(label, str) and label else variant_label(config, config.get("method"))


def slug(label: str, limit: int = 48) -> str:
    """A label as a folder or file name part: ``recipe: decay 0.8-0.02`` -> ``recipe-decay-0.8-0.02``."""
    return re.sub(r"[^A-Za-z0-9.=]+", "-", label).strip("-")[:limit]


def shared_setting(configs: Sequence[Mapping[str, Any]]) -> str | None:
    """What every trial of a sweep trains that ``counterarg train`` with no flags does not: the fields
    all ``configs`` hold at one value that differs from the Config defaults (the data, the encoder,
    the seed and the machine aside), and the preset they make, e.g. "the frozen preset (`--config
    frozen`: ...): finetune=none, epochs=20". None when the trials share no such field."""
    if not configs:
        return None
    defaults = Config().to_dict()
    first = configs[0]
    not_a_setting = fields_with(SOURCE, SEED, MACHINE, LABEL)  # the data and weights, the repeat, the machine, names
    shared = {
        k: v
        for k, v in first.items()
        if k in defaults
        and k not in not_a_setting
        and all(_norm(c.get(k)) == _norm(v) for c in configs)
        and _norm(v) != _norm(defaults[k])
    }
    if not shared:
        return None
    text = ", ".join(f"{k}={format_value(v)}" for k, v in sorted(shared.items()))
    preset = preset_of({**defaults, **first})
    return f"the {preset} preset (`--config {preset}`: {PRESET_DOCS[preset]}): {text}" if preset else text
