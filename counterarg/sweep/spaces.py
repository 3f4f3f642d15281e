"""A sweep's search space: named strategies, grids of flat trial configs, and the searcher serving them.

Why this shape: **1:1 with Config.** Every key a trial receives is a :class:`~counterarg.config.Config`
field (``Config.from_dict`` fails loudly on anything else). A strategy is several fields at once
(schedule ``decay`` with ``rate_start`` 0.8 and ``rate_step`` 0.02), which Tune's ``grid_search``
cannot vary jointly while keeping keys flat, so a grid is expanded here into a list of flat config
dicts (:func:`grid`) and served in order by :class:`VariantSearcher`, whose position is saved with
the experiment (resume keeps working). Each strategy is trained by a method (``reference`` or
``recipe``, :mod:`counterarg.analysis.methods`); a grid crosses the strategies with the methods. A
strategy is named here, as it is made (:func:`strategy`): its method and its one name
(:func:`counterarg.analysis.methods.variant_label`) travel with it in the Config fields ``method`` and
``label``, which nothing trains on. Random/ASHA search (:func:`margin_lr_space`, and any space file:
:mod:`counterarg.sweep.space_file`) uses Tune's native domains, which are flat already. Schedule names come
from the registry (:mod:`counterarg.sampling.schedules`); none is listed here.
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from ..analysis.methods import DEFAULT_METHOD, METHODS, get_method, label_of, labelled, strategy_text
from ..config import FIELD_NAMES, PRESETS, Config, ConfigError, method_fields
from ..core.io import atomic_write_text
from ..ray_internals import searcher_state_files
from ..sampling import schedules
from .space_file import search_space

#: The reference method's fields (kept for callers that build reference configs by hand).
REFERENCE_FIELDS = method_fields()
#: The methods a strategy is crossed with when none is named: every one (``--methods`` default).
DEFAULT_METHODS = tuple(METHODS)


def default_strategies(method: str) -> tuple[str, ...]:
    """The main job's strategies under ``method``: ``--strategies`` forms, from
    :data:`~counterarg.analysis.methods.METHODS`."""
    return get_method(method).strategies


def strategy(name: str | Mapping[str, Any], method: str = "reference", **fields_: Any) -> dict[str, Any]:
    """A strategy as flat Config fields: a schedule name from the registry or a dict, plus overrides,
    trained by ``method`` (a name in :data:`counterarg.analysis.methods.METHODS`).

    ``strategy("fixed", rate=0.5)`` -> the reference method's fields (:data:`REFERENCE_FIELDS`) with
    ``{"schedule": "fixed", "rate": 0.5}`` (the name's default strategy,
    :func:`counterarg.sampling.schedules.strategy_fields`, with overrides); ``strategy("fixed", "recipe",
    rate=0)`` -> the default recipe, the same fields at their Config defaults; a dict is a strategy
    of its own fields under ``method``. Each carries its method and its one name (``method``,
    ``label``: :func:`counterarg.analysis.methods.labelled`), made here. Validated now, so a typo
    fails before the sweep starts.
    """
    if isinstance(name, str):
        if name in METHODS:
            raise ConfigError(
                f"{name!r} is a method, not a strategy: pass --methods {name} and schedules in "
                f"--strategies (the default recipe itself is {strategy_text({})!r} "
                f"under --methods {DEFAULT_METHOD})"
            )
        known = list(schedules.SCHEDULES)
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"unknown strategy {name!r}; {hint}known: {', '.join(known)}")
        out = {**get_method(method).fields, **schedules.strategy_fields(name), **fields_}
    else:
        out = {**get_method(method).fields, **dict(name), **fields_}
    cfg = Config.from_dict(out)  # validates and coerces ("0.5" -> 0.5)
    values = cfg.to_dict()
    return labelled({k: values[k] for k in out}, method)


def parse_strategy(text: str, method: str = "reference") -> dict[str, Any]:
    """CLI form: ``decay`` or ``fixed:rate=0.5`` or ``step:rate_start=0.8,rate_gamma=0.3``, under ``method``.

    A list value keeps its commas: ``table:rate_table=0.8,0.6,0.4`` (a comma starts a new
    override only where ``FIELD=`` follows it).
    """
    name, _, rest = text.partition(":")
    overrides = {}
    for item in filter(None, re.split(r",(?=\s*[A-Za-z_]\w*\s*=)", rest)):
        if "=" not in item:
            raise ConfigError(f"strategy override expects FIELD=VALUE, got {item!r} in {text!r}")
        k, v = item.split("=", 1)
        overrides[k.strip()] = v
    return strategy(name.strip(), method, **overrides)


def method_start(method: str) -> dict[str, Any]:
    """The fields every trial of a search starts from: ``method``'s fields and its own schedule
    (``recipe``: the Config defaults, schedule fixed 0; ``reference``: the reference implementation,
    decay 0.8-0.02), as :func:`parse_strategy` builds them."""
    return parse_strategy(strategy_text(PRESETS.get(method, {})), method)


def method_strategies(
    strategies: str | Sequence[str | Mapping[str, Any]] | None = None, methods: Sequence[str] = DEFAULT_METHODS
) -> list[dict[str, Any]]:
    """Every strategy crossed with every method, as flat Config fields (method outer).

    ``strategies``: ``--strategies`` forms (a list, or one string separated by ``;``) or schedule dicts
    (as :func:`strategy` takes them), each trained by each method; None: each method's own main-job
    list (:func:`default_strategies`).
    """
    if isinstance(strategies, str):
        strategies = [s for s in strategies.split(";") if s.strip()]
        if not strategies:
            raise ConfigError("--strategies names no strategy")
    out = []
    for m in methods:
        for s in strategies if strategies is not None else default_strategies(m):
            out.append(parse_strategy(s, m) if isinstance(s, str) else strategy(s, m))
    return out


def grid(
    *axes: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]], base: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Cartesian product of axes into flat Config-field dicts (the trial configs of a grid).

    Each axis is either a list of partial configs (e.g. strategies, each several fields) or a
    ``{field: [values]}`` mapping (one field, e.g. ``{"seed": [0, 1, 2]}``). Later axes and
    ``base`` never share keys with each other silently: overlapping keys raise, since that would
    make two "different" trials identical. Every dict is validated against Config.
    """
    norm: list[list[dict[str, Any]]] = []
    for ax in axes:
        if isinstance(ax, Mapping):
            if len(ax) != 1:
                raise ValueError("a mapping axis must have exactly one field: {field: [values]}")
            ((k, values),) = ax.items()
            norm.append([{k: v} for v in values])
        else:
            norm.append([dict(p) for p in ax])
    out = []
    for combo in itertools.product(*norm):
        cfg: dict[str, Any] = dict(base or {})
        for part in combo:
            for k in part:
                if k in cfg:
                    raise ValueError(f"field {k!r} is set by more than one grid axis/base")
            cfg.update(part)
        Config.from_dict(cfg)
        out.append(cfg)
    return out


