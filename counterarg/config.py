"""The run configuration: the one home of every default.

A flat dataclass so that a Ray Tune search space, a JSON file and ``--set FIELD=VALUE`` all map
one to one onto its field names. Unknown or mistyped keys and values that do not fit a field
raise :class:`ConfigError` naming the key. Each field also says what it is (its roles, :data:`ROLES`:
what defines the model, may change on resume or at evaluation, keys the feature cache, ...), and
every module that treats fields by kind asks :func:`fields_with`. This module sits above the
registries it validates through (schedules, index, model, loss, evaluate, tasks, precision); none
of them imports it.
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

from .core.fieldvalues import ConfigError, coerce
from .retrieval import index as _index
from .sampling import schedules as _schedules

POOLINGS = ("cls", "pooler", "mean")
OPTIMIZERS = ("adam", "adamw")

#: What a field is, as the roles in its metadata say (``field(metadata={"roles": ...})``, read by
#: :func:`fields_with`): every place that treats fields by kind reads these, none keeps its own list.
ROLES: dict[str, str] = {
    "model": "defines the trained model's weights (architecture): a checkpoint fits only its own value",
    "resume": "may differ between a checkpoint and the run resuming it (checkpoint.check_resumable)",
    "hyper": "a training hyperparameter a resumed run takes anew from the resumed epoch on (PBT's explore); "
    "a resume lists the ones it changed",
    "eval": "may change when a trained checkpoint is evaluated, ranked with or embedded with (cli)",
    "cache": "keys the feature cache (features.cache_folder), with the corpus's texts",
    "machine": "describes the machine a command runs on, not the model: a checkpoint's value is never taken",
    "schedule": "read by a random_rate schedule (schedules.SCHEDULES); with schedule they name a strategy",
    "seed": "the repeat: runs that differ only here are seeds of one setting (a sweep gives them with --seeds, "
    "a search never draws them)",
    "source": "where a run's texts and starting weights come from (a path or a name), not how it trains: "
    "a sweep's shared setting leaves it out",
    "label": "names a run (its method, its label), made by the sweep with its variant: nothing trains on it",
    "mining": "chooses which hard negatives mining draws (sampling.mining): a variant that sets it apart from its "
    "method is named by it",
}
MODEL, RESUME, HYPER, EVAL, CACHE, MACHINE, SCHEDULE, SEED, SOURCE, LABEL, MINING = ROLES


def _f(default: Any, *roles: str) -> Any:
    """A Config field with ``default`` and ``roles`` (names in :data:`ROLES`)."""
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown field role(s) {', '.join(unknown)}; known: {', '.join(ROLES)}")
    return dataclasses.field(default=default, metadata={"roles": frozenset(roles)})


#: The reference implementation's method (the 2018 scripts as this project reproduces them: a
#: randomly initialised 128-d head, CombinedLoss on one nearest negative, batch 8, a random rate
#: decaying from 0.8, L2 distance, every copy of a training pair, 20 epochs, no early stopping), as
#: the values of the fields whose defaults have moved on. ``--config reference`` trains it; the
#: sweep's fixed/decay/random strategies start from it.
REFERENCE_METHOD: dict[str, Any] = {
    "head": "linear",
    "sim_dim": 128,
    "loss": "combined",
    "lr": 1e-3,
    "batch_size": 8,
    "epochs": 20,
    "patience": 0,
    "num_negatives": 1,
    "neg_rank": (1, 1),
    "neg_margin": None,
    "dedupe_pairs": False,
    "schedule": _schedules.REFERENCE_SCHEDULE,
    "rate": 0.8,
    "eval_metric": "l2",
    "eval_mode": "retrieval",
}


def method_fields() -> dict[str, Any]:
    """The reference method less its schedule and its length: what a sweep's schedule strategies
    train (each with its own schedule), and what tells the reference method from the default recipe."""
    return {k: v for k, v in REFERENCE_METHOD.items() if k not in fields_with(SCHEDULE) and k != "epochs"}


#: The frozen-encoder recipe, the default before the top-layer one: the encoder's pooled output is
#: cached once and only the heads train, up to 30 epochs with early stopping. An epoch takes one to two
#: minutes on 2 CPU cores (the default's top layer about ten), so the strategy sweeps' trials
#: (compare_strategies, race_strategies, pbt_schedule) train it: their 24 trials stay a laptop job.
FROZEN_RECIPE: dict[str, Any] = {
    "finetune": "none",
    "epochs": 30,
    "max_length": 256,
    "lr": 3e-4,
    "encoder_lr": 3e-6,
    "length_buckets": 0,
}

#: Full fine-tuning on one CUDA GPU (bf16 there through precision=auto): ``--config gpu``, and what
#: ``counterarg bench gpu`` runs for one epoch.
GPU_RECIPE: dict[str, Any] = {
    "finetune": "all",
    "device": "cuda",
    "batch_size": 32,
    "encoder_lr": 2e-5,
    "embed_batch_size": 256,
    "length_buckets": 64,
}

#: Named configs that ``Config.load`` (so ``--config NAME``) accepts besides a JSON file, each with
#: the one line that says what it is for (--help, sweep summaries).
PRESETS: dict[str, dict[str, Any]] = {"reference": REFERENCE_METHOD, "frozen": FROZEN_RECIPE, "gpu": GPU_RECIPE}
PRESET_DOCS: dict[str, str] = {
    "reference": "the reference implementation's method (2018 scripts)",
    "frozen": "the frozen encoder: cached pooled features, heads only (1-2 min per epoch on 2 CPU cores)",
    "gpu": "full fine-tuning on one CUDA GPU (finetune=all, bf16, length buckets, batch 32)",
}


def preset_of(fields_: dict[str, Any]) -> str | None:
    """The name of the non-reference preset whose every field ``fields_`` holds at the preset's value."""
    for name, preset in PRESETS.items():
        if name != "reference" and all(_same(fields_.get(k), v) for k, v in preset.items()):
            return name
    return None


