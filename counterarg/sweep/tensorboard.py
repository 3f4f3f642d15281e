"""TensorBoard for a sweep's trials: per-epoch curves under the metrics' own names and the HParams rows.

Ray 2.60 adds its ``TBXLoggerCallback`` to every Tuner unless one is given; ours
(:class:`SweepTBXLogger`, a subclass, so Tune adds no second one) replaces what it writes:

* **Curves**: every metric a trial reports (``validation_unseen/sdoc/acc@1``, ``train/loss``,
  ``mining/...``) per epoch under its own name (``validation_unseen/sdoc/acc_1``: TensorBoard tags
  cannot hold ``@``), not under Tune's ``ray/tune/`` prefix, and none of Tune's bookkeeping
  (``training_iteration``, ``pid``, ``done``...).
* **HParams** (:mod:`counterarg.sweep.hparams_table`): when a trial starts, the sweep's experiment
  (the columns, the same for every trial, so which trial TensorBoard reads first does not matter)
  and the trial's row; every epoch, the values at the trial's selected epoch so far
  (``selected/...``), which the table shows as its metrics while the sweep runs. Nothing is
  written at the experiment's root, so TensorBoard shows no ``.`` run.

The sweep's own runs (one per strategy, margin charts) are written when it ends
(:mod:`counterarg.sweep.strategy_runs`). Events land under ``<storage>/<name>``, which is what
``tensorboard --logdir`` should point at (Tune's own hint names a temp folder).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ray.tune.logger import TBXLoggerCallback

from ..evaluation.selection import beats
from .hparams_table import (column_values, experiment_summary, metric_keys, selected_tag, session_start_summary,
                            table_columns, tag_of)
from .trials import DEFAULT_METRIC, DEFAULT_MODE, varying_fields


def epoch_scalars(result: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of one reported epoch as ``{tag: value}``: every finite number whose key names a
    metric (``<group>/<name>``); Tune's own keys (no ``/``) are left out."""
    return {tag_of(k): float(v) for k, v in result.items()
            if "/" in k and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class SweepTBXLogger(TBXLoggerCallback):
    """Tune's TensorBoardX logger, writing the sweep's curves and HParams rows (module docstring).

    ``configs``: the sweep's trial configs as known up front; ``fields``: the searched or varying
    fields that get a column after method, strategy, seed and the schedule's fields.
    """

    def __init__(self, fields: Sequence[str] = (), metric: str = DEFAULT_METRIC, mode: str = DEFAULT_MODE,
                 configs: Sequence[Mapping[str, Any]] = ()):
        super().__init__()
        self.configs = [dict(c) for c in configs]
        self.columns = table_columns(self.configs, fields)
        self.varying = sorted(set(varying_fields(self.configs)) | set(fields))  # the summary's groups vary these
        self.metric, self.mode = metric, mode
        self._best: dict[Any, float] = {}

    def row_of(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's HParams values, by column name."""
        return column_values(self.columns, config, self.varying)

    def log_trial_start(self, trial):
        super().log_trial_start(trial)
        writer = self._trial_writer[trial]
        try:
            writer.file_writer.add_summary(experiment_summary(self.columns, self.metric))
            writer.file_writer.add_summary(session_start_summary(self.row_of(dict(trial.config)), str(trial.trial_id)))
            writer.flush()
        except (ValueError, TypeError, KeyError) as e:  # TensorBoard must not fail a sweep; say why
            print(f"[sweep] HParams of trial {trial.trial_id} not written: {e}", flush=True)

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

    def is_selected(self, trial, result: Mapping[str, Any], epoch: int) -> bool:
        """Whether this epoch is the trial's selected one so far: the trainable's own
        ``select/best_epoch`` (restored with the trial on a resume, so the last ``selected/`` values
        stay those of the selected epoch), else the best ``metric`` this logger has seen."""
        best_epoch = result.get("select/best_epoch")
        if isinstance(best_epoch, (int, float)) and not isinstance(best_epoch, bool):
            return int(best_epoch) == epoch
        v = result.get(self.metric)
        if isinstance(v, (int, float)) and math.isfinite(v) and beats(v, self._best.get(trial), self.mode):
            self._best[trial] = float(v)
            return True
        return False

    def log_trial_end(self, trial, failed: bool = False):
        self._best.pop(trial, None)
        if trial in self._trial_writer:
            self._trial_writer.pop(trial).close()
        self._trial_result.pop(trial, None)
