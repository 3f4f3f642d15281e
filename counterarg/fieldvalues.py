"""Config values from JSON, ``--set`` strings and Tune: each turned into its field's type, or a
:class:`ConfigError` naming the field. Below every other module (it imports none of the package), so
any of them may raise a ConfigError; :mod:`counterarg.config` re-exports it.
"""

from __future__ import annotations

import math
import re
import typing
from typing import Any


class ConfigError(ValueError):
    """A config key or value that does not fit; the message names it."""


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Turn a JSON/CLI/Tune value into the field's type, or raise naming ``key``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    try:
        if origin is typing.Union or (origin is not None and type(None) in args):
            inner = [a for a in args if a is not type(None)][0]
            if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
                return None
            return coerce(key, value, inner)
        if origin is tuple:
            if isinstance(value, str):
                value = [v for v in re.split(r"[,\s]+", value.strip("()[] ")) if v]
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return tuple(coerce(key, v, args[0]) for v in value)
        if hint is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
                return False
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise TypeError
        if hint is int:
            if isinstance(value, bool):
                raise TypeError
            if isinstance(value, float) and not value.is_integer():
                raise TypeError
            return int(value) if not isinstance(value, str) else int(value.strip())
        if hint is float:
            if isinstance(value, bool):
                raise TypeError
            out = float(value)
            if math.isnan(out):
                raise TypeError
            return out
        if hint is str:
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError):
        pass
    else:
        return value
    tname = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"config field {key!r} expects {tname}, got {value!r}")
