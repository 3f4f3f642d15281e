"""A sweep's Tuner (counterarg.sweep.tuner) without running it: trial folder names read the name each
trial carries, ASHA's settings and a search's fields, and what a resume refuses before Tune restores."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from counterarg.analysis.methods import labelled
from counterarg.config import ConfigError
from counterarg.sweep.recovery import SweepStateError
from counterarg.sweep.runner import Sweep
from counterarg.sweep.spaces import VariantSearcher, margin_lr_space, strategy_grid
from counterarg.sweep.tuner import asha_settings, check_resume, search_fields, trial_dirname


def test_trial_folders_are_named_by_the_name_each_trial_carries():
    fixed = labelled({"schedule": "fixed", "rate": 0.8, "seed": 2}, "recipe")
    assert (
        trial_dirname(SimpleNamespace(trial_id="ab12_00001", config=fixed)) == "trial_ab12_00001_recipe-fixed-0.8_seed2"
    )
    # the carried name wins over what the fields would say: nothing works it out again
    renamed = {**fixed, "label": "recipe: my own"}
    assert trial_dirname(SimpleNamespace(trial_id="t", config=renamed)) == "trial_t_recipe-my-own_seed2"
    # a config no sweep named: its schedule; one that does not parse: the id alone
    assert trial_dirname(SimpleNamespace(trial_id="t", config={"schedule": "decay"})) == "trial_t_decay-0.8-0.02_seed0"
    assert trial_dirname(SimpleNamespace(trial_id="t", config={"schedule": "no-such"})) == "trial_t"
    # a name Tune draws (PBT's members, sample_from) is still a placeholder when the folder is named:
    # named from the method the member carries and its rate
    member = SimpleNamespace(trial_id="t", config={**fixed, "label": ("__fn_ph", "a627709d")})
    assert trial_dirname(member) == "trial_t_recipe-fixed-0.8_seed2"


def test_asha_settings_and_search_fields():
    grid = Sweep(name="g", base={"epochs": 6}, variants=strategy_grid("decay", (0,), ["recipe"]))
    assert search_fields(grid) == [] and asha_settings(grid) == (6, 2, 2)
    search = Sweep(
        name="s",
        base={"epochs": 3},
        param_space=margin_lr_space(),
        scheduler="asha",
        grace_period=1,
        reduction_factor=3,
    )
    assert search_fields(search) == ["margin", "lr"] and asha_settings(search) == (3, 1, 3)  # the drawn fields


def test_a_resume_refuses_a_changed_grid_and_an_empty_folder(tmp_path):
    """The grid a sweep ran is read back from its searcher's saved state; another grid is refused in
    the flags' words, by the names the trials carry; a folder with no experiment is nothing to resume."""
    ran = strategy_grid("decay", (0, 1), ["recipe"])
    exp = tmp_path / "exp"
    exp.mkdir()
    VariantSearcher(ran).save(str(exp / "searcher-state-2026-01-01_00-00-00.pkl"))
    asked = Sweep(name="exp", variants=strategy_grid("random", (0, 1), ["recipe"]))
    with pytest.raises(ConfigError, match="it runs recipe: decay 0.8-0.02, this command asks for recipe: random"):
        check_resume(asked, exp, str(exp))
    with pytest.raises(SweepStateError, match="nothing to resume"):
        check_resume(Sweep(name="exp", variants=ran), exp, str(exp))
