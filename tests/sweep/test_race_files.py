"""A race's saved state and files (counterarg.sweep.race_files): race.csv, race.png and the summary
section from a race played without Ray, and the resume-time reconciliation of a searcher state
that is ahead of the saved trial list."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from counterarg.analysis.plots import read_plot_data
from counterarg.config import Config
from counterarg.sweep.race import RaceOptions, RaceSearcher
from counterarg.sweep.race_files import RACE_COLUMNS, load_race_state, race_markdown, reconcile_race_state, write_race

from .conftest import RACE_STRATEGIES, drive_race, race_searcher, race_value

METRIC = Config().select_metric


def test_race_files_carry_the_rounds(tmp_path):
    s = race_searcher((5, 6, 7, 8, 9))
    drive_race(s, race_value)
    paths = write_race(s.state, tmp_path, METRIC)
    csv = pd.read_csv(paths["csv"])
    assert tuple(csv.columns) == RACE_COLUMNS and len(csv) == 3 + 2 + 2
    assert csv["p_value"].isna().sum() == 3  # the leader of each round
    drawn = read_plot_data(paths["png"])
    assert drawn["eliminated_in_round"] == {"recipe: fixed 0.8": 1}
    assert drawn["x_ticks"] == [1, 2, 3]  # whole rounds, not the matplotlib default's fractions
    assert drawn["strategies"]["recipe: fixed 0.2"]["seeds"] == [3, 4, 5]
    assert drawn["strategies"]["recipe: fixed 0.2"]["mean"] == pytest.approx(
        list(csv[csv["strategy"] == "recipe: fixed 0.2"]["value"])
    )
    md = race_markdown(s.state, METRIC)
    assert (
        "| recipe: fixed 0.8 | 3 |" in md and "| 1 | behind recipe: fixed" in md and "| recipe: fixed 0.2 | 5 |" in md
    )


def test_a_race_of_one_round_is_drawn_at_that_round_only(tmp_path):
    s = race_searcher((5, 6, 7, 8, 9))
    drive_race(s, race_value)
    first = {**s.state, "rounds": s.state["rounds"][:1], "left": {}}
    drawn = read_plot_data(write_race(first, tmp_path, METRIC)["png"])
    assert drawn["x_ticks"] == [1]
    assert all(d["round"] == [1] for d in drawn["strategies"].values())


def test_a_race_in_flight_counts_its_finished_runs():
    """Before its first round is decided the race section shows each strategy's finished runs and their
    mean (not 0 seeds), and says which round is in flight and how much of it has finished."""
    s = race_searcher((5, 6, 7, 8, 9))
    configs = {f"t{n}": s.suggest(f"t{n}") for n in range(9)}  # round 1: 3 strategies x 3 seeds
    for n in range(4):
        s.on_trial_complete(f"t{n}", {METRIC: race_value(configs[f"t{n}"])})
    md = race_markdown(s.state, METRIC)
    assert "Not ended: round 1 in flight (4 of its 9 trials finished)" in md
    trials = s.state["trials"]
    for g in s.state["strategies"]:
        mine = [race_value(configs[f"t{n}"]) for n in range(4) if trials[f"t{n}"]["strategy"] == g]
        value = f"{sum(mine) / len(mine):.4f}" if mine else "–"
        assert f"| {g} | {len(mine)} | {value} | survived |" in md, md


def test_a_running_trial_missing_from_the_saved_trial_list_is_emitted_again(tmp_path):
    """A kill between the uploads of one save: the searcher state names round 2's first trial, the
    experiment state (one save older) does not. Reconciled, the race emits that strategy and seed
    again instead of waiting for a trial Tune never restores; a second call changes nothing."""
    s = race_searcher(tuple(range(5)))
    for n in range(9):  # round 1, completed
        cfg = s.suggest(f"t{n}")
        s.on_trial_complete(f"t{n}", {METRIC: race_value(cfg)})
    first = s.suggest("t9")  # round 2's first trial, then the kill
    s.save(str(tmp_path / "searcher-state-2026-01-01_00-00-00.pkl"))
    trial_data = [[json.dumps({"trial_id": f"t{n}"}), "{}"] for n in range(9)]
    (tmp_path / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": trial_data}))
    lines = reconcile_race_state(tmp_path)
    assert len(lines) == 1 and "t9 (recipe: fixed 0.2, seed 3)" in lines[0], lines
    assert reconcile_race_state(tmp_path) == []
    state = load_race_state(str(tmp_path))
    assert "t9" not in state["trials"] and state["emitted"] == 9 and state["queue"][0] == ["recipe: fixed 0.2", 3]
    again = RaceSearcher(RACE_STRATEGIES, RaceOptions(seeds=tuple(range(10))), verbose=False)
    again.restore(str(tmp_path / "searcher-state-2026-01-01_00-00-00.pkl"))
    assert again.suggest("t10") == first and again.metric == METRIC
    # an earlier session's file, rewritten later (a resumed sweep uploads every session's files):
    # the newest session is read, by name, as Tune restores it
    (tmp_path / "searcher-state-2025-12-31_00-00-00.pkl").write_text(json.dumps({"stale": True}))
    assert load_race_state(str(tmp_path))["queue"][0] == ["recipe: fixed 0.2", 3]
