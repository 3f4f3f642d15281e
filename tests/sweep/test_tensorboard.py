"""The HParams TensorBoard logger (counterarg.sweep.tensorboard) on a hand-made trial; the events a
real sweep writes are checked in test_runner.py."""

from __future__ import annotations

from types import SimpleNamespace

from counterarg.analysis.methods import labelled
from counterarg.sweep.tensorboard import HParamsTBXLogger


def test_hparams_name_the_strategy_and_the_fields_its_schedule_reads():
    logger = HParamsTBXLogger(["schedule", "rate", "margin", "seed", "device"])
    trial = SimpleNamespace(config=labelled({"schedule": "fixed", "rate": 0.5, "margin": 0.3, "seed": 1,
                                             "device": "cpu"}, "recipe"), evaluated_params={})
    params = logger.hparams_of(trial)
    assert params["strategy"] == "recipe: fixed 0.5" and params["schedule"] == "fixed" and params["rate"] == 0.5
    assert params["margin"] == 0.3 and params["seed"] == 1  # varying fields; seed kept to tell repeats apart
    assert "device" not in params and "rate_start" not in params  # placement, and fields fixed does not read
    best = {"epoch": 3.0, "validation/mean/acc@1": 0.4, "test_unseen/sdoc/acc@1": 0.2, "train/loss": 1.0,
            "validation/mean/mrr": 0.5}
    assert HParamsTBXLogger.best_metrics(best) == {"best/validation/mean/acc_1": 0.4,
                                                   "best/test_unseen/sdoc/acc_1": 0.2}


class _Trial:
    """What the logger reads of a Tune trial (hashable, as Tune's are)."""

    def __init__(self, root, trial_id: str, config: dict):
        self.trial_id, self.config, self.evaluated_params = trial_id, config, {}
        self.local_experiment_path = str(root)
        self.local_path = str(root / f"trial_{trial_id}")

    def init_local_path(self):
        import os

        os.makedirs(self.local_path, exist_ok=True)


def _hparams_data(folder) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(raw)
            for tag, raw in acc.PluginTagToContent("hparams").items()}


def test_one_experiment_summary_for_the_whole_sweep(tmp_path):
    """Issue 23.8: each trial wrote its own `_hparams_/experiment` with its own field list, so the
    HParams columns depended on which trial TensorBoard read first (`rate` but no `rate_start`).
    Now the experiment root holds one summary with the union; trials write only their sessions."""
    configs = [{"schedule": "fixed", "rate": 0.8, "seed": 0}, {"schedule": "decay", "rate_start": 0.8,
                                                               "rate_step": 0.02, "seed": 0},
               {"schedule": "fixed", "rate": 0.0, "seed": 1}]
    logger = HParamsTBXLogger(["schedule", "rate", "rate_start", "rate_step", "seed"], configs=configs)
    trials = [_Trial(tmp_path, f"t{i}", c) for i, c in enumerate(configs)]
    for t in trials:  # the decay trial starts after a fixed one, as in the issue
        logger.log_trial_start(t)
        logger.log_trial_result(1, t, {"training_iteration": 1, "epoch": 1, "validation_unseen/mean/acc@1": 0.4,
                                       "test/mean/acc@1": 0.3})
        logger.log_trial_end(t)
    root = _hparams_data(tmp_path)
    exp = root["_hparams_/experiment"].experiment
    columns = {h.name for h in exp.hparam_infos}
    assert {"strategy", "schedule", "rate", "rate_start", "rate_step", "rate_floor", "seed"} <= columns
    assert {"best/test/mean/acc_1", "best/validation_unseen/sdoc/acc_1"} <= {m.name.tag for m in exp.metric_infos}
    for t in trials:
        data = _hparams_data(t.local_path)
        assert "_hparams_/experiment" not in data, t.trial_id  # the sweep's summary is the only one
        session = data["_hparams_/session_start_info"].session_start_info
        assert set(session.hparams) <= columns
        assert session.hparams["strategy"].string_value == HParamsTBXLogger().hparams_of(t)["strategy"]
    decay = _hparams_data(trials[1].local_path)["_hparams_/session_start_info"].session_start_info
    assert decay.hparams["rate_start"].number_value == 0.8 and "rate" not in decay.hparams
