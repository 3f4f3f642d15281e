"""Text files a user names on the command line (rank, embed): read as UTF-8, or a clear error.

One reader (:func:`read_input_text`) checks every such file the same way (it exists, is a file,
is within its size limit, decodes as UTF-8, with a byte-order mark dropped) and names the file and
the line in its errors; :func:`read_texts` splits a file into texts (one per line, or a field of
each JSONL object). Errors are :class:`~counterarg.core.fieldvalues.ConfigError` (config re-exports it),
which the CLI prints.
Numbers on the command line are checked when parsed (:func:`int_at_least`, :func:`number_at_least`:
argparse types, so a bad value is a usage error, exit 2). Every parser's ``--help`` shows each option's
default (:class:`DefaultsHelpFormatter`).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

from ..core.fieldvalues import ConfigError

#: the largest candidates file `counterarg rank` reads
MAX_CANDIDATES_BYTES = 50 << 20


def read_input_text(path: str | Path, what: str, limit: int | None = None) -> str:
    """The text of a UTF-8 file given on the command line (BOM dropped), or a ConfigError naming it
    (and, for bytes that are not UTF-8, their line and byte offset)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} not found: {path}")
    if not path.is_file():
        raise ConfigError(f"{what} {path} is not a file")
    size = path.stat().st_size
    if limit is not None and size > limit:
        raise ConfigError(f"{what} {path} is {size} bytes, over the limit of {limit} bytes")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"{what} {path}, line {line}: not valid UTF-8 ({e.reason} at byte {e.start}); save it as UTF-8"
        ) from None


def read_texts(path: str | Path, field: str = "text", limit: int | None = None, what: str = "input file") -> list[str]:
    """Texts of an input file: JSONL (``.jsonl``, one object per line with ``field``) or plain text,
    one text per line (empty lines skipped). Errors name the file and the line."""
    path = Path(path)
    texts = []
    for n, line in enumerate(read_input_text(path, what, limit).split("\n"), 1):
        s = line.rstrip("\r")
        if not s.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                obj = json.loads(s)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}, line {n}: not JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
                raise ConfigError(f"{path}, line {n}: expected an object with a string field {field!r}")
            s = obj[field]
        texts.append(s)
    if not texts:
        raise ConfigError(f"{what} {path} holds no texts")
    return texts


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in [low, high]; a bad value is a usage error (exit 2, no traceback)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


def number_at_least(low: float) -> Callable[[str], float]:
    """argparse type: a finite number >= low; a bad value is a usage error (exit 2, no traceback)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and value >= low):
            raise argparse.ArgumentTypeError(f"must be a finite number >= {low:g}, got {text}")
        return value

    return parse


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` that names each option's default: ``(default: VALUE)`` after its help where it has a
    value (not None, False or a list) and the help does not say it already; the description keeps its
    line breaks. An option whose default is None says in its own help what happens without it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and default is not None
            and default is not False
            and default != argparse.SUPPRESS
            and not isinstance(default, (list, tuple))
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text
