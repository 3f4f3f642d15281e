"""Search spaces (counterarg.sweep.spaces): named strategies, grids of flat configs, the searcher."""

from __future__ import annotations

import pytest

from counterarg.analysis.methods import METHODS, RECIPE_TABLE
from counterarg.config import FIELD_NAMES, REFERENCE_METHOD, SCHEDULE, Config, ConfigError, fields_with
from counterarg.sampling.schedules import SCHEDULES
from counterarg.sweep.runner import Sweep
from counterarg.sweep.spaces import (
    REFERENCE_FIELDS,
    VariantSearcher,
    grid,
    margin_lr_space,
    parse_strategy,
    strategy,
    strategy_grid,
)


def _plain(fields):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()}


def test_default_grid_is_the_main_job():
    """No --strategies: the reference three under the reference method beside the recipe's five
    (its own fixed 0, fixed 0.5, decay, random, the learned table), each x 3 seeds, flat Config fields."""
    variants = strategy_grid()
    assert len(variants) == (3 + 5) * 3
    for v in variants:
        assert set(v) <= set(FIELD_NAMES)
        Config.from_dict(v)
    labels = [v["label"] for v in variants if v["seed"] == 0]
    assert labels == [
        "reference: fixed 0.8",
        "reference: decay 0.8-0.02",
        "reference: random",
        "recipe",
        "recipe: fixed 0.5",
        "recipe: decay 0.8-0.02",
        "recipe: random",
        "recipe: table 0.2*4,0.1*14,0",
    ]
    assert {v["seed"] for v in variants} == {0, 1, 2}
    by = {v["label"]: v for v in variants if v["seed"] == 0}
    ref, recipe = _plain(METHODS["reference"].fields), _plain(METHODS["recipe"].fields)
    assert ref["loss"] == REFERENCE_METHOD["loss"] and recipe["loss"] == Config().loss != ref["loss"]
    for label, v in by.items():
        method = ref if label.startswith("reference") else recipe
        assert {k: v[k] for k in method} == method, label
    assert by["recipe"]["schedule"] == "fixed" and by["recipe"]["rate"] == Config().rate == 0.0
    assert by["recipe: table 0.2*4,0.1*14,0"]["rate_table"] == list(RECIPE_TABLE)
    assert by["reference: decay 0.8-0.02"]["rate_start"] == 0.8 and by["reference: decay 0.8-0.02"]["rate_step"] == 0.02


def test_methods_cross_every_strategy():
    """Given strategies are crossed with every method (method outer); one method alone runs its own list."""
    variants = strategy_grid("fixed:rate=0;decay", seeds=(0, 1))
    assert [(v["label"], v["seed"]) for v in variants] == [
        ("reference: fixed 0", 0),
        ("reference: fixed 0", 1),
        ("reference: decay 0.8-0.02", 0),
        ("reference: decay 0.8-0.02", 1),
        ("recipe", 0),
        ("recipe", 1),
        ("recipe: decay 0.8-0.02", 0),
        ("recipe: decay 0.8-0.02", 1),
    ]
    ref, recipe = variants[2], variants[6]  # decay under each method: the same schedule, the method's fields
    assert {k: ref[k] for k in fields_with(SCHEDULE) if k in ref} == {
        k: recipe[k] for k in fields_with(SCHEDULE) if k in recipe
    }
    assert ref["loss"] == REFERENCE_METHOD["loss"] and recipe["loss"] == Config().loss
    only = strategy_grid(seeds=(0,), methods=["recipe"])  # --methods recipe alone: the recipe's main-job list
    own = [parse_strategy(s, "recipe")["label"] for s in METHODS["recipe"].strategies]
    assert [v["label"] for v in only] == own
    assert len(only) == 5 and only[0]["label"] == "recipe"
    assert [v["label"] for v in strategy_grid("random", (0,), ["recipe"])] == ["recipe: random"]


def test_strategy_parsing_and_errors():
    ref = _plain(REFERENCE_FIELDS)
    assert ref["loss"] == REFERENCE_METHOD["loss"] and "schedule" not in ref and "epochs" not in ref
    named = {"method": "reference", "label": "reference: fixed 0.5"}  # made with the strategy, carried by it
    assert parse_strategy("fixed:rate=0.5") == {**ref, "schedule": "fixed", "rate": 0.5, **named}
    assert parse_strategy("random") == {
        **ref,
        "schedule": "random",  # the reference method unless named
        "method": "reference",
        "label": "reference: random",
    }
    recipe = parse_strategy("fixed:rate=0", "recipe")  # the default recipe: the same fields at their Config defaults
    defaults = Config().to_dict()
    assert (recipe["method"], recipe["label"]) == ("recipe", "recipe")
    assert set(ref) - {"lr"} <= set(recipe) and all(recipe[k] == defaults[k] for k in recipe if k not in named)
    assert recipe["schedule"] == defaults["schedule"] and recipe["loss"] == defaults["loss"]
    with pytest.raises(ConfigError, match="unknown strategy 'nope'"):
        strategy("nope")
    with pytest.raises(ConfigError, match="'recipe' is a method, not a strategy: pass --methods recipe"):
        strategy("recipe")  # the old strategy name says where it went
    with pytest.raises(ConfigError, match="unknown method 'recipee'; did you mean 'recipe'"):
        strategy("decay", "recipee")
    with pytest.raises(ConfigError):
        parse_strategy("fixed:rat=0.5")  # typo fails loudly
    with pytest.raises(ConfigError, match="names no strategy"):
        strategy_grid(" ; ")
    with pytest.raises(ValueError, match="more than one"):
        grid([{"seed": 1}], {"seed": [0, 1]})
    with pytest.raises(ConfigError):
        Sweep(name="x", base={"strategy": "fixed"}, variants=[{}])
    assert set(SCHEDULES) >= {"fixed", "decay", "random", "cosine", "step", "table"}
    assert parse_strategy("table:rate_table=0.8,0.6,0.4") == {
        **ref,
        "schedule": "table",
        "rate_table": [0.8, 0.6, 0.4],
        "method": "reference",
        "label": "reference: table 0.8,0.6,0.4",
    }
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
