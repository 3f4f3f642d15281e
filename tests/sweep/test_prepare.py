"""What a sweep driver prepares (counterarg.sweep.prepare): trial configs and the zero-shot baseline."""

from __future__ import annotations

from types import SimpleNamespace as NS

from counterarg.sweep.prepare import concrete_configs, sweep_baseline


def test_concrete_configs_are_the_base_plus_each_variant_or_the_constant_space():
    grid = NS(base={"epochs": 3}, variants=[{"seed": 0}, {"seed": 1, "epochs": 4}], param_space=None)
    assert concrete_configs(grid) == [{"epochs": 3, "seed": 0}, {"epochs": 4, "seed": 1}]
    search = NS(base={"epochs": 3}, variants=None, param_space={"lr": object(), "rate": 0.5})
    assert concrete_configs(search) == [{"epochs": 3, "rate": 0.5}]  # a sampled domain is no constant


def test_no_baseline_where_trials_do_not_share_one_frozen_encoder(capsys):
    mixed = NS(base={}, variants=[{"finetune": "none"}, {"finetune": "top:1"}], param_space=None)
    assert sweep_baseline(mixed) is None
    tuned = NS(base={"finetune": "all"}, variants=[{}], param_space=None)
    assert sweep_baseline(tuned) is None
    missing = NS(base={"encoder": "/no/such/encoder"}, variants=[{}], param_space=None)
    assert sweep_baseline(missing) is None and "no zero-shot baseline" in capsys.readouterr().out
