"""The space file of a search (counterarg.sweep.space_file): each domain kind becomes its Tune domain,
every bad file or key is refused naming the file and the key, and sweeps/search_recipe.py, which
reads it, exits 2 on a bad file and runs its smoke test."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from ray.tune.search.sample import Categorical, Float, Integer

from counterarg.config import Config, ConfigError
from counterarg.sweep.space_file import DOMAINS, parse_space, read_space_file, search_space, searched_fields
from counterarg.sweep.spaces import method_start

from .conftest import REPO, run_smoke_test, sweep_script, unique_name

RECIPE = method_start("recipe")


def test_each_domain_kind_becomes_its_tune_domain_with_its_bounds():
    spec = {
        "finetune": {"choice": ["none", "top:1"]},
        "lr": {"loguniform": [1e-4, 3e-3]},
        "scale": {"uniform": [10, 40]},
        "num_negatives": {"randint": [1, 4]},
        "head": {"grid": ["identity", "residual"]},
        "patience": 2,
        "neg_rank": [1, 30],
        "neg_margin": None,
    }
    space = parse_space(spec, start=RECIPE, source="s.json")
    assert list(space) == list(spec)  # the file's order
    assert isinstance(space["finetune"], Categorical) and space["finetune"].categories == ["none", "top:1"]
    assert isinstance(space["lr"], Float) and (space["lr"].lower, space["lr"].upper) == (1e-4, 3e-3)
    assert isinstance(space["scale"], Float) and (space["scale"].lower, space["scale"].upper) == (10.0, 40.0)
    n = space["num_negatives"]
    assert isinstance(n, Integer) and (n.lower, n.upper) == (1, 4)
    assert space["head"] == {"grid_search": ["identity", "residual"]}
    assert (space["patience"], space["neg_rank"], space["neg_margin"]) == (2, [1, 30], None)
    assert searched_fields(space) == ["finetune", "lr", "scale", "num_negatives", "head"]
    assert set(DOMAINS) == {"choice", "grid", "uniform", "loguniform", "randint"}
    rng = np.random.default_rng(0)
    draws = np.asarray(space["num_negatives"].sample(size=500, random_state=rng))
    assert set(draws) == {1, 2, 3}  # hi excluded, as tune.randint
    logs = np.log(np.asarray(space["lr"].sample(size=2000, random_state=rng)))
    assert np.median(logs) == pytest.approx((np.log(1e-4) + np.log(3e-3)) / 2, abs=0.15)  # even in log


def test_search_space_starts_from_the_method_and_set_wins_over_it():
    space = search_space(
        {"lr": {"loguniform": [1e-4, 1e-3]}}, start=method_start("reference"), seeds=[0, 1], base={"batch_size": 32}
    )
    assert space["head"] == "linear" and space["schedule"] == "decay"  # the reference implementation
    assert "batch_size" not in space  # --set's value (the sweep's base) is not overridden by the method's 8
    assert space["seed"] == {"grid_search": [0, 1]} and list(space)[-2:] == ["lr", "seed"]
    one = search_space({"lr": 1e-3}, start=RECIPE, seeds=[3])
    assert one["seed"] == 3 and Config.from_dict(one).to_dict()["loss"] == Config().loss


def test_the_shipped_space_file_is_valid():
    spec = read_space_file(REPO / "sweeps" / "spaces" / "recipe.json")
    space = search_space(spec, start=RECIPE, source="recipe.json")
    assert "finetune" in searched_fields(space) and "lr" in searched_fields(space)


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"lrr": 1e-3}, r"s\.json: key 'lrr': unknown Config field; did you mean 'lr'\?"),
        (
            {"lr": {"logunifrom": [1e-4, 1e-3]}},
            r"s\.json: key 'lr': unknown domain 'logunifrom'; did you mean 'loguniform'\?",
        ),
        ({"lr": {"uniform": [1e-4, 1e-3], "choice": [1]}}, r"s\.json: key 'lr': a domain is one of"),
        ({"head": {"choice": []}}, r"s\.json: key 'head': choice expects a non-empty list"),
        ({"head": {"grid": "identity"}}, r"s\.json: key 'head': grid expects a non-empty list"),
        ({"head": {"choice": ["identity", "identity"]}}, r"s\.json: key 'head': choice repeats \"identity\""),
        (
            {"batch_size": {"uniform": [8, 64]}},
            r"s\.json: key 'batch_size': uniform draws floats; 'batch_size' holds int \(use randint",
        ),
        ({"head": {"loguniform": [1, 2]}}, r"s\.json: key 'head': loguniform draws floats; 'head' holds str"),
        ({"lr": {"uniform": [1e-3, 1e-4]}}, r"s\.json: key 'lr': uniform expects lo < hi"),
        ({"lr": {"uniform": [1e-3]}}, r"s\.json: key 'lr': uniform expects \[lo, hi\]"),
        ({"lr": {"loguniform": [0, 1e-3]}}, r"s\.json: key 'lr': loguniform expects 0 < lo"),
        ({"batch_size": {"randint": [8.5, 64]}}, r"s\.json: key 'batch_size': randint expects two integers"),
        ({"finetune": {"randint": [1, 3]}}, r"s\.json: key 'finetune': randint draws numbers"),
        ({"finetune": {"choice": ["none", "top:x"]}}, r"s\.json: key 'finetune', value \"top:x\": .*finetune must be"),
        ({"lr": {"uniform": [-1, 1e-3]}}, r"s\.json: key 'lr', value -1.*lr"),
        ({"batch_size": "big"}, r"s\.json: key 'batch_size': .*expects int, got 'big'"),
        (
            {"schedule": {"choice": ["fixed", "table"]}, "rate_table": {"choice": [[], [0.5]]}},
            r"s\.json: keys 'schedule', 'rate_table' \(the combination schedule=\"table\", rate_table=\[\]\)",
        ),
        ({"seed": {"choice": [0, 1]}}, r"s\.json: key 'seed': not a search field; give the seeds with --seeds"),
        ({"label": "mine"}, r"s\.json: key 'label': not a search field; the sweep names its trials itself"),
        ({"select_metric": "validation/mean/acc@1"}, r"s\.json: key 'select_metric': not a search field"),
        ({"epochs": {"choice": [2, 4]}}, r"s\.json: key 'epochs': every trial of a search runs the same epochs"),
        ({"margin": 0.5}, r"s\.json: key 'margin': also set for every trial \(--set"),
    ],
)
def test_a_bad_space_is_refused_naming_the_file_and_the_key(spec, match):
    with pytest.raises(ConfigError, match=match):
        search_space(spec, start=RECIPE, base={"margin": 1.0}, source="s.json")


def test_choices_are_checked_together_not_against_the_start_alone():
    """An empty rate_table fits only schedules that do not read it: beside schedule=table alone it
    fails, beside fixed and table the combination is named; a value that fits no combination is named alone."""
    with pytest.raises(ConfigError, match=r"rate_table"):
        parse_space({"schedule": {"choice": ["table"]}, "rate_table": {"choice": [[]]}}, start=RECIPE, source="s.json")
    ok = parse_space(
        {"schedule": {"choice": ["fixed", "table"]}, "rate_table": {"choice": [[0.5], [0.2]]}}, start=RECIPE
    )
    assert ok["rate_table"].categories == [[0.5], [0.2]]
    with pytest.raises(ConfigError, match=r"s\.json: key 'head', value \"nope\": .*head must be"):
        parse_space(
            {"finetune": {"choice": ["top:1", "all"]}, "head": {"choice": ["identity", "nope"]}},
            start=RECIPE,
            source="s.json",
        )


def test_a_resumed_search_is_told_where_its_space_differs(tmp_path):
    from ray import tune

    from counterarg.sweep.space_file import save_space, space_changes

    space = search_space(
        {
            "lr": {"loguniform": [1e-4, 1e-3]},
            "head": {"choice": ["identity", "residual"]},
            "num_negatives": {"randint": [1, 4]},
            "scale": {"uniform": [10, 40]},
        },
        start=RECIPE,
        seeds=[0, 1],
    )
    gone = space_changes(tmp_path, space)  # nothing saved: nothing to compare against, so refused
    assert gone.startswith(f"{tmp_path / 'search_space.json'}, the space this search started with, is gone")
    save_space(tmp_path, space)
    saved = json.loads((tmp_path / "search_space.json").read_text())
    assert saved["lr"] == {"loguniform": [1e-4, 1e-3]} and saved["num_negatives"] == {"randint": [1, 4]}
    assert saved["scale"] == {"uniform": [10.0, 40.0]} and saved["seed"] == {"grid": [0, 1]}
    assert space_changes(tmp_path, dict(space)) is None
    changed = space_changes(tmp_path, {**space, "lr": tune.loguniform(1e-4, 3e-3), "patience": 2})
    assert changed == (
        'the search space differs from the sweep\'s: lr was {"loguniform": [0.0001, 0.001]}, '
        'now {"loguniform": [0.0001, 0.003]}; patience was 5, now 2'
    )


@pytest.mark.parametrize(
    "text, match",
    [
        (None, "space file not found: .*nope.json"),
        ('{"lr": ', "space file .*bad.json is not valid JSON"),
        ("[1, 2]", "space file .*bad.json must hold a JSON object"),
        ("{}", "space file .*bad.json must hold a JSON object of Config fields, at least one"),
        ('{"lr": {"choice": [0.001]}, "lr": 0.01}', "space file .*bad.json gives key 'lr' twice"),  # JSON kept the last
        ('{"lr": {"choice": [0.001], "choice": [0.01]}}', "space file .*bad.json gives key 'choice' twice"),
    ],
)
def test_an_unreadable_space_file_is_refused_naming_it(text, match, tmp_path):
    path = tmp_path / ("nope.json" if text is None else "bad.json")
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        read_space_file(path)
    with pytest.raises(ConfigError, match="is a folder"):
        read_space_file(tmp_path)


@pytest.mark.parametrize(
    "content, flags, match",
    [
        (
            {"lr": {"loguniform": [1e-4, 1e-3]}, "finetune": {"choise": ["none"]}},
            [],
            r"bad\.json: key 'finetune': unknown domain 'choise'; did you mean 'choice'",
        ),
        ("not json", [], r"space file .*bad\.json is not valid JSON"),
        ({"lr": 1e-3}, ["--scheduler", "fifo", "--grace-period", "2"], "they need --scheduler asha"),
        (
            {"lr": 1e-3},
            ["--epochs", "3", "--grace-period", "4"],
            "grace period must be between 1 and the trials' 3 epochs",
        ),
        ({"lr": 1e-3}, ["--reduction-factor", "1"], "reduction factor must be a finite number > 1"),
        ({"lr": 1e-3}, ["--set", "lr=0.01"], r"bad\.json: key 'lr': also set for every trial"),
        (
            {"cache_dir": "FILE/cache"},
            [],
            r"bad\.json: key 'cache_dir': cache_dir: .*FILE is a file, so .*FILE/cache cannot",
        ),
        (
            {"cache_dir": {"choice": ["FILE", "ok"]}},
            [],
            r"bad\.json: key 'cache_dir', value \".*FILE\": cache_dir: .*FILE is "
            "a file, not a folder",
        ),
        (
            {"lr": 1e-3},
            ["--set", "cache_dir=FILE/cache"],
            r"cache_dir: .*FILE is a file, so .*FILE/cache cannot be a folder",
        ),
    ],
)
def test_script_exits_2_on_a_bad_space_file_or_asha_flag(content, flags, match, tmp_path, capsys):
    import re

    space = tmp_path / "bad.json"
    (tmp_path / "FILE").write_text("a file where a cache folder is asked for")
    text = content if isinstance(content, str) else json.dumps(content)
    space.write_text(text.replace("FILE", str(tmp_path / "FILE")))
    flags = [f.replace("FILE", str(tmp_path / "FILE")) for f in flags]
    with pytest.raises(SystemExit) as e:
        sweep_script("search_recipe")(["--storage", str(tmp_path), "--name", "x", "--space", str(space), *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and re.search(match, err), err
    assert "Traceback" not in err and not (tmp_path / "x").exists()


def test_resume_without_the_saved_space_is_refused(tmp_path, capsys):
    """search_recipe --resume accepted an edited space when search_space.json was gone: with nothing to
    compare against it is refused, exit 2, naming the file."""
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "experiment_state-2026.json").write_text("{}")
    with pytest.raises(SystemExit) as e:
        sweep_script("search_recipe")(["--storage", str(tmp_path), "--name", "x", "--resume"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err, err
    assert f"--resume: {tmp_path / 'x' / 'search_space.json'}, the space this search started with, is gone" in err


@pytest.mark.slow
def test_smoke_test_samples_the_shipped_space_and_selects_on_validation(tmp_path):
    name = unique_name("search-smoke")
    proc = run_smoke_test("search_recipe.py", "--storage", str(tmp_path), "--name", name)
    exp = tmp_path / name
    csv = pd.read_csv(exp / "summary.csv")
    assert len(csv) == 2 and set(csv["status"]) == {"TERMINATED"}
    assert csv["config/lr"].nunique() == 2  # two samples, two draws
    md = (exp / "summary.md").read_text()
    search = md.split("## Search (validation)")[1].split("\n## ")[0]
    assert (
        "2 configuration(s) sampled over `finetune`, `lr`" in search
        and "ASHA (grace period 1, reduction factor 3" in search
    )
    assert "| rank | finetune | lr |" in search and "**Selected** (rank 1 of 2" in search
    assert "counterarg train " in search and "--set max_length=64" in search  # the smoke base, with the draws
    import re

    metric = csv["validation_unseen/mean/acc@1"]
    best_lrs = csv.loc[metric == metric.max(), "config/lr"]  # the tiny model often ties its two draws
    chosen = float(re.search(r"--set lr=([0-9.e-]+)", search).group(1))
    assert any(chosen == pytest.approx(lr, rel=1e-12) for lr in best_lrs)  # the selected one is best on validation
    assert "finetune=" in proc.stdout.split("[sweep] feature cache ready")[1]  # the live table names the draws
