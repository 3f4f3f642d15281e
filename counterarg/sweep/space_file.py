"""A search space over any Config fields, from a JSON file: what a random or ASHA search samples.

Why a file: the question a search answers (which lr, which encoder depth, which loss) changes from
one study to the next, and the fields are the Config's own, so a space is data, not code.

**Format.** A JSON object mapping Config field names to a domain (Ray Tune's, one to one):

* ``{"choice": [v, ...]}``: one of the values per sample (``tune.choice``);
* ``{"grid": [v, ...]}``: every value, each sample repeated per value (``tune.grid_search``:
  ``--num-samples`` samples x the values);
* ``{"uniform": [lo, hi]}`` / ``{"loguniform": [lo, hi]}``: a float drawn evenly in [lo, hi]
  (in log for loguniform, 0 < lo); float fields only (``tune.uniform`` / ``tune.loguniform``);
* ``{"randint": [lo, hi]}``: an integer with lo <= n < hi, hi excluded as in ``tune.randint``;
* any other value (a number, a string, a list for a tuple field, null): fixed for every trial.

Example (``sweeps/spaces/recipe.json``)::

    {"finetune": {"choice": ["none", "top:1"]}, "lr": {"loguniform": [1e-4, 3e-3]}}

Every trial starts from a method's fields (:func:`counterarg.sweep.spaces.method_start`: ``recipe``,
the Config defaults, or ``reference``); the space's fields replace them. Checked before anything
runs, each error naming the file and the key: an unknown field (with a close match), an unknown
domain kind, a bound or value that does not fit the field (each choice, each bound, built into a
Config with the fixed fields; a float range on an integer field), two categorical values that cannot
go together (every combination of the choices is built), ``seed`` (use ``--seeds``), a searched
``epochs`` (ASHA's rungs count epochs: ``--epochs``), ``select_metric`` (the sweep selects on one
metric: ``--set``). Fields that ``--set`` (the sweep's shared base) also sets are refused as given
twice. A search keeps its space in its folder (:func:`save_space`, ``search_space.json``):
``--resume`` with another space is refused (:func:`space_changes`), since Tune would go on sampling
the first.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ray import tune

from ..config import FIELD_NAMES, LABEL, SEED, Config, ConfigError, fields_with
from ..core.io import folder_problem

#: At most this many combinations of the categorical values are each built into a Config.
MAX_COMBINATIONS = 4096
#: Fields a space file never holds, and what to use instead.
NOT_SEARCHABLE = {
    **{f: "give the seeds with --seeds (each sample then runs once per seed)" for f in fields_with(SEED)},
    **{f: "the sweep names its trials itself (--method)" for f in fields_with(LABEL)},
    "select_metric": "a sweep selects every trial on one metric: --set select_metric=...",
}
_HINTS = typing.get_type_hints(Config)


def _numeric_kind(field: str) -> type | None:
    """float or int when the field holds such a number (``float | None`` counts as float), else None."""
    hint = _HINTS[field]
    inner = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) else [hint]
    return inner[0] if len(inner) == 1 and inner[0] in (int, float) else None


def _bounds(where: str, kind: str, value: Any, field: str) -> tuple[float, float]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value)
    ):
        raise ConfigError(f"{where}: {kind} expects [lo, hi], two finite numbers; got {json.dumps(value)}")
    lo, hi = value
    if not lo < hi:
        raise ConfigError(f"{where}: {kind} expects lo < hi; got [{lo}, {hi}]")
    number = _numeric_kind(field)
    if kind == "randint":
        if not (float(lo).is_integer() and float(hi).is_integer()):
            raise ConfigError(f"{where}: randint expects two integers [lo, hi); got [{lo}, {hi}]")
        if number is None:
            raise ConfigError(f"{where}: randint draws numbers; {field!r} holds {_HINTS[field]}")
        return int(lo), int(hi)
    if number is not float:
        holds = getattr(_HINTS[field], "__name__", _HINTS[field])
        raise ConfigError(
            f"{where}: {kind} draws floats; {field!r} holds {holds}"
            + (" (use randint or choice)" if number is int else " (use choice)")
        )
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(f"{where}: loguniform expects 0 < lo; got [{lo}, {hi}]")
    return float(lo), float(hi)


def _values(where: str, kind: str, value: Any) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: {kind} expects a non-empty list of values; got {json.dumps(value)}")
    seen = []
    for v in value:
        if v in seen:
            raise ConfigError(f"{where}: {kind} repeats {json.dumps(v)}; give each value once")
        seen.append(v)
    return value


#: The domain kinds of a space file: name -> (how its argument is read, the Tune domain it becomes).
#: Categorical kinds' arguments are lists of values; range kinds' are (lo, hi).
DOMAINS: dict[str, tuple[Callable[..., Any], Callable[[Any], Any]]] = {
    "choice": (lambda where, v, field: _values(where, "choice", v), lambda v: tune.choice(v)),
    "grid": (lambda where, v, field: _values(where, "grid", v), lambda v: tune.grid_search(v)),
    "uniform": (lambda where, v, field: _bounds(where, "uniform", v, field), lambda b: tune.uniform(*b)),
    "loguniform": (lambda where, v, field: _bounds(where, "loguniform", v, field), lambda b: tune.loguniform(*b)),
    "randint": (lambda where, v, field: _bounds(where, "randint", v, field), lambda b: tune.randint(*b)),
}
CATEGORICAL = ("choice", "grid")


def is_searched(value: Any) -> bool:
    """True for a Tune domain or grid in a param space (a value trials differ in), False for a constant."""
    return (isinstance(value, dict) and "grid_search" in value) or callable(getattr(value, "sample", None))


def searched_fields(param_space: Mapping[str, Any]) -> list[str]:
    """The fields of a param space that trials differ in (domains and grids), in the space's order."""
    return [k for k, v in param_space.items() if is_searched(v)]


