"""counterarg.analysis.run_compare: two groups of run folders -> the sweep's seed-aware test per task, Holm
over a view's rows, a verdict, and a named refusal for every run that cannot be compared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from counterarg import cli
from counterarg.analysis.run_compare import CompareError, compare_runs, config_notes, load_run, ranks_folder, verdict
from counterarg.analysis.significance import PairedTest, holm
from counterarg.analysis.verdicts import compare, ranks_hits
from counterarg.core.paths import absolute_paths_in

from .conftest import write_run


def groups(tmp_path, p_a, p_b, seeds=(0, 1, 2), **kw):
    a = [write_run(tmp_path / f"a{s}", s, p_a, **kw) for s in seeds]
    b = [write_run(tmp_path / f"b{s}", s, p_b, **kw) for s in seeds]
    return a, b


def rows_of(a, b, **kw):
    return compare_runs([load_run(f) for f in a], [load_run(f) for f in b], **kw)


def test_a_clearly_better_b_is_found_on_every_row_with_holm_per_view(tmp_path):
    a, b = groups(tmp_path, 0.4, 0.6)
    rows = rows_of(a, b, label_a="old", label_b="new")
    assert len(rows) == 18 and {r.view for r in rows} == {"all", "unseen"}
    for view in ("all", "unseen"):
        mine = [r for r in rows if r.view == view]
        assert [r.p_holm for r in mine] == pytest.approx(holm([r.p_value for r in mine]))
        assert all(r.p_holm >= r.p_value for r in mine)
        assert all(r.significant and r.better == "new" and r.diff > 0.1 for r in mine)
        assert all(r.ci_low < r.diff < r.ci_high and r.ci_low > 0 for r in mine)
        assert all(r.seeds_needed is None for r in mine)  # settled: no sizing
    mean = next(r for r in rows if (r.task, r.view) == ("mean", "unseen"))
    assert (mean.n_runs_a, mean.n_runs_b, mean.n_queries) == (3, 3, 150)
    line = verdict(rows, "unseen")
    assert line.startswith("new beats old on the unseen mean acc@1 by 0.")
    assert "Holm over the view's 9 rows) with 3+3 runs" in line and "per task: new on sdoc" in line


def test_equal_groups_give_no_verdict_and_say_how_many_seeds(tmp_path):
    a, b = groups(tmp_path, 0.5, 0.5)
    rows = rows_of(a, b)
    means = [r for r in rows if r.task == "mean"]
    assert means and not any(r.significant for r in means)
    assert all(abs(r.diff) < 0.05 and r.ci_low < 0 < r.ci_high for r in means)
    for view in ("all", "unseen"):
        line = verdict(rows, view)
        assert line.startswith("no significant difference on the ") and "at 3+3 runs (B - A = " in line
        assert "seeds each would decide it" in line or "no number of seeds decides it on these test queries" in line


def test_the_test_is_the_sweeps_own_and_reads_b_minus_a(tmp_path):
    # compare_runs reports verdicts.compare (the sweep summary's comparison) turned round to B - A
    a, b = groups(tmp_path, 0.45, 0.5)
    rows = rows_of(a, b, label_a="x", label_b="y")
    ha = np.stack([ranks_hits(load_run(f).ranks)[("sda", "all")] for f in a])  # [3, n]
    hb = np.stack([ranks_hits(load_run(f).ranks)[("sda", "all")] for f in b])
    c = compare({"x": ha, "y": hb}, "sda", "all", PairedTest(ha.shape[1]))[0]
    row = next(r for r in rows if (r.task, r.view) == ("sda", "all"))
    sign = 1 if c.strategy_a == "y" else -1
    assert row.diff == pytest.approx(sign * c.diff) and row.p_value == c.p_value
    assert row.p_value_queries == c.p_value_queries
    assert sorted([row.ci_low, row.ci_high]) == pytest.approx(sorted([sign * c.ci_low, sign * c.ci_high]))
    assert row.mean_b - row.mean_a == pytest.approx(row.diff)


def test_tasks_mean_is_one_test_per_view(tmp_path):
    a, b = groups(tmp_path, 0.4, 0.6, seeds=(0, 1))
    rows = rows_of(a, b, tasks="mean")
    assert [(r.task, r.view) for r in rows] == [("mean", "all"), ("mean", "unseen")]
    assert all(r.p_holm == r.p_value for r in rows)
    assert "(p " in verdict(rows, "all") and "one test) with 2+2 runs" in verdict(rows, "all")
    with pytest.raises(CompareError, match="--tasks some: one of all, mean"):
        rows_of(a, b, tasks="some")
    with pytest.raises(CompareError, match="both 'A'"):
        rows_of(a, b, label_b="A")


def test_each_kind_of_run_folder_reads_its_best_ranks(tmp_path):
    run = write_run(tmp_path / "run", 0, 0.5)
    trial = write_run(tmp_path / "trial", 1, 0.5, layout="trial")
    ckpt = write_run(tmp_path / "ckpt", 2, 0.5, layout="checkpoint")
    assert ranks_folder(run) == run / "best"
    assert ranks_folder(trial) == trial / "checkpoint_000003"  # the newest checkpoint, not checkpoint_000001
    assert ranks_folder(ckpt) == ckpt and ranks_folder(run / "checkpoint") == run / "checkpoint"
    assert load_run(trial).seed == 1 and load_run(run).seed == 0  # params.json; config.json
    assert ranks_hits(load_run(trial).ranks)[("mean", "all")].mean() > 0.3  # not the old all-miss ranks
    other = write_run(tmp_path / "c3", 3, 0.5)
    assert len(compare_runs([load_run(run), load_run(trial)], [load_run(ckpt), load_run(other)])) == 18


def test_every_refusal_names_the_folder(tmp_path, capsys):
    a, b = groups(tmp_path, 0.5, 0.5, seeds=(0, 1))
    runs = lambda fs: [load_run(f) for f in fs]  # noqa: E731
    no_test = write_run(tmp_path / "no_test", 5, 0.5, splits=("validation",))
    with pytest.raises(
        CompareError, match=f"{no_test}: its best_ranks.npz holds no per-query test ranks.*test_every=1"
    ):
        load_run(no_test)
    assert load_run(no_test, "validation").seed == 5  # its validation ranks are there
    with pytest.raises(CompareError, match="validation and test only"):
        load_run(a[0], "training")
    other = write_run(tmp_path / "other", 6, 0.5, n=200)
    with pytest.raises(
        CompareError, match=f"{other}: its test split has 200 queries, {a[0]}'s has 300: runs of different corpora"
    ):
        compare_runs(runs(a), runs([b[0], other]))
    elsewhere = write_run(tmp_path / "elsewhere", 9, 0.5, corpus="another corpus")  # same count, same unseen mask
    with pytest.raises(CompareError, match=f"{elsewhere}: its 300 test queries are not {a[0]}'s .*another corpus"):
        compare_runs(runs(a), runs([b[0], elsewhere]))
    moved = write_run(tmp_path / "moved", 7, 0.5, unseen=np.arange(300) % 3 == 0)
    with pytest.raises(CompareError, match=f"{moved}: its unseen test queries differ"):
        compare_runs(runs(a), runs([b[0], moved]))
    twin = write_run(tmp_path / "twin", 1, 0.5)
    with pytest.raises(
        CompareError, match=f"--b: {b[1]} and {twin} were both trained with seed=1; the training run is the unit"
    ):
        compare_runs(runs(a), runs([*b, twin]))
    with pytest.raises(CompareError, match=f"--a: {a[0]} and {a[0] / 'best'} are the same run"):
        compare_runs(runs([a[0], a[0] / "best"]), runs(b))
    with pytest.raises(CompareError, match=r"--a: 1 run \(.*a0\); the seed-aware test needs at least 2 runs per group"):
        compare_runs(runs(a[:1]), runs(b))
    with pytest.raises(CompareError, match="the same run is in --a and --b"):
        compare_runs(runs(a), runs([a[1], b[0]]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompareError, match=f"{tmp_path / 'empty'}: no best_ranks.npz in it, its best/"):
        load_run(tmp_path / "empty")
    with pytest.raises(CompareError, match="nowhere: no such folder"):
        load_run(tmp_path / "nowhere")
    bad = write_run(tmp_path / "bad", 8, 0.5, layout="checkpoint")
    (bad / "best_ranks.npz").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(CompareError, match=f"{bad}: .*best_ranks.npz cannot be read"):
        load_run(bad)
    assert "cannot be read" in capsys.readouterr().out  # the warning names the file and the reason


def test_relative_paths_are_printed_and_recorded_as_given(tmp_path, capsys, monkeypatch):
    """compare printed "rows written to $TMPDIR/..." for the path given; relative paths stay as given."""
    a, b = groups(tmp_path, 0.4, 0.6, seeds=(0, 1))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["compare", "--a", "a0", "a1", "--b", "b0", "./b1", "--json", "out/cmp.json", "--quiet"]) == 0
    assert "rows written to out/cmp.json\n" in capsys.readouterr().out
    doc = json.loads((tmp_path / "out" / "cmp.json").read_text())
    assert doc["a"]["runs"] == ["a0", "a1"] and doc["b"]["runs"] == ["b0", "./b1"]


def test_ranks_kept_without_query_texts_are_compared_by_count_with_a_note(tmp_path, capsys):
    a, b = groups(tmp_path, 0.5, 0.5, seeds=(0, 1))
    old = write_run(tmp_path / "old", 5, 0.5, corpus=None)
    assert compare_runs([load_run(f) for f in a], [load_run(b[0]), load_run(old)])
    assert f"{old} record(s) no query texts" in capsys.readouterr().out


def test_config_notes_say_what_differs(tmp_path):
    a = [load_run(write_run(tmp_path / f"a{s}", s, 0.5)) for s in (0, 1)]
    b = [load_run(write_run(tmp_path / f"b{s}", s, 0.5, config={"lr": 0.001})) for s in (0, 1)]
    mixed = [load_run(write_run(tmp_path / f"m{s}", s, 0.5, config={"margin": 0.1 * (s + 1)})) for s in (0, 1)]
    assert config_notes(a, b, "old", "new") == ["new differs from old in lr=0.001 (vs 0.0003)"]
    assert config_notes(a, a, "x", "y") == ["x and y have the same config but for the seed"]
    assert config_notes(a, mixed, "x", "y")[0] == "the runs of y differ in margin; compared as seeds of one procedure"


def test_cli_compare_prints_tables_writes_json_and_refuses_with_exit_2(tmp_path, capsys):
    a, b = groups(tmp_path, 0.4, 0.6)
    out = tmp_path / "cmp.json"
    code = cli.main(
        [
            "compare",
            "--a",
            *map(str, a),
            "--b",
            *map(str, b),
            "--label-a",
            "recipe",
            "--label-b",
            "new",
            "--json",
            str(out),
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "test split, all queries: 300 queries" in printed and "test split, unseen queries" in printed
    assert "verdict: new beats recipe on the unseen mean acc@1" in printed and " *" in printed
    doc = json.loads(out.read_text())
    assert doc["a"]["seeds"] == [0, 1, 2] and doc["b"]["label"] == "new" and len(doc["rows"]) == 18
    assert all(r["better"] == "new" for r in doc["rows"])
    # paths recorded: relative to the current folder, runnable from it, never absolute nor a placeholder
    assert not absolute_paths_in(out.read_text()) and "$TMPDIR" not in printed + out.read_text()
    assert [Path(f).resolve() for f in doc["a"]["runs"]] == [f.resolve() for f in a]
    assert f"rows written to {out}\n" in printed  # the path given, as given
    before = out.read_text()
    code = cli.main(["compare", "--a", str(a[0]), "--b", *map(str, b), "--json", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err
    assert f"--a: 1 run ({a[0]}); the seed-aware test needs at least 2 runs" in captured.err
    assert out.read_text() == before  # nothing already written is lost
    assert cli.main(["compare", "--a", *map(str, a), "--b", *map(str, b), "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_cli_compare_runs_where_ray_cannot_be_imported(tmp_path):
    """``counterarg compare`` is analysis of run folders: in a fresh interpreter whose ``ray`` is a
    package that refuses to import (first on the path, before the installed Ray), it compares two
    groups made by the fixtures and writes its verdict; the same interpreter cannot import Ray."""
    import os
    import subprocess
    import sys

    blocked = tmp_path / "blocked"
    (blocked / "ray").mkdir(parents=True)
    (blocked / "ray" / "__init__.py").write_text('raise ImportError("ray is not importable here")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), os.environ.get("PYTHONPATH", "")])}
    probe = subprocess.run([sys.executable, "-c", "import ray"], env=env, capture_output=True, text=True)
    assert probe.returncode == 1 and "ray is not importable here" in probe.stderr

    a, b = groups(tmp_path, 0.4, 0.6)
    out = tmp_path / "cmp.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "counterarg",
            "compare",
            "--a",
            *map(str, a),
            "--b",
            *map(str, b),
            "--label-a",
            "recipe",
            "--label-b",
            "new",
            "--json",
            str(out),
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "verdict: new beats recipe on the unseen mean acc@1" in run.stdout
    assert len(json.loads(out.read_text())["rows"]) == 18
