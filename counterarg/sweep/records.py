"""A finished (or interrupted) sweep as plain data: Tune's ``ResultGrid`` -> :class:`TrialRecord` list.

Per trial: its full Config, its per-epoch rows (each epoch once: a resumed trial may report an
epoch twice), how it ended (:mod:`counterarg.analysis.endings`: Tune calls a trial a Ctrl-C stopped
TERMINATED too; its rows say it is unfinished), its status and short error, the per-query ranks of
its best epoch and where that epoch's state is kept in storage. The summary
(:mod:`counterarg.analysis.summary`) reads only these records.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..analysis.endings import is_finished, trial_ending
from ..analysis.trials import DEFAULT_METRIC, DEFAULT_MODE, TrialRecord, dedupe_history
from ..config import Config, ConfigError
from ..evaluation.selection import BEST_DIR, BestRanks, best_row, parse_best_ranks
from ..model.checkpoint import checkpoint_index
from ..ray_internals import result_grid_trials
from .failures import read_restores


def read_trial_ranks(result) -> dict[str, Any] | None:
    """The per-query ranks of a trial's best epoch (``selection.BestRanks``) from its latest checkpoint
    in storage, on any pyarrow filesystem; None when the trial has none (errored before an epoch) or
    when its file cannot be used (cut short, damaged: a warning; the summary goes on without it)."""
    ckpts = [c for c, _ in (getattr(result, "best_checkpoints", None) or [])]
    if getattr(result, "checkpoint", None) is not None:
        ckpts.append(result.checkpoint)
    ckpts.sort(key=lambda c: checkpoint_index(str(c.path)) or -1, reverse=True)
    for ckpt in ckpts:
        fs = ckpt.filesystem
        where = f"{str(ckpt.path).rstrip('/')}/{BestRanks.FILE}"
        try:
            with fs.open_input_stream(where) as f:
                data = f.read()
        except (OSError, ValueError) as e:
            print(f"[sweep] no per-query ranks in {ckpt.path}: {e}", flush=True)
            continue
        return parse_best_ranks(data, f"of trial {Path(str(result.path)).name} ({where})")
    return None


def _uri(fs, path: str) -> str:
    """A storage location as a user passes it: a local path, or ``scheme://path``."""
    kind = getattr(fs, "type_name", "local") if fs is not None else "local"
    return str(path) if kind == "local" else f"{kind}://{path}"


def best_checkpoint(result, epoch: int | None) -> str | None:
    """Where the state of ``epoch`` (a trial's best) is kept in storage: the trial's mirrored
    ``best/`` folder when it holds that epoch, else one of Tune's checkpoints of that epoch."""
    if epoch is None:
        return None
    fs, path = getattr(result, "filesystem", None), getattr(result, "path", None)
    if fs is not None and path:
        best = f"{str(path).rstrip('/')}/{BEST_DIR}"
        try:
            with fs.open_input_stream(f"{best}/manifest.json") as f:
                if int(json.loads(f.read().decode("utf-8")).get("epoch", -1)) == int(epoch):
                    return _uri(fs, best)
        except (OSError, ValueError):
            pass
    for ckpt, metrics in getattr(result, "best_checkpoints", None) or []:
        if int((metrics or {}).get("epoch", -1)) == int(epoch):
            return _uri(ckpt.filesystem, ckpt.path)
    return None


def _short_error(err: Any) -> str:
    text = str(err).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "Exception" in ln:
            return ln[:500]
    return (lines[-1] if lines else repr(err))[:500]


def trial_id_of(folder: str, ids) -> str:
    """The Tune trial id a trial folder ``trial_<id>[_<name>_seed<N>]`` (:func:`~counterarg.sweep.tuner.trial_dirname`)
    names, among the sweep's ``ids``; a search's or PBT's ids hold an underscore themselves
    (``42b21_00000``), so the longest id the name starts with is it. "" for no known id."""
    found = [i for i in ids if folder == f"trial_{i}" or folder.startswith(f"trial_{i}_")]
    return max(found, key=len, default="")


def collect_records(
    result_grid, metric: str = DEFAULT_METRIC, mode: str = DEFAULT_MODE, base: Mapping[str, Any] | None = None
) -> list[TrialRecord]:
    """ResultGrid -> TrialRecord list (full Config dicts, per-epoch rows, how each ended, status,
    error, where the best epoch's checkpoint is kept). ``base`` (the sweep's shared fields) fills the config of a
    trial that never started, whose config Tune holds without them."""
    # a trial that never started has no result config; Tune's own trial list still holds it
    trials = result_grid_trials(result_grid)
    planned = {str(t.trial_id): dict(t.config or {}) for t in trials}
    tune_status = {str(t.trial_id): str(getattr(t, "status", "")) for t in trials}
    records = []
    for res in result_grid:
        name = Path(str(res.path)).name
        tid = trial_id_of(name, planned)
        metrics = dict(res.metrics or {})  # Tune's last result of the trial; Result.config is its "config"
        foreign = bool(tid) and metrics.get("trial_id") not in (None, tid)
        if foreign:  # at a Ctrl-C, a trial just handed a finished trial's reused actor holds that
            metrics = {}  # trial's last result (its config, its id), not one of its own
        own = ({} if foreign else dict(res.config or {})) or planned.get(tid, {})
        cfg = {**dict(base or {}), **own}
        try:
            full = Config.from_dict(cfg).to_dict()
        except ConfigError:
            full = cfg
        history: list[dict[str, Any]] = []
        df = res.metrics_dataframe
        if df is not None and len(df):
            rows = [
                {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                for row in df.to_dict("records")
            ]
            history = dedupe_history(rows)
        trial_id = tid or metrics.get("trial_id") or name
        last = history[-1] if history else {}
        ended = trial_ending(
            full,
            history,
            error=res.error is not None,
            done=bool(metrics.get("done") or last.get("done")),
            waiting=tune_status.get(tid) in ("PAUSED", "PENDING"),
        )
        status = "ERROR" if ended == "error" else "TERMINATED" if is_finished(ended) else "UNFINISHED"
        best = best_row(history, metric, mode)
        records.append(
            TrialRecord(
                trial_id=str(trial_id),
                config=full,
                history=history,
                status=status,
                error=_short_error(res.error) if res.error else None,
                path=res.path,
                ranks=read_trial_ranks(res) if history else None,
                best_checkpoint=best_checkpoint(res, best["epoch"] if best else None),
                ended=ended,
                restores=read_restores(getattr(res, "filesystem", None), res.path),
            )
        )
    records.sort(key=lambda r: r.trial_id)
    return records