#: Where a local search keeps the space it was started with (:func:`save_space`), inside its folder.
SPACE_FILE_NAME = "search_space.json"


def describe(value: Any) -> Any:
    """A param-space entry as the space file would write it (``{"loguniform": [lo, hi]}``, a value)."""
    if not is_searched(value):
        return value
    if isinstance(value, dict):
        return {"grid": list(value["grid_search"])}
    if hasattr(value, "categories"):
        return {"choice": list(value.categories)}
    if hasattr(value, "lower") and hasattr(value, "upper"):
        kind = (
            "randint"
            if type(value).__name__ == "Integer"
            else "loguniform"
            if "Log" in type(value.get_sampler()).__name__
            else "uniform"
        )
        return {kind: [value.lower, value.upper]}
    return f"<{type(value).__name__}>"  # another domain: its kind


def save_space(folder: Path, param_space: Mapping[str, Any]) -> None:
    """Keep the space a search starts with in its folder, for :func:`space_changes` on --resume."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps({k: describe(v) for k, v in param_space.items()}, indent=1, default=repr)
    (folder / SPACE_FILE_NAME).write_text(text + "\n", encoding="utf-8")


def space_changes(folder: Path, param_space: Mapping[str, Any]) -> str | None:
    """The fields whose domain differs from the space the search in ``folder`` started with, in
    words (Tune resumes a search with its first space); None when they match. A saved space that is
    gone or unreadable is said too: with nothing to compare against, an edited space would pass."""
    saved_at = folder / SPACE_FILE_NAME
    try:
        saved = json.loads(saved_at.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return (
            f"{saved_at}, the space this search started with, is gone: there is nothing to compare this "
            "space with (Tune would go on sampling the first one); put it back"
        )
    except (OSError, ValueError) as e:
        return f"{saved_at}, the space this search started with, cannot be read ({e}); put it back"
    now = json.loads(json.dumps({k: describe(v) for k, v in param_space.items()}, default=repr))
    changed = [k for k in sorted({*saved, *now}) if saved.get(k, "(not set)") != now.get(k, "(not set)")]
    if not changed:
        return None
    return "the search space differs from the sweep's: " + "; ".join(
        f"{k} was {json.dumps(saved.get(k, '(not set)'))}, now {json.dumps(now.get(k, '(not set)'))}" for k in changed
    )


def read_space_file(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``; a missing, unreadable or non-JSON file, one that holds no object or
    gives a key twice (at any depth), is a ConfigError naming it."""
    path = Path(path)

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:  # JSON keeps the last of two silently
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise ConfigError(f"space file {path} gives key {key!r} twice; give each field once")
            seen[key] = value
        return seen

    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique_keys)
    except FileNotFoundError:
        raise ConfigError(f"space file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"space file {path} is a folder; give a JSON file") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"space file {path} is not valid JSON: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"space file {path} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"space file {path} cannot be read: {e.strerror or e}") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"space file {path} must hold a JSON object of Config fields, at least one")
    return data


def _check_fits(where: str, base: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
    err = _error(base, changes)
    if err:
        raise ConfigError(f"{where}: {err}")


def _error(base: Mapping[str, Any], changes: Mapping[str, Any]) -> str | None:
    """Why ``changes`` over ``base`` is no config a trial can run (a value that does not fit its field,
    a cache_dir that cannot be a folder: checked here as ``--set`` values are), or None."""
    try:
        cfg = Config.from_dict({**base, **changes})
    except ConfigError as e:
        return str(e)
    problem = folder_problem(cfg.cache_dir) if cfg.cache_dir else None
    return f"cache_dir: {problem}" if problem else None


def _check_combinations(categorical: Mapping[str, list], shared: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Every combination of the categorical values built into a Config (up to
    :data:`MAX_COMBINATIONS`; beyond, each value alone): a value that fits no combination is named
    with its key, a combination that does not fit with its keys. Returns one that fits (the ranges'
    bounds are checked with it), or ``{}``."""
    if math.prod(len(v) for v in categorical.values()) > MAX_COMBINATIONS:
        for key, values in categorical.items():
            for v in values:
                _check_fits(f"{source}: key {key!r}, value {json.dumps(v)}", shared, {key: v})
        return {}
    picks = [dict(zip(categorical, combo)) for combo in itertools.product(*categorical.values())]
    results = [(pick, _error(shared, pick)) for pick in picks]
    for key, values in categorical.items():
        for v in values:
            errors = [err for pick, err in results if pick[key] == v]
            if all(errors):
                raise ConfigError(f"{source}: key {key!r}, value {json.dumps(v)}: {errors[0]}")
    for pick, err in results:
        if err:
            shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in pick.items())
            raise ConfigError(
                f"{source}: keys {', '.join(map(repr, pick))} (the combination {shown}) do not go together: {err}"
            )
    return results[0][0] if results else {}


def parse_space(
    spec: Mapping[str, Any],
    *,
    start: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
    source: str = "space",
) -> dict[str, Any]:
    """A space file's object -> Tune param-space entries (domains and fixed values), validated.

    ``start``: the fields trials start from (:func:`counterarg.sweep.spaces.method_start`), ``base``: the sweep's shared
    fields (``--set``, ``--corpus``, ...); values are checked against both. ``source`` names the
    file in every error (``FILE: key 'lr': ...``).
    """
    start, base = dict(start or {}), dict(base or {})
    fixed: dict[str, Any] = {}
    domains: dict[str, tuple[str, Any]] = {}
    for key, value in spec.items():
        where = f"{source}: key {key!r}"
        if key not in FIELD_NAMES:
            close = difflib.get_close_matches(key, FIELD_NAMES, n=1)
            raise ConfigError(f"{where}: unknown Config field" + (f"; did you mean {close[0]!r}?" if close else ""))
        if key in NOT_SEARCHABLE:
            raise ConfigError(f"{where}: not a search field; {NOT_SEARCHABLE[key]}")
        if key in base:
            raise ConfigError(f"{where}: also set for every trial (--set, --corpus, --epochs, ...); give it once")
        if isinstance(value, dict):
            if len(value) != 1:
                raise ConfigError(
                    f"{where}: a domain is one of {', '.join(map(repr, DOMAINS))} with its "
                    f'argument, e.g. {{"choice": [1, 2]}}; got {json.dumps(value)}'
                )
            ((kind, arg),) = value.items()
            if kind not in DOMAINS:
                close = difflib.get_close_matches(kind, DOMAINS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{where}: unknown domain {kind!r}{hint}" + f" (known: {', '.join(DOMAINS)})")
            if key == "epochs":
                raise ConfigError(
                    f"{where}: every trial of a search runs the same epochs (ASHA's rungs count "
                    "them); give a number, or --epochs"
                )
            domains[key] = (kind, DOMAINS[kind][0](where, arg, key))
        else:
            fixed[key] = value
    shared = {**start, **base}
    for key, value in fixed.items():
        _check_fits(f"{source}: key {key!r}", shared, {key: value})
    shared.update(fixed)
    categorical = {k: arg for k, (kind, arg) in domains.items() if kind in CATEGORICAL}
    shared.update(_check_combinations(categorical, shared, source))
    for key, (kind, arg) in domains.items():
        if kind not in CATEGORICAL:
            for v in (arg[0], arg[1] - 1) if kind == "randint" else arg:
                _check_fits(f"{source}: key {key!r}, value {json.dumps(v)}", shared, {key: v})
    out: dict[str, Any] = {}
    for key in spec:
        out[key] = (
            DOMAINS[domains[key][0]][1](domains[key][1])
            if key in domains
            else Config.from_dict({**shared, key: fixed[key]}).to_dict()[key]
        )
    return out


def search_space(
    spec: Mapping[str, Any],
    *,
    start: Mapping[str, Any],
    seeds: Sequence[int] = (0,),
    base: Mapping[str, Any] | None = None,
    source: str = "space",
) -> dict[str, Any]:
    """The Tune param space of a search: ``start``'s fields less those ``base`` sets (``--set`` wins
    over the method), the space's domains and fixed values over them (:func:`parse_space`), and the
    seeds (a ``grid_search``, each sample run per seed, when more than one)."""
    if not seeds:
        raise ConfigError("a search needs at least one seed")
    base = dict(base or {})
    start = {k: v for k, v in start.items() if k not in base}
    parsed = parse_space(spec, start=start, base=base, source=source)
    space = {**{k: v for k, v in start.items() if k not in parsed}, **parsed}  # the file's fields last, in its order
    space["seed"] = tune.grid_search(list(seeds)) if len(seeds) > 1 else seeds[0]
    return space
