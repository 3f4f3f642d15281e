"""TensorBoard for a sweep's trials: per-epoch curves under the metrics' own names and the HParams rows.

Ray 2.60 adds its ``TBXLoggerCallback`` to every Tuner unless one is given; ours
(:class:`SweepTBXLogger`, a subclass, so Tune adds no second one) replaces what it writes:

* **Curves**: every metric a trial reports (``validation_unseen/sdoc/acc@1``, ``train/loss``,
  ``mining/...``) per epoch under its own name (``validation_unseen/sdoc/acc_1``: TensorBoard tags
  cannot hold ``@``), not under Tune's ``ray/tune/`` prefix, and none of Tune's bookkeeping
  (``training_iteration``, ``pid``, ``done``...); and, at each epoch the trial selects (its best so
  far by the sweep metric), the values the HParams table shows (``selected/...``).
* **HParams** (:mod:`counterarg.sweep.hparams_table`): when a trial starts, the sweep's experiment
  (the columns, the same in every trial, so which trial TensorBoard reads first does not matter);
  when Tune ends it, its row (method, strategy, seed, ... and ``ended``: how it ended,
  :mod:`counterarg.analysis.endings`) with status success. Only a finished seed gets a row:
  TensorBoard keeps a run's first row, and a trial that errored or was interrupted goes on under
  ``--resume`` (a Ctrl-C ends no trial in Tune's eyes). Nothing is written at the experiment's
  root, so TensorBoard shows no ``.`` run.

The sweep's own runs (one per strategy, margin charts) are written when it ends
(:mod:`counterarg.sweep.strategy_runs`). Events land under ``<storage>/<name>``, which is what
``tensorboard --logdir`` should point at (Tune's own hint names a temp folder).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ray.tune.logger import TBXLoggerCallback

from ..analysis.endings import BEST_EPOCH_KEY, is_finished, trial_ending
from ..analysis.trials import DEFAULT_METRIC, DEFAULT_MODE, dedupe_history
from ..evaluation.selection import beats
from .hparams_table import (
    column_values,
    experiment_summary,
    metric_keys,
    selected_tag,
    session_end_summary,
    session_start_summary,
    table_columns,
    tag_of,
)


def epoch_scalars(result: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of one reported epoch as ``{tag: value}``: every finite number whose key names a
    metric (``<group>/<name>``); Tune's own keys (no ``/``) are left out."""
    return {
        tag_of(k): float(v)
        for k, v in result.items()
        if "/" in k and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


class SweepTBXLogger(TBXLoggerCallback):
    """Tune's TensorBoardX logger, writing the sweep's curves and HParams rows (module docstring).

    ``configs``: the sweep's trial configs as known up front; ``fields``: the searched or varying
    fields that get a column after method, strategy, seed and the schedule's fields.
    """

    def __init__(
        self,
        fields: Sequence[str] = (),
        metric: str = DEFAULT_METRIC,
        mode: str = DEFAULT_MODE,
        configs: Sequence[Mapping[str, Any]] = (),
    ):
        super().__init__()
        self.configs = [dict(c) for c in configs]
        self.columns = table_columns(self.configs, fields)
        self.metric, self.mode = metric, mode
        self._best: dict[Any, float] = {}
        self._rows: dict[Any, list[dict[str, Any]]] = {}  # per trial: epoch, metric, best epoch of each result

    def row_of(self, config: Mapping[str, Any], ended: str) -> dict[str, Any]:
        """A trial's HParams values, by column name."""
        return column_values(self.columns, {**config, "ended": ended})

    def log_trial_start(self, trial):
        super().log_trial_start(trial)
        writer = self._trial_writer[trial]
        try:
            writer.file_writer.add_summary(experiment_summary(self.columns, self.metric))
            writer.flush()
        except (ValueError, TypeError) as e:  # TensorBoard must not fail a sweep; say why
            print(f"[sweep] the HParams columns were not written for trial {trial.trial_id}: {e}", flush=True)

    def log_trial_result(self, iteration: int, trial, result: dict):
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        writer = self._trial_writer[trial]
        step = int(result.get("epoch") or result.get("training_iteration") or iteration)
        for tag, v in epoch_scalars(result).items():
            writer.add_scalar(tag, v, global_step=step)
        if self.is_selected(trial, result, step):
            for k in metric_keys(self.metric):
                if isinstance(result.get(k), (int, float)) and math.isfinite(result[k]):
                    writer.add_scalar(selected_tag(k), float(result[k]), global_step=step)
        writer.flush()
        self._rows.setdefault(trial, []).append({k: result.get(k) for k in ("epoch", self.metric, BEST_EPOCH_KEY)})

    def is_selected(self, trial, result: Mapping[str, Any], epoch: int) -> bool:
        """Whether this epoch is the trial's selected one so far: the trainable's own
        ``select/best_epoch`` (restored with the trial on a resume, so the last ``selected/`` values
        stay those of the selected epoch), else the best ``metric`` this logger has seen."""
        best_epoch = result.get(BEST_EPOCH_KEY)
        if isinstance(best_epoch, (int, float)) and not isinstance(best_epoch, bool):
            return int(best_epoch) == epoch
        v = result.get(self.metric)
        if isinstance(v, (int, float)) and math.isfinite(v) and beats(v, self._best.get(trial), self.mode):
            self._best[trial] = float(v)
            return True
        return False

    def ending(self, trial, failed: bool = False) -> str:
        """How ``trial`` ended (:func:`counterarg.analysis.endings.trial_ending`) from the results this
        callback saw and Tune's last one (``done`` when a scheduler stopped it)."""
        last = getattr(trial, "last_result", None) or {}
        return trial_ending(
            dict(trial.config), dedupe_history(self._rows.get(trial, [])), error=failed, done=bool(last.get("done"))
        )

    def log_trial_end(self, trial, failed: bool = False):
        ended = self.ending(trial, failed)
        if trial in self._trial_writer and is_finished(ended):
            writer = self._trial_writer[trial]
            try:
                writer.file_writer.add_summary(
                    session_start_summary(self.row_of(dict(trial.config), ended), str(trial.trial_id))
                )
                writer.file_writer.add_summary(session_end_summary())
                writer.flush()
            except (ValueError, TypeError) as e:  # TensorBoard must not fail a sweep; say why
                print(f"[sweep] HParams of trial {trial.trial_id} not written: {e}", flush=True)
        self._best.pop(trial, None)
        self._rows.pop(trial, None)
        if trial in self._trial_writer:
            self._trial_writer.pop(trial).close()
        self._trial_result.pop(trial, None)
