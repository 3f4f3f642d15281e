"""What a sweep driver prepares before its trials start: the feature cache, built once (a cold cache
takes minutes, with a progress bar, instead of every trial waiting on its lock), and the zero-shot
encoder's metrics and per-query ranks, the baseline every strategy is tested against. Also each
trial's concrete config (the sweep's shared fields plus its variant). No Tune objects here.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..config import CACHE, MACHINE, Config, fields_with
from ..evaluation.evaluate import zero_shot_metrics
from ..training.loop import prepare_features

if TYPE_CHECKING:
    from .runner import Sweep

#: The fields that decide a trial's cached features (one cache per distinct combination): the corpus
#: (its texts) and the fields of the ``cache`` role (config.py).
FEATURE_FIELDS = ("corpus", *fields_with(CACHE))


def warm_feature_cache(configs: Iterable[Mapping[str, Any]]) -> float:
    """Run ``prepare_features`` once per distinct config before trials start; returns seconds.

    Trials then only load the cache (file-locked, on disk). Distinctness is judged on what keys the
    cache (:data:`FEATURE_FIELDS`); extra calls are cache hits anyway.
    """
    keys = FEATURE_FIELDS
    seen = set()
    t = time.perf_counter()
    for c in configs:
        cfg = Config.from_dict(dict(c))
        key = tuple(repr(getattr(cfg, k)) for k in keys)
        if key in seen:
            continue
        seen.add(key)
        try:
            prepare_features(cfg, progress=True)  # a cold cache takes minutes: show it
        except Exception as e:  # noqa: BLE001 - the trial reports it as its error
            print(
                f"[sweep] feature cache not prepared for encoder={cfg.encoder!r} "
                f"corpus={cfg.corpus!r}: {str(e).splitlines()[0] if str(e) else e!r}",
                flush=True,
            )
    return time.perf_counter() - t


def sweep_baseline(sweep: Sweep) -> tuple[dict[str, float], dict[str, Any]] | None:
    """The zero-shot encoder's validation and test metrics and its per-query ranks, when every trial
    shares one frozen encoder setup (its pooled feature cache is then warm: seconds) and the ks and
    machine it is scored with; else None."""
    keys = ("corpus", "ks", *fields_with(CACHE), *fields_with(MACHINE))
    cfgs = [Config.from_dict(dict(c)) for c in concrete_configs(sweep)]
    if not cfgs or cfgs[0].finetune != "none" or len({tuple(repr(getattr(c, k)) for k in keys) for c in cfgs}) > 1:
        return None
    try:
        return zero_shot_metrics(cfgs[0], with_ranks=True)
    except (OSError, ValueError, RuntimeError) as e:  # the trials report such errors; say why here
        print(f"[sweep] no zero-shot baseline: {str(e).splitlines()[0] if str(e) else e!r}", flush=True)
        return None


def feature_configs(sweep: Sweep) -> list[dict[str, Any]]:
    """The configs whose feature caches a sweep warms: :func:`concrete_configs`, and for a search one
    per combination of the values its choices and grids give the feature fields (a search over
    ``finetune`` none/top:1 builds both caches here, with a progress bar, not inside a trial)."""
    out = concrete_configs(sweep)
    if sweep.variants is not None:
        return out
    options = {}
    for k, v in (sweep.param_space or {}).items():
        values = v["grid_search"] if isinstance(v, dict) and "grid_search" in v else getattr(v, "categories", None)
        if k in FEATURE_FIELDS and values is not None:
            options[k] = list(values)
    return [{**out[0], **dict(zip(options, combo))} for combo in itertools.product(*options.values())]


def concrete_configs(sweep: Sweep) -> list[dict[str, Any]]:
    """Each trial's flat config: the shared base plus its variant (a grid), or the base plus the
    constant fields of a Tune param space (a search: one representative config)."""
    if sweep.variants is not None:
        return [{**sweep.base, **v} for v in sweep.variants]
    fixed = {k: v for k, v in (sweep.param_space or {}).items() if isinstance(v, (str, int, float, bool, type(None)))}
    return [{**sweep.base, **fixed}]
