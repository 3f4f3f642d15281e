"""Racing strategies over seeds (counterarg.sweep.race): the round decision on hand-made values, the
searcher's rounds, stops and saved state without Ray, a race on a synthetic trainable with known
means (the worst leaves first, the best stays), a SIGKILLed race resumed to the same eliminations,
and the script's smoke test and flags. The race's files: tests/sweep/test_race_files.py."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from counterarg.analysis.significance import holm, seed_test
from counterarg.config import Config, ConfigError
from counterarg.sweep.race import RaceOptions, RaceSearcher, race_round, race_table
from counterarg.sweep.race_files import RACE_COLUMNS, race_rows

from .conftest import (
    PY,
    RACE_STRATEGIES,
    REPO,
    drive_race,
    kill_when,
    race_searcher,
    race_value,
    resume_to_end,
    run_smoke_test,
    unique_name,
)

METRIC = Config().select_metric
SYNTHETIC = Path(__file__).with_name("race_synthetic.py")


# ------------------------------------------------------------------------------ the round decision
def test_round_drops_only_what_the_holm_adjusted_test_shows_worse():
    values = {"best": [0.60, 0.62, 0.61], "close": [0.59, 0.61, 0.60], "far": [0.30, 0.31, 0.29]}
    out = race_round(values)
    assert [s.strategy for s in out] == ["best", "close", "far"]
    lead, close, far = out
    assert lead.leader and lead.p_value is None and not lead.eliminated
    assert lead.value == pytest.approx(0.61) and lead.seeds == 3
    raw = [seed_test(values["best"], values[g]).p_value for g in ("close", "far")]
    assert [close.p_value, far.p_value] == pytest.approx(holm(raw))
    assert far.p_value < 0.05 and far.eliminated and "behind best" in far.reason
    assert close.p_value > 0.05 and not close.eliminated and close.reason == ""
    lo, hi = lead.ci_low, lead.ci_high  # 95% t-interval of the mean: 0.61 ± 4.303 * 0.01 / sqrt(3)
    assert (lo, hi) == pytest.approx(
        (0.61 - 4.3027 * 0.01 / math.sqrt(3), 0.61 + 4.3027 * 0.01 / math.sqrt(3)), abs=1e-4
    )


def test_holm_correction_can_keep_a_strategy_a_single_test_would_drop():
    """Two comparisons whose raw p-values are both just under 0.05: Holm multiplies the smaller by 2."""
    values = {"a": [1.0, 1.1, 0.9, 1.0], "b": [0.80, 0.95, 0.70, 0.85], "c": [0.80, 0.95, 0.70, 0.85]}
    raw = seed_test(values["a"], values["b"]).p_value
    assert 0.025 < raw < 0.05
    out = {s.strategy: s for s in race_round(values)}
    assert not out["b"].eliminated and not out["c"].eliminated
    assert out["b"].p_value == pytest.approx(min(1.0, 2 * raw))
    alone = {s.strategy: s for s in race_round({"a": values["a"], "b": values["b"]})}
    assert alone["b"].eliminated and alone["b"].p_value == pytest.approx(raw)


def test_untestable_and_empty_strategies_and_min_mode():
    out = {s.strategy: s for s in race_round({"a": [0.5, 0.6], "b": [0.1], "dead": []})}
    assert out["b"].p_value is None and not out["b"].eliminated  # one run: no test, stays
    assert out["dead"].eliminated and out["dead"].reason == "no finished run" and out["dead"].value is None
    low = race_round({"lossy": [0.9, 0.91, 0.92], "low": [0.1, 0.11, 0.12]}, mode="min")
    assert low[0].strategy == "low" and low[1].eliminated  # a lower value is better
    table = race_table(1, race_round({"recipe: fixed 0.8": [0.5, 0.52], "random": [0.1, 0.11]}))
    assert "recipe: fixed 0.8" in table and "leader" in table and "eliminated" in table


# ------------------------------------------------------------------------------ the searcher, no Ray
def test_searcher_races_rounds_then_stops_at_max_seeds():
    s = race_searcher((5, 6, 7, 8, 9))
    emitted = drive_race(s, race_value)
    seeds = [(c["rate"], c["seed"]) for c in emitted]
    assert seeds[:9] == [(r, sd) for r in (0.2, 0.5, 0.8) for sd in (5, 6, 7)]  # round 1
    assert seeds[9:] == [(0.2, 8), (0.5, 8), (0.2, 9), (0.5, 9)]  # one more seed per survivor
    st = s.state
    assert st["left"] == {"recipe: fixed 0.8": {"round": 1, "reason": st["left"]["recipe: fixed 0.8"]["reason"]}}
    assert [r["round"] for r in st["rounds"]] == [1, 2, 3] and "--max-seeds 5" in st["stop"]
    # the value of a run is its best reported epoch (the max), not its last
    assert all(
        t["value"]
        == pytest.approx(race_value({"rate": float(st["strategies"][t["strategy"]]["rate"]), "seed": t["seed"]}))
        for t in st["trials"].values()
    )
    rows = race_rows(st)
    assert [(r["round"], r["strategy"]) for r in rows][:3] == [
        (1, "recipe: fixed 0.2"),
        (1, "recipe: fixed 0.5"),
        (1, "recipe: fixed 0.8"),
    ]
    assert {r["eliminated_in_round"] for r in rows if r["strategy"] == "recipe: fixed 0.8"} == {1}
    assert {r["eliminated_in_round"] for r in rows if r["strategy"] != "recipe: fixed 0.8"} == {None}
    assert [r["seeds"] for r in rows if r["strategy"] == "recipe: fixed 0.5"] == [3, 4, 5]


def test_searcher_budget_stops_before_a_round_that_does_not_fit_and_state_round_trips(tmp_path):
    opts = RaceOptions(seeds=tuple(range(10)), first_seeds=2, max_seeds=10, budget=9)
    s = RaceSearcher(RACE_STRATEGIES, opts, metric=METRIC, mode="max", verbose=False)
    emitted = drive_race(s, race_value)
    assert len(emitted) == 8  # 6 in round 1, 2 in round 2; round 3 would need 2 more: 10 > 9
    assert s.state["stop"].startswith("--budget 9")
    s.save(str(tmp_path / "state.json"))
    again = RaceSearcher(RACE_STRATEGIES[:2], RaceOptions(seeds=tuple(range(10))), verbose=False)
    again.restore(str(tmp_path / "state.json"))
    assert again.state == json.loads(json.dumps(s.state)) and again.suggest("x") == RaceSearcher.FINISHED
    assert (again.metric, again.mode) == (METRIC, "max")  # Tuner.restore does not set them again
    with pytest.raises(ConfigError, match="cannot hold the first round"):
        RaceSearcher(RACE_STRATEGIES, RaceOptions(seeds=(0, 1, 2), max_seeds=3, budget=8))
    with pytest.raises(ConfigError, match="--max-seeds 10 needs 10 seeds"):
        RaceOptions(seeds=(0, 1, 2))
    with pytest.raises(ConfigError, match="at least 2 strategies"):
        RaceSearcher(RACE_STRATEGIES[:1], RaceOptions(seeds=tuple(range(10))))


def test_a_strategy_whose_trials_all_error_is_dropped_with_the_reason():
    s = race_searcher(tuple(range(4)), first_seeds=2, max_seeds=4)
    drive_race(s, race_value, error=lambda c: c["rate"] == 0.5)
    assert s.state["left"]["recipe: fixed 0.5"] == {"round": 1, "reason": "no finished run"}
    # an errored run is missing, not a zero: the survivors' values hold none of it
    assert all(t["value"] is not None or t["state"] == "error" for t in s.state["trials"].values())


# ------------------------------------------------------------------------------ Ray: synthetic races
def _synthetic_args(storage: Path, name: str, block: Path | None = None) -> list[str]:
    return ["--storage", str(storage), "--name", name] + (["--block-file", str(block)] if block else [])


def round_two_running(exp: Path) -> bool:
    """A trial of round 2 is running in the searcher state *and* listed in the experiment state in
    storage (this test kills the driver only then, so that the two files agree, as they do after the
    resume's reconciliation; that path is tested in test_race_files.py)."""
    searcher = sorted(exp.glob("searcher-state-*.pkl")) if exp.is_dir() else []
    trials = sorted(exp.glob("experiment_state-*.json")) if exp.is_dir() else []
    if not searcher or not trials:
        return False
    try:
        st = json.loads(searcher[-1].read_text())
        listed = trials[-1].read_text()
        json.loads(listed)
    except ValueError:  # being written
        return False
    running = [tid for tid, t in st["trials"].items() if t["round"] == 2 and t["state"] == "running"]
    return st["round"] == 2 and any(tid in listed for tid in running)


@pytest.fixture(scope="module")
def clean_race(tmp_path_factory):
    """The synthetic race run once to its end, uninterrupted: its race.csv."""
    storage = tmp_path_factory.mktemp("race")
    name = unique_name("race")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [PY, str(SYNTHETIC), *_synthetic_args(storage, name)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors = {p.parent.name: p.read_text()[-500:] for p in (storage / name).glob("*/error.txt")}
    assert not errors, errors  # an errored trial is a missing run: the race would rightly differ
    return pd.read_csv(storage / name / "race.csv"), proc.stdout


@pytest.mark.slow
def test_synthetic_race_eliminates_the_worst_first_and_keeps_the_best(clean_race):
    csv, out = clean_race
    first = csv[csv["round"] == 1]
    assert set(first["strategy"]) == {"recipe: fixed 0.2", "recipe: fixed 0.5", "recipe: fixed 0.8"} and set(
        first["seeds"]
    ) == {3}
    left = csv.groupby("strategy")["eliminated_in_round"].first()
    assert left["recipe: fixed 0.8"] == 1, csv  # the worst mean (0.30) leaves first
    assert left["recipe: fixed 0.5"] == 2, csv  # 0.05 behind, at 0.02 noise: one more seed shows it
    assert pd.isna(left["recipe: fixed 0.2"])  # the best mean (0.60) survives to the end
    assert list(csv[csv["round"] == 2]["seeds"]) == [4, 4] and csv["round"].max() == 2
    assert "[race-test] one strategy survives: recipe: fixed 0.2" in out


@pytest.mark.slow
def test_killed_race_resumes_to_the_same_eliminations(clean_race, tmp_path):
    """The driver is SIGKILLed (with its Ray) while round 2's first trial blocks and the saved race
    state shows it running; --resume finishes the race with the uninterrupted race's rows."""
    storage, name, block = tmp_path / "results", unique_name("race-kill"), tmp_path / "blocked"
    exp = storage / name
    args = _synthetic_args(storage, name, block)

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed = kill_when(
        lambda: block.exists() and round_two_running(exp),
        args,
        env,
        tmp_path / "driver.log",
        timeout=300,
        kill_group=True,
        script=str(SYNTHETIC),
    )
    assert not (exp / "race.csv").exists()
    resume_to_end(args, env, tmp_path / "driver.log", killed, timeout=300, script=str(SYNTHETIC))
    resumed = pd.read_csv(exp / "race.csv")
    errors = {p.parent.name: p.read_text()[-500:] for p in exp.glob("*/error.txt")}
    assert not errors, errors  # an errored trial is a missing run: the race would rightly differ
    pd.testing.assert_frame_equal(resumed, clean_race[0])


# ------------------------------------------------------------------------------ the script
@pytest.mark.slow
def test_smoke_test_writes_race_csv_and_summary(tmp_path):
    name = unique_name("smoke")
    proc = run_smoke_test("race_strategies.py", "--storage", str(tmp_path), "--name", name)
    exp = tmp_path / name
    csv = pd.read_csv(exp / "race.csv")
    assert tuple(csv.columns) == RACE_COLUMNS
    assert set(csv[csv["round"] == 1]["strategy"]) == {
        "reference: fixed 0.8",
        "reference: random",
        "recipe: fixed 0.8",
        "recipe: random",
    }
    assert set(csv[csv["round"] == 1]["seeds"]) == {2}
    summary = pd.read_csv(exp / "summary.csv")
    assert len(summary) == csv.groupby("strategy")["seeds"].max().sum()  # one trial per strategy and seed raced
    md = (exp / "summary.md").read_text()
    assert "## Race (validation)" in md and "left in round" in md
    assert "[race] after round 1:" in proc.stdout and "Survivor(s):" in proc.stdout
    assert (exp / "race.png").exists()


@pytest.mark.slow
def test_killed_race_script_resumes_and_finishes_the_race(tmp_path):
    """The script's own --resume path (state repair, reconciliation, Tuner.restore through the runner):
    SIGKILLed with its Ray while a round-2 trial of the smoke race runs, resumed to the end."""
    name = unique_name("race-script")
    exp = tmp_path / name
    args = ["--smoke-test", "--num-cpus", "2", "--epochs", "3", "--storage", str(tmp_path), "--name", name]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed = kill_when(
        lambda: round_two_running(exp),
        args,
        env,
        tmp_path / "driver.log",
        timeout=400,
        kill_group=True,
        script="race_strategies.py",
    )
    assert not (exp / "race.csv").exists()
    resume_to_end(args, env, tmp_path / "driver.log", killed, timeout=400, script="race_strategies.py")
    csv = pd.read_csv(exp / "race.csv")
    assert list(csv[csv["round"] == 1]["seeds"]) == [2] * 4 and csv["round"].max() == 2, csv
    trials = int(csv.groupby("strategy")["seeds"].max().sum())  # each strategy's seeds, once each
    md = (exp / "summary.md").read_text()
    assert f"Trials: {trials} (0 errored, 0 unfinished)" in md and "Ended: " in md and "Ended: unfinished" not in md
    assert "Survivor(s): " in (tmp_path / "driver.log").read_text()


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--first-seeds", "1"], "--first-seeds: must be >= 2, got 1"),
        (["--first-seeds", "4", "--max-seeds", "3"], "--max-seeds 3 is below --first-seeds 4"),
        (["--seeds", "0,1,2", "--max-seeds", "5"], "--max-seeds 5 needs 5 seeds, --seeds gives 3"),
        (["--seeds", "0,0,1"], "--seeds repeats 0"),
        (["--budget", "23"], r"--budget 23 cannot hold the first round: 8 strategies x 3 seeds = 24 trials"),
        (["--strategies", "decay", "--methods", "recipe"], "a race needs at least 2 strategies, got 1"),
        (["--strategies", "decay;decay"], "two trials would be identical"),
        (["--strategies", "fixed;decy"], "did you mean 'decay'"),
        (["--set", "seed=3"], "a race chooses the seeds itself"),
        (["--max-seeds", "400"], "a race of at most 1000 trials"),
    ],
)
def test_race_flags_fail_with_a_named_error_and_exit_2(flags, match, tmp_path, capsys):
    import re

    from .conftest import sweep_script

    with pytest.raises(SystemExit) as e:
        sweep_script("race_strategies")(["--storage", str(tmp_path), "--name", "x", *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and re.search(match, err), err
    assert "Traceback" not in err and not (tmp_path / "x").exists()
