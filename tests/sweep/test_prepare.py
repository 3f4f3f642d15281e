"""What a sweep driver prepares (counterarg.sweep.prepare): trial configs and the zero-shot baseline."""

from __future__ import annotations

from types import SimpleNamespace as NS

from counterarg.sweep.prepare import concrete_configs, feature_configs, sweep_baseline


def test_concrete_configs_are_the_base_plus_each_variant_or_the_constant_space():
    grid = NS(base={"epochs": 3}, variants=[{"seed": 0}, {"seed": 1, "epochs": 4}], param_space=None)
    assert concrete_configs(grid) == [{"epochs": 3, "seed": 0}, {"epochs": 4, "seed": 1}]
    search = NS(base={"epochs": 3}, variants=None, param_space={"lr": object(), "rate": 0.5})
    assert concrete_configs(search) == [{"epochs": 3, "rate": 0.5}]  # a sampled domain is no constant


def test_a_search_warms_one_feature_cache_per_drawn_finetune_and_max_length():
    from ray import tune

    search = NS(
        base={"epochs": 3},
        variants=None,
        param_space={
            "finetune": tune.choice(["none", "top:1"]),
            "max_length": tune.grid_search([64, 128]),
            "lr": tune.loguniform(1e-4, 1e-3),
            "head": tune.choice(["identity", "residual"]),
        },
    )
    got = feature_configs(search)
    assert sorted((c["finetune"], c["max_length"]) for c in got) == [
        ("none", 64),
        ("none", 128),
        ("top:1", 64),
        ("top:1", 128),
    ]
    assert all(c["epochs"] == 3 and "head" not in c for c in got)  # only the fields that change the features
    grid = NS(base={}, variants=[{"finetune": "none"}, {"finetune": "all"}], param_space=None)
    assert feature_configs(grid) == concrete_configs(grid)


def test_no_baseline_where_trials_do_not_share_one_frozen_encoder(capsys):
    mixed = NS(base={}, variants=[{"finetune": "none"}, {"finetune": "top:1"}], param_space=None)
    assert sweep_baseline(mixed) is None
    tuned = NS(base={"finetune": "all"}, variants=[{}], param_space=None)
    assert sweep_baseline(tuned) is None
    missing = NS(base={"encoder": "/no/such/encoder", "finetune": "none"}, variants=[{}], param_space=None)
    assert sweep_baseline(missing) is None and "no zero-shot baseline" in capsys.readouterr().out
