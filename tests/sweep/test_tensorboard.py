"""The HParams TensorBoard logger (counterarg.sweep.tensorboard) on a hand-made trial; the events a
real sweep writes are checked in test_runner.py."""

from __future__ import annotations

from types import SimpleNamespace

from counterarg.sweep.tensorboard import HParamsTBXLogger


def test_hparams_name_the_strategy_and_the_fields_its_schedule_reads():
    logger = HParamsTBXLogger(["schedule", "rate", "margin", "seed", "device"])
    trial = SimpleNamespace(config={"schedule": "fixed", "rate": 0.5, "margin": 0.3, "seed": 1, "device": "cpu"},
                            evaluated_params={})
    params = logger.hparams_of(trial)
    assert params["strategy"] == "recipe: fixed 0.5" and params["schedule"] == "fixed" and params["rate"] == 0.5
    assert params["margin"] == 0.3 and params["seed"] == 1  # varying fields; seed kept to tell repeats apart
    assert "device" not in params and "rate_start" not in params  # placement, and fields fixed does not read
    best = {"epoch": 3.0, "validation/mean/acc@1": 0.4, "test_unseen/sdoc/acc@1": 0.2, "train/loss": 1.0,
            "validation/mean/mrr": 0.5}
    assert HParamsTBXLogger.best_metrics(best) == {"best/validation/mean/acc_1": 0.4,
                                                   "best/test_unseen/sdoc/acc_1": 0.2}
