"""Search spaces (counterarg.sweep.spaces): named strategies, grids of flat configs, the searcher."""

from __future__ import annotations

import pytest

from counterarg.config import FIELD_NAMES, REFERENCE_METHOD, Config, ConfigError
from counterarg.schedules import SCHEDULES
from counterarg.sweep.runner import Sweep
from counterarg.sweep.spaces import (REFERENCE_FIELDS, VariantSearcher, grid, margin_lr_space, parse_strategy, strategy,
                                     strategy_grid)


def test_default_grid_is_flat_config_fields():
    variants = strategy_grid()
    assert len(variants) == 12  # the reference three and the default recipe, x 3 seeds
    for v in variants:
        assert set(v) <= set(FIELD_NAMES)
        Config.from_dict(v)
    schedules = sorted({v["schedule"] for v in variants})
    assert schedules == ["decay", "fixed", "random"]
    assert {v["seed"] for v in variants} == {0, 1, 2}
    decay = next(v for v in variants if v["schedule"] == "decay")
    assert decay["rate_start"] == 0.8 and decay["rate_step"] == 0.02
    assert sorted({v["rate"] for v in variants if v["schedule"] == "fixed"}) == [0.0, 0.8]  # recipe, reference
    assert {v["loss"] for v in variants} == {Config().loss, REFERENCE_METHOD["loss"]}


def test_strategy_parsing_and_errors():
    ref = {k: (list(v) if isinstance(v, tuple) else v) for k, v in REFERENCE_FIELDS.items()}
    assert ref["loss"] == REFERENCE_METHOD["loss"] and "schedule" not in ref and "epochs" not in ref
    assert parse_strategy("fixed:rate=0.5") == {**ref, "schedule": "fixed", "rate": 0.5}
    assert parse_strategy("random") == {**ref, "schedule": "random"}  # the schedules train the reference method
    recipe = parse_strategy("recipe")  # the default recipe: the same fields at their Config defaults
    defaults = Config().to_dict()
    assert set(ref) <= set(recipe) and all(recipe[k] == defaults[k] for k in recipe)
    assert recipe["schedule"] == defaults["schedule"] and recipe["loss"] == defaults["loss"]
    with pytest.raises(ConfigError):
        strategy("nope")
    with pytest.raises(ConfigError):
        parse_strategy("fixed:rat=0.5")  # typo fails loudly
    with pytest.raises(ValueError, match="more than one"):
        grid([{"seed": 1}], {"seed": [0, 1]})
    with pytest.raises(ConfigError):
        Sweep(name="x", base={"strategy": "fixed"}, variants=[{}])
    assert set(SCHEDULES) >= {"fixed", "decay", "random", "cosine", "step", "table"}
    assert parse_strategy("table:rate_table=0.8,0.6,0.4") == {**ref, "schedule": "table", "rate_table": [0.8, 0.6, 0.4]}
    space = margin_lr_space("fixed", seeds=(0, 1))
    assert set(space) <= set(FIELD_NAMES) and "margin" in space and "lr" in space
    assert space["seed"] == {"grid_search": [0, 1]} and space["schedule"] == "fixed"


@pytest.mark.parametrize("field, lo, hi", [("margin", 0.1, 3.0), ("lr", 1e-4, 1e-2)])
def test_margin_lr_space_draws_log_uniformly_inside_the_bounds(field, lo, hi):
    """Each trial of the ASHA search draws its own value: inside [lo, hi], spread evenly in log."""
    import numpy as np

    domain = margin_lr_space("fixed", **{field: (lo, hi)})[field]
    draws = np.asarray(domain.sample(size=2000, random_state=np.random.default_rng(0)))  # seeded: no flake
    assert lo <= draws.min() and draws.max() <= hi and len(set(draws)) > 1900
    quartiles = np.quantile(np.log(draws), [0.25, 0.5, 0.75])  # log-uniform: evenly spaced in log
    assert quartiles == pytest.approx(np.log(lo) + (np.log(hi) - np.log(lo)) * np.array([0.25, 0.5, 0.75]), abs=0.15)


def test_variant_searcher_saves_position(tmp_path):
    s = VariantSearcher([{"seed": 0}, {"seed": 1}, {"seed": 2}])
    assert s.suggest("t1") == {"seed": 0}
    s.save(str(tmp_path / "state.json"))
    s2 = VariantSearcher([])
    s2.restore(str(tmp_path / "state.json"))
    assert s2.suggest("t2") == {"seed": 1} and s2.suggest("t3") == {"seed": 2}
    assert s2.suggest("t4") == VariantSearcher.FINISHED