def _same(a: Any, b: Any) -> bool:
    def norm(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    return norm(a) == norm(b)


_SCHED = (SCHEDULE, RESUME, HYPER)  # a schedule field's roles


@dataclass
class Config:
    """Everything one training run needs; see README "Configuration" for each field's meaning."""

    # data and model
    corpus: str | None = _f(None, EVAL, SOURCE)  # zip, unpacked folder, or None for the generated demo corpus
    # local folder, hub name, or the embedded default (all-MiniLM-L6-v2, nn.encoder.DEFAULT_ALIASES)
    encoder: str = _f("all-MiniLM-L6-v2", MODEL, CACHE, SOURCE)
    pooling: str = _f("mean", MODEL, CACHE)  # cls | pooler | mean
    max_length: int = _f(256, MODEL, CACHE)
    sim_dim: int = _f(0, MODEL)  # 0 = the encoder width
    head: str = _f("identity", MODEL)  # similarity head's start: linear (reference) | identity | orthogonal | residual
    head_reg: float = 0.0  # weight of ||W - W_start||^2, pulls the head back toward its start
    finetune: str = _f("top:1", MODEL, CACHE)  # all | none | top:N
    # the machine: where caches live, the device, how large a no-grad batch fits, how the neighbour
    # index spreads its work (every backend gives the same neighbours). A checkpoint's values are
    # never taken for them (Config.from_checkpoint: it was made on another machine, perhaps with a
    # cache_dir that does not exist here) unless --set names them.
    device: str = _f("auto", MACHINE, RESUME, EVAL)  # auto | cpu | cuda | cuda:N
    cache_dir: str | None = _f(None, MACHINE, RESUME, EVAL, CACHE)  # None -> $COUNTERARG_CACHE or ~/.cache/counterarg
    embed_batch_size: int = _f(16, MACHINE, EVAL)  # no-grad embedding passes (longest texts first)
    # encoder forward in training and embedding passes: auto | fp32 | bf16 | fp16; heads and loss stay
    # fp32, fp16 adds a gradient scaler; auto = bf16 where the device has bf16 units (CUDA Ampere+,
    # CPUs with AVX512-BF16/AMX), else fp32
    precision: str = _f("auto", RESUME)

    # optimisation
    epochs: int = _f(2, RESUME)
    batch_size: int = 64
    lr: float = _f(4e-4, RESUME, HYPER)
    encoder_lr: float = _f(1.3e-4, RESUME, HYPER)  # for the trainable encoder layers (finetune all | top:N)
    optimizer: str = "adam"  # adam | adamw
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    seed: int = _f(0, SEED)
    patience: int = _f(5, RESUME)  # stop after this many epochs without a new best select_metric; 0 = run all epochs
    # 0 = off (one random permutation per epoch); N = length buckets of N batches: the epoch's
    # shuffled rows are cut into spans of N * batch_size, each span sorted by token length and cut
    # into batches, and the batches shuffled; finetune top:N and all (with none, training reads cached pooled
    # vectors, nothing is padded, and the field has no effect)
    length_buckets: int = 64

    # objectives (nn/loss.py): a registry name or a weighted sum, e.g. "infonce+0.5*pair_ce"
    loss: str = "infonce+pair_ce"
    scale: float = 20.0  # infonce: cosine similarity times scale are the logits
    # CombinedLoss (combined, triplet, pair_ce)
    margin: float = _f(1.0, RESUME, HYPER)
    p: float = 2.0
    w_triplet: float = 1.0
    w_pos: float = 1.0
    w_neg: float = 1.0

    # random_rate schedule: a name in schedules.SCHEDULES (the registry) and the fields it reads; the
    # rate is computed per epoch, so a resumed run applies a changed schedule from the resumed epoch on
    schedule: str = _f(_schedules.DEFAULT_SCHEDULE, *_SCHED)  # the default recipe: fixed, rate 0 = every negative mined
    rate: float = _f(0.0, *_SCHED)  # fixed
    rate_start: float = _f(0.8, *_SCHED)  # decay, cosine, step
    rate_step: float = _f(0.02, *_SCHED)  # decay: subtracted per epoch
    rate_floor: float = _f(0.0, *_SCHED)  # decay, cosine, step
    rate_period: int = _f(0, *_SCHED)  # cosine: epochs from start to floor; 0 -> epochs
    rate_every: int = _f(5, *_SCHED)  # step: epochs between drops
    rate_gamma: float = _f(0.5, *_SCHED)  # step: factor per drop
    rate_table: tuple[float, ...] = _f((), *_SCHED)  # table: the rate of each epoch; the last value holds

    # mining (sampling/mining.py)
    num_negatives: int = _f(1, MINING)  # mined negatives per anchor
    neg_rank: tuple[int, ...] = _f((1, 10), MINING)  # (lo, hi): draw hard negatives from these ranks, 1 = nearest
    neg_margin: float | None = _f(None, MINING)  # skip candidates closer than the own counter minus this; None = off
    dedupe_pairs: bool = True  # train on each distinct (point text, counter text) pair once

    # neighbour index (retrieval/index.py), shared by mining and evaluation; its defaults are the index's own
    index: str = _f("exact", MACHINE, RESUME, EVAL)  # exact | balltree | sharded-balltree
    shards: int = _f(_index.DEFAULT_OPTIONS["shards"], MACHINE, RESUME, EVAL)
    leaf_size: int = _f(_index.DEFAULT_OPTIONS["leaf_size"], MACHINE, EVAL)
    block_size: int = _f(_index.DEFAULT_OPTIONS["block_size"], MACHINE, EVAL)

    # evaluation (retrieval/tasks.py, evaluation/evaluate.py)
    # retrieval | rerank (the reference's classifier rerank of the top rerank_k) | fused
    eval_mode: str = _f("fused", EVAL)
    fused_w: float | None = _f(None, EVAL)  # fused: weight of the classifier's log-odds; None = picked on validation
    fused_grid: tuple[float, ...] = (0.0, 0.05, 0.2, 1.0)  # ... from these, each epoch
    eval_metric: str = _f("cosine", EVAL)  # l2 | cosine
    rerank_k: int = _f(10, EVAL)
    ks: tuple[int, ...] = _f((1, 5, 10), EVAL)
    test_every: int = _f(1, RESUME)  # evaluate test every N epochs (and at the last); 0 = never
    eval_training: bool = _f(False, RESUME)
    # the metric that picks a run's best epoch and ranks trials in a sweep (maximised); validation
    # only: the full view or the unseen view (queries whose texts never occur in training)
    select_metric: str = "validation_unseen/mean/acc@1"

    # the run's name, made once with its variant by the sweep that runs it (counterarg.sweep.spaces, race,
    # pbt; analysis.methods.variant_label) and carried with it into summaries, plots, TensorBoard and the
    # trial's folder name; none for a run no sweep made (a summary then names it by its schedule)
    method: str | None = _f(None, LABEL, RESUME, EVAL)  # the method its fields are (analysis.methods.METHODS)
    label: str | None = _f(None, LABEL, RESUME, EVAL)  # its one name: recipe, recipe: decay 0.8-0.02, ...

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Build from a mapping of field names; unknown keys fail loudly."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        hints = typing.get_type_hints(cls)
        values = {k: coerce(k, v, hints[k]) for k, v in data.items()}
        return cls(**values)

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> Config:
        """A checkpoint's config on this machine: its own values, but this machine's defaults for
        the machine fields (:data:`MACHINE_FIELDS`; apply the user's ``--set`` on top)."""
        here = {f.name: f.default for f in fields(cls) if f.name in MACHINE_FIELDS}
        return cls.from_dict({**saved, **here})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def replace(self, **changes: Any) -> Config:
        return Config.from_dict({**self.to_dict(), **changes})

    @classmethod
    def load(cls, path: str | Path) -> Config:
        """A JSON file of fields, or the name of a preset (:data:`PRESETS`, e.g. ``reference``)."""
        return cls.from_dict(cls.read_fields(path))

    @staticmethod
    def read_fields(path: str | Path) -> dict[str, Any]:
        """The fields a JSON file (or a preset, :data:`PRESETS`) sets, as written: read errors are a
        ConfigError naming the file; the fields themselves are checked by :meth:`from_dict`."""
        if str(path) in PRESETS:
            return dict(PRESETS[str(path)])
        path = Path(path)
        if path.is_dir():
            raise ConfigError(
                f"config file {path} is a folder; give a JSON file of config fields (or a preset: {', '.join(PRESETS)})"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"config file {path} is not UTF-8 text (byte {e.start}); give a JSON file of config fields"
            ) from None
        except OSError as e:
            raise ConfigError(f"config file {path} cannot be read: {e.strerror or e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a JSON object")
        return data

    def save(self, path: str | Path) -> None:
        from .core.io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def with_overrides(self, assignments: list[str]) -> Config:
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
        from .nn.head_starts import HEAD_STARTS
        from .nn.loss import LossError, parse_loss

        _choice("pooling", self.pooling, POOLINGS)
        _choice("head", self.head, tuple(HEAD_STARTS))
        try:
            parse_loss(self.loss)
        except LossError as e:
            raise ConfigError(str(e)) from None
        if len(self.neg_rank) != 2 or not 1 <= self.neg_rank[0] <= self.neg_rank[1]:
            raise ConfigError(f"neg_rank must be two ranks lo,hi with 1 <= lo <= hi, got {self.neg_rank!r}")
        window = self.neg_rank[1] - self.neg_rank[0] + 1  # hard negatives are drawn from these ranks
        if self.num_negatives > window:
            raise ConfigError(
                f"num_negatives={self.num_negatives} is more than the {window} rank(s) of neg_rank="
                f"{self.neg_rank[0]},{self.neg_rank[1]} it draws from: each anchor's negatives would "
                "repeat; lower num_negatives or widen neg_rank"
            )
        if self.neg_margin is not None and not math.isfinite(self.neg_margin):
            raise ConfigError(f"neg_margin must be a finite number or none, got {self.neg_margin!r}")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ConfigError(f"scale must be a finite number > 0, got {self.scale!r}")
        _choice("schedule", self.schedule, tuple(_schedules.SCHEDULES))
        check_schedule(_schedules.SCHEDULES[self.schedule])  # one registered after this module loaded
        from .retrieval.index import BACKENDS  # the index backends' one list
        from .retrieval.scorers import METRICS, SCORERS

        _choice("index", self.index, BACKENDS)
        _choice("eval_mode", self.eval_mode, tuple(SCORERS))
        if not self.fused_grid or any(not (w >= 0 and math.isfinite(w)) for w in self.fused_grid):
            raise ConfigError(f"fused_grid must be finite weights >= 0, got {self.fused_grid!r}")
        if self.fused_w is not None and not (self.fused_w >= 0 and math.isfinite(self.fused_w)):
            raise ConfigError(f"fused_w must be a finite number >= 0 or none, got {self.fused_w!r}")
        _choice("eval_metric", self.eval_metric, METRICS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        from .nn.precision import PRECISIONS

        _choice("precision", self.precision, PRECISIONS)
        if not re.fullmatch(r"all|none|top:[1-9]\d*", self.finetune):
            raise ConfigError(f"finetune must be all, none or top:N (N >= 1), got {self.finetune!r}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.sim_dim < 0:
            raise ConfigError(f"sim_dim must be >= 0 (0 = the encoder width), got {self.sim_dim!r}")
        for name in (
            "max_length",
            "embed_batch_size",
            "epochs",
            "batch_size",
            "num_negatives",
            "shards",
            "leaf_size",
            "block_size",
            "rerank_k",
            "rate_every",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("lr", "encoder_lr", "p"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must lie in [0, 2**32 - 1] (numpy's range), got {self.seed!r}")
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0 (0 = off), got {self.patience!r}")
        for name in (
            "weight_decay",
            "head_reg",
            "grad_clip",
            "margin",
            "w_triplet",
            "w_pos",
            "w_neg",
            "rate_step",
            "rate_period",
            "test_every",
        ):
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


def fields_with(*roles: str) -> tuple[str, ...]:
    """The names of the Config fields that have ``role`` (a key of :data:`ROLES`), or any of several
    roles, in field order: ``fields_with(SEED, MACHINE)`` is what never tells two settings apart."""
    for role in roles:
        if role not in ROLES:
            raise ValueError(f"unknown field role {role!r}; known: {', '.join(ROLES)}")
    return tuple(f.name for f in fields(Config) if set(roles) & f.metadata.get("roles", frozenset()))


#: The fields that describe the machine (role ``machine``): evaluate, rank, embed and export use this
#: machine's defaults ($COUNTERARG_CACHE, device auto) for them unless --set names them.
MACHINE_FIELDS = fields_with(MACHINE)


def check_schedule(entry: _schedules.Schedule) -> None:
    """A schedule may read only Config fields of the ``schedule`` role (resume, summaries and sweeps
    treat those as the strategy's); raises :class:`ConfigError` naming the field."""
    for name in entry.fields:
        if name not in FIELD_NAMES:
            raise ConfigError(f"schedule {entry.name!r} reads {name!r}, which is not a Config field")
        if name not in fields_with(SCHEDULE):
            raise ConfigError(
                f"schedule {entry.name!r} reads {name!r}, which has no {SCHEDULE!r} role in "
                "config.py (give it one: resume and summaries treat those as the strategy's)"
            )


for _entry in _schedules.SCHEDULES.values():
    check_schedule(_entry)


def _check_select_metric(name: str) -> None:
    """``validation[_unseen]/{task|mean}/{acc@k|mrr}``: model selection never reads the test split."""
    from .retrieval.tasks import task_names  # the one list of task names

    m = re.fullmatch(r"(validation|validation_unseen)/([a-z]+)/(acc@[1-9]\d*|mrr)", name)
    if not m or m.group(2) not in (*task_names(), "mean"):
        raise ConfigError(
            f"select_metric must look like validation/mean/acc@1 or validation_unseen/TASK/acc@K "
            f"(TASK one of {', '.join(task_names())} or mean; or mrr); got {name!r}"
        )


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
