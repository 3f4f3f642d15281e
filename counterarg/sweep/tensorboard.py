"""TensorBoard for a sweep: Tune's per-epoch scalars plus an HParams table that compares strategies.

Ray 2.60 adds ``TBXLoggerCallback`` automatically, but it writes HParams only for Tune-*sampled*
values (``trial.evaluated_params``) and only at trial end; ours (:class:`HParamsTBXLogger`) logs
the varying Config fields plus the strategy name as HParams, so the HParams tab can compare
strategies. As TensorBoard's HParams docs describe, the sweep has *one* experiment summary (its
columns: the union of every trial's fields and the best-epoch metrics) at the root of the
experiment folder, and each trial writes only its session (its own values and status): with one
summary per trial, the columns depended on which trial TensorBoard read first. Events land under
``<storage>/<name>``, which is what ``tensorboard --logdir`` should point at (Tune's own hint names
a temp folder).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from ray.tune.logger import TBXLoggerCallback
from tensorboardX.summary import hparams

from ..sampling import schedules
from ..config import SCHEDULE, Config, fields_with
from ..evaluation.selection import beats
from ..retrieval.tasks import task_names
from ..analysis.endings import BEST_EPOCH_KEY, is_finished, trial_ending
from ..analysis.methods import trial_label
from ..analysis.trials import DEFAULT_METRIC, DEFAULT_MODE, NON_GROUP_FIELDS, dedupe_history

#: The splits and views whose acc@1 at the best epoch are HParams metrics.
METRIC_SPLITS = ("validation", "validation_unseen", "test", "test_unseen")


class HParamsTBXLogger(TBXLoggerCallback):
    """Tune's TensorBoardX logger, with an HParams table that compares trials.

    Per-epoch scalars are Tune's (``ray/tune/<metric>``, every task metric, both views). When a
    trial ends, its HParams row is written: the strategy, the fields its schedule reads and the
    other fields that vary across the sweep; and, as metrics, the validation and test acc@1 (mean
    and per task, both views) *at the trial's best epoch* by the sweep metric, logged as scalars
    ``best/<split>/<task>/acc_1`` (TensorBoard tags cannot hold ``@``) so the HParams tab can show them.
    Two more columns say how the trial ended (:mod:`counterarg.analysis.endings`): ``finished`` (a
    finished seed: planned epochs, patience or ASHA) and ``ended``. A trial a Ctrl-C stopped writes
    no row (Tune does not end it); its row comes when ``--resume`` completes it.
    """

    def __init__(self, hparam_fields: Sequence[str] = (), metric: str = DEFAULT_METRIC, mode: str = DEFAULT_MODE,
                 configs: Sequence[dict[str, Any]] = ()):
        super().__init__()
        self.hparam_fields = list(hparam_fields)
        self.configs = [dict(c) for c in configs]  # the sweep's trial configs as known up front
        self.metric, self.mode = metric, mode
        self._best: dict[Any, dict[str, float]] = {}
        self._rows: dict[Any, list[dict[str, Any]]] = {}  # per trial: epoch, metric, best epoch of each result
        self._experiment_written = False

    def experiment_hparams(self) -> dict[str, Any]:
        """The HParams columns of the whole sweep with a value of each one's type: the union of
        :meth:`hparams_of_config` over the sweep's configs (a searched field adds its column too)."""
        union: dict[str, Any] = {}
        for cfg in self.configs or [{}]:
            for k, v in self.hparams_of_config(cfg).items():
                union.setdefault(k, v)
        return {**union, "finished": True, "ended": "epochs"}

    @staticmethod
    def experiment_metrics() -> dict[str, float]:
        """Every best-epoch metric a trial may log (:meth:`best_metrics`), as HParams metric columns."""
        return {f"best/{split}/{t}/acc_1": 0.0 for split in METRIC_SPLITS for t in (*task_names(), "mean")}

    def write_experiment(self, folder: str) -> None:
        """The sweep's one experiment summary, in ``folder`` (the experiment's root, synced to storage)."""
        exp, _, _ = hparams(hparam_dict=self.experiment_hparams(), metric_dict=self.experiment_metrics())
        writer = self._summary_writer_cls(folder, flush_secs=30)
        try:
            writer.file_writer.add_summary(exp)
            writer.flush()
        finally:
            writer.close()

    def log_trial_start(self, trial):
        super().log_trial_start(trial)
        if not self._experiment_written:
            self._experiment_written = True
            try:
                self.write_experiment(trial.local_experiment_path)
            except (ValueError, TypeError, OSError) as e:  # TensorBoard must not fail a sweep; say why
                print(f"[sweep] the HParams experiment summary was not written: {e}", flush=True)

    def log_trial_result(self, iteration: int, trial, result: dict):
        super().log_trial_result(iteration, trial, result)
        self._rows.setdefault(trial, []).append({k: result.get(k) for k in ("epoch", self.metric, BEST_EPOCH_KEY)})
        v = result.get(self.metric)
        best = self._best.get(trial, {}).get(self.metric)
        if isinstance(v, (int, float)) and math.isfinite(v) and beats(v, best, self.mode):
            self._best[trial] = {k: float(x) for k, x in result.items() if isinstance(x, (int, float))
                                 and not isinstance(x, bool)}

    def hparams_of(self, trial) -> dict[str, Any]:
        """The trial's one name (``recipe: decay 0.8-0.02``), the fields its schedule reads, and the other varying fields of ``trial``."""
        return self.hparams_of_config(dict(trial.config), trial.evaluated_params)

    def hparams_of_config(self, config: dict[str, Any], evaluated: dict | None = None) -> dict[str, Any]:
        """:meth:`hparams_of` for a config (``evaluated``: Tune's sampled values, when no field list was given)."""
        cfg = Config.from_dict(config).to_dict()
        params: dict[str, Any] = {"strategy": trial_label(cfg), "schedule": cfg["schedule"]}
        entry = schedules.SCHEDULES.get(cfg["schedule"])
        for k in entry.fields if entry else ():
            params[k] = cfg[k] if isinstance(cfg[k], (str, bool, int, float)) else str(cfg[k])
        strategy_fields = fields_with(SCHEDULE)
        for k in self.hparam_fields or sorted(evaluated or {}):
            if k in strategy_fields or k in NON_GROUP_FIELDS - {"seed"}:
                continue  # rate fields only where the schedule reads them
            v = cfg.get(k)
            params[k] = v if isinstance(v, (str, bool, int, float)) else str(v)
        return params

    @staticmethod
    def best_metrics(best: dict[str, float]) -> dict[str, float]:
        """acc@1 of both splits and views at the best epoch, as ``best/<split>/<task>/acc_1``."""
        return {"best/" + k.replace("@", "_"): v for k, v in best.items()
                if k.startswith(("validation", "test")) and k.endswith("/acc@1")}

    def ending(self, trial, failed: bool = False) -> str:
        """How ``trial`` ended (:func:`counterarg.analysis.endings.trial_ending`) from the results this
        callback saw and Tune's last one (``done`` when a scheduler stopped it)."""
        last = getattr(trial, "last_result", None) or {}
        return trial_ending(dict(trial.config), dedupe_history(self._rows.get(trial, [])), error=failed,
                            done=bool(last.get("done")))

    def _log_hparams(self, trial, failed: bool = False) -> None:
        metrics = self.best_metrics(self._best.get(trial, {}))
        writer = self._trial_writer[trial]
        step = int(self._best.get(trial, {}).get("epoch", 0))
        for k, v in metrics.items():
            writer.add_scalar(k, v, global_step=step)
        ended = self.ending(trial, failed)
        params = {**self.hparams_of(trial), "finished": is_finished(ended), "ended": ended}
        _, start, end = hparams(hparam_dict=params, metric_dict=metrics)
        for summary in (start, end):  # the columns are the sweep's one experiment summary
            writer.file_writer.add_summary(summary)
        writer.flush()

    def log_trial_end(self, trial, failed: bool = False):
        # Tune only logs HParams for trials with evaluated_params (search spaces); ours always do,
        # with the best epoch's metrics instead of the last result.
        if trial in self._trial_writer and self._best.get(trial):
            try:
                self._log_hparams(trial, failed)
            except (ValueError, TypeError, OSError) as e:  # TensorBoard must not fail a sweep; say why
                print(f"[sweep] HParams of trial {trial.trial_id} not written: {e}", flush=True)
        self._best.pop(trial, None)
        self._rows.pop(trial, None)
        evaluated, trial.evaluated_params = trial.evaluated_params, {}  # ours replaced Tune's
        try:
            super().log_trial_end(trial, failed)
        finally:
            trial.evaluated_params = evaluated