def strategy_grid(
    strategies: str | Sequence[str | Mapping[str, Any]] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    methods: Sequence[str] = DEFAULT_METHODS,
    **more: Sequence[Any],
) -> list[dict[str, Any]]:
    """Methods x strategies x seeds (x any ``field=[values]`` given as keyword), as flat trial configs.

    No ``strategies``: the main job, each method's own list (:func:`method_strategies`).
    """
    axes: list[Any] = [method_strategies(strategies, methods)]
    axes += [{k: list(v)} for k, v in more.items()]
    axes.append({"seed": list(seeds)})
    return grid(*axes)


def margin_lr_space(
    schedule: str | Mapping[str, Any] = schedules.DEFAULT_SCHEDULE,
    *,
    margin: tuple[float, float] = (0.1, 3.0),
    lr: tuple[float, float] = (1e-4, 1e-2),
    seeds: Sequence[int] = (0,),
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Tune param space for a random/ASHA search over margin and lr (log-uniform) for one strategy:
    the space file search's path (:func:`counterarg.sweep.space_file.search_space`) with a built-in
    space. Keys are Config fields; seeds become a ``grid_search`` (repeats per sample) when more
    than one; ``base`` (the sweep's shared fields, ``--set``) wins over the strategy's."""
    spec = {"margin": {"loguniform": list(margin)}, "lr": {"loguniform": list(lr)}}
    return search_space(spec, start=strategy(schedule), seeds=seeds, base=base, source="--margin-range/--lr-range")


class ConstantSpaceSearcher(Searcher):
    """A searcher that serves whole trial configs itself: the param space holds only constants (the
    shared base, merged by Tune), so Tune's search properties only set the metric and mode once."""

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        if metric and not self._metric:
            self._metric = metric
        if mode and not self._mode:
            self._mode = mode
        return True


class VariantSearcher(ConstantSpaceSearcher):
    """Serve a fixed list of flat trial configs in order (a grid whose points are whole dicts).

    Unlike ``grid_search`` the points may vary several fields jointly while every key stays a
    Config field. The position is saved with the experiment so ``Tuner.restore`` continues the
    list where it stopped instead of creating trials twice.
    """

    def __init__(self, variants: Sequence[Mapping[str, Any]], metric: str | None = None, mode: str | None = None):
        super().__init__(metric=metric, mode=mode)
        self.variants = [dict(v) for v in variants]
        self.next_index = 0

    def suggest(self, trial_id: str):
        if self.next_index >= len(self.variants):
            return self.FINISHED
        cfg = dict(self.variants[self.next_index])
        self.next_index += 1
        return cfg

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        atomic_write_text(Path(checkpoint_path), json.dumps({"variants": self.variants, "next_index": self.next_index}))

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        self.variants = state["variants"]
        self.next_index = state["next_index"]


def saved_variants(exp_dir: Path) -> list[dict[str, Any]] | None:
    """The grid a sweep in ``exp_dir`` was started with, from its newest :class:`VariantSearcher`
    state (``searcher-state-*.pkl``, JSON); None when it has none (not a grid, or not saved yet)."""
    for f in searcher_state_files(exp_dir):
        try:
            state = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # another searcher's pickle, or cut short
        if isinstance(state, dict) and isinstance(state.get("variants"), list):
            return state["variants"]
    return None


def grid_changes(saved: Sequence[Mapping[str, Any]] | None, now: Sequence[Mapping[str, Any]]) -> str | None:
    """What differs between the grid a sweep ran (``saved``) and the one asked for now, in the
    flags' words (``strategies differ from the sweep's: ...``); None when they are the same."""
    if saved is None:
        return None
    now = json.loads(json.dumps(list(now)))  # as saved: tuples become lists
    if list(saved) == now:
        return None

    def axes(variants):
        labels, seeds = [], []
        for v in variants:
            full = Config.from_dict({k: x for k, x in v.items() if k in FIELD_NAMES}).to_dict()
            labels += [lb] if (lb := label_of(full)) not in labels else []
            seeds += [full["seed"]] if full["seed"] not in seeds else []
        return labels, seeds

    (old_s, old_seeds), (new_s, new_seeds) = axes(saved), axes(now)
    parts = []
    if old_s != new_s:
        parts.append(
            f"strategies differ from the sweep's: it runs {'; '.join(old_s)}, this command asks for {'; '.join(new_s)}"
        )
    if old_seeds != new_seeds:
        parts.append(
            f"seeds differ from the sweep's: it runs {','.join(map(str, old_seeds))}, this command asks "
            f"for {','.join(map(str, new_seeds))}"
        )
    if not parts:
        fields = sorted({k for a, b in zip(saved, now) for k in {*a, *b} if a.get(k) != b.get(k)})
        parts.append(
            "the trials' fields differ from the sweep's"
            + (f": {', '.join(fields)}" if fields else f" ({len(saved)} trials, now {len(now)})")
        )
    return "; ".join(parts)
