"""The methods and the one trial label (counterarg.analysis.methods): pure functions, no Ray."""

from __future__ import annotations

import pytest

from counterarg.analysis.methods import (
    DEFAULT_METHOD,
    METHODS,
    RECIPE_TABLE,
    label_of,
    labelled,
    parse_methods,
    slug,
    strategy_text,
    variant_label,
)
from counterarg.config import REFERENCE_METHOD, Config, ConfigError, method_fields


def test_the_methods_are_the_reference_fields_and_the_config_defaults():
    defaults = Config().to_dict()
    assert list(METHODS) == ["reference", "recipe"] and DEFAULT_METHOD == "recipe"
    assert dict(METHODS["reference"].fields) == method_fields()
    # the heads' lr goes with the encoder mode (the frozen preset's 3e-4, the default's 4e-4), not the method
    assert dict(METHODS["recipe"].fields) == {k: defaults[k] for k in method_fields() if k != "lr"}
    assert METHODS["reference"].strategies == ("fixed", "decay", "random")
    assert METHODS["recipe"].strategies[0] == "fixed:rate=0"  # the default recipe's own schedule, from Config
    assert METHODS["recipe"].strategies[-1] == "table:rate_table=" + ",".join(f"{r:g}" for r in RECIPE_TABLE)


def test_one_label_rule():
    """A variant's name is made from the method it is made under and its schedule: the default
    recipe's own schedule is ``recipe``; any other schedule under a method is ``<method>: <schedule>``;
    a variant of no method is its schedule alone. Nothing matches a config against the methods."""
    ref = method_fields()
    assert variant_label({}, "recipe") == "recipe"
    assert (
        variant_label({"schedule": "fixed", "rate": 0.0, "rate_start": 0.3}, "recipe") == "recipe"
    )  # fixed never reads it
    assert variant_label({"schedule": "decay"}, "recipe") == "recipe: decay 0.8-0.02"
    assert variant_label({"schedule": "fixed", "rate": 0.5}, "recipe") == "recipe: fixed 0.5"
    assert variant_label({**ref, "schedule": "fixed", "rate": 0.8}, "reference") == "reference: fixed 0.8"
    assert (
        variant_label({**ref, "schedule": "fixed", "rate": 0.0}, "reference") == "reference: fixed 0"
    )  # not the recipe
    assert variant_label(REFERENCE_METHOD, "reference") == "reference: decay 0.8-0.02"
    assert variant_label({**ref, "lr": 0.5, "schedule": "random"}, None) == "random"
    assert variant_label({"schedule": "table", "rate_table": [0.6, 0.6, 0.5]}, "recipe") == "recipe: table 0.6*2,0.5"
    # the name travels with the variant (the Config fields method and label) and is read back as it is
    cfg = labelled({"schedule": "decay", "seed": 3}, "recipe")
    assert cfg == {"schedule": "decay", "seed": 3, "method": "recipe", "label": "recipe: decay 0.8-0.02"}
    assert (
        Config.from_dict(cfg).label == "recipe: decay 0.8-0.02"
        and label_of(Config.from_dict(cfg).to_dict()) == "recipe: decay 0.8-0.02"
    )
    assert label_of({**cfg, "rate_start": 0.5}) == "recipe: decay 0.8-0.02"  # read, never recomputed
    assert label_of({"schedule": "fixed", "rate": 0.5}) == "fixed 0.5"  # a config no sweep named: its schedule
    assert slug("recipe: decay 0.8-0.02") == "recipe-decay-0.8-0.02" and slug("recipe") == "recipe"
    assert slug("reference: table 0.6*2,0.5") == "reference-table-0.6-2-0.5" and len(slug("x" * 99)) == 48


def test_strategy_text_round_trips_through_the_strategy_parser():
    from counterarg.sweep.spaces import parse_strategy

    assert strategy_text({}) == "fixed:rate=0" and strategy_text({"schedule": "decay"}) == "decay"
    assert strategy_text({"schedule": "table", "rate_table": (0.6, 0.5)}) == "table:rate_table=0.6,0.5"
    assert strategy_text({"schedule": "step", "rate_gamma": 0.3}) == "step:rate_gamma=0.3"
    for method in METHODS:
        for text in METHODS[method].strategies:
            cfg = parse_strategy(text, method)
            assert strategy_text(cfg) == text and parse_strategy(strategy_text(cfg), method)["label"] == cfg["label"]


def test_parse_methods_names_the_bad_one():
    assert parse_methods("reference,recipe") == ["reference", "recipe"]
    assert parse_methods(" recipe , recipe ") == ["recipe"]  # order kept, duplicates dropped
    with pytest.raises(ConfigError, match="unknown method 'recipes'; did you mean 'recipe'"):
        parse_methods("reference,recipes")
    with pytest.raises(ConfigError, match="unknown method 'zzz'; known: reference, recipe"):
        parse_methods("zzz")
    with pytest.raises(ConfigError, match="names no method"):
        parse_methods(" , ")


def test_shared_setting_names_what_every_trial_changes_and_its_preset():
    from counterarg.analysis.methods import shared_setting
    from counterarg.config import FROZEN_RECIPE, Config

    base = {**Config().to_dict(), **FROZEN_RECIPE, "epochs": 20}
    text = shared_setting([{**base, "seed": 0, "rate": 0.5}, {**base, "seed": 1, "rate": 0.0}])
    defaults = Config()
    if defaults.finetune != "none":  # the frozen preset differs from the defaults: named with its fields
        assert "finetune=none" in text
    assert "epochs=20" in text and "rate=" not in text and "seed" not in text
    assert shared_setting([Config().to_dict()]) is None
    assert shared_setting([]) is None


def test_a_variant_that_mines_apart_from_its_method_is_named_by_it():
    """Two strategies of one schedule that mine differently (a skipped nearest rank, a guard relative to
    the own counter) get different names; a mining field at the method's own value adds nothing."""
    from counterarg.sweep.spaces import method_strategies

    strategies = "fixed:rate=0;fixed:rate=0,neg_rank=3,10;fixed:rate=0,neg_margin=0;decay"
    labels = [c["label"] for c in method_strategies(strategies, ["recipe"])]
    assert labels == ["recipe", "recipe neg_rank=3,10", "recipe neg_margin=0", "recipe: decay 0.8-0.02"]
    (ref,) = method_strategies("fixed:rate=0.5,neg_rank=1,1", ["reference"])  # the reference method's own ranks
    assert ref["label"] == "reference: fixed 0.5"
