"""The sweep scripts' shared command line (counterarg.sweep.cli): flags fail with a named error and
exit 2, exit codes, folder names, the smoke-test encoder, absolute paths."""

from __future__ import annotations

import os

import pytest

from counterarg.analysis.trials import TrialRecord
from counterarg.config import ConfigError
from counterarg.sweep.cli import absolute_paths, base_from_args, smoke_encoder_dir, sweep_name
from counterarg.sweep.recovery import SweepStateError
from counterarg.sweep.runner import SweepResult

from .conftest import sweep_script


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "enc").mkdir()
    got = absolute_paths({"corpus": "data/c.zip", "cache_dir": "~/cache", "encoder": "enc", "epochs": 3})
    assert got["corpus"] == str(tmp_path / "data" / "c.zip")
    assert got["cache_dir"].startswith("/") and "~" not in got["cache_dir"]
    assert got["encoder"] == str(tmp_path / "enc") and got["epochs"] == 3
    assert absolute_paths({"encoder": "bert-base-uncased"})["encoder"] == "bert-base-uncased"
    assert absolute_paths({"corpus": None})["corpus"] is None


@pytest.mark.parametrize(
    "script, flags, match",
    [
        ("search_margin_lr", ["--num-samples", "-1"], "--num-samples: must be between 1 and 1000, got -1"),
        ("search_margin_lr", ["--num-samples", "0"], "--num-samples: must be between 1 and 1000, got 0"),
        ("search_margin_lr", ["--num-samples", "100000"], "must be between 1 and 1000"),
        ("search_margin_lr", ["--epochs", "0"], "--epochs: must be >= 1, got 0"),
        ("search_margin_lr", ["--cpus-per-trial", "0"], "--cpus-per-trial: must be a finite number >= 1"),
        ("search_margin_lr", ["--num-cpus", "2", "--cpus-per-trial", "64"], "64 is more than the 2 CPU"),
        ("search_margin_lr", ["--margin-range", "3,0.1"], "--margin-range: expected 0 < LO < HI"),
        ("search_margin_lr", ["--lr-range", "0,0.1"], "--lr-range: expected 0 < LO < HI"),
        ("search_margin_lr", ["--seeds", "a,b"], "got 'a' in 'a,b'"),
        ("search_margin_lr", ["--strategy", "decy"], "unknown strategy 'decy'; did you mean 'decay'"),
        ("search_margin_lr", ["--set", "foo=1"], "unknown config field.*foo"),
        ("compare_strategies", ["--strategies", "fixed;decy"], "did you mean 'decay'"),
        ("compare_strategies", ["--seeds", "0,x"], "got 'x'"),
        ("compare_strategies", ["--epochs", "0"], "must be >= 1"),
        ("compare_strategies", ["--resume"], "nothing to resume at"),
        ("compare_strategies", ["--seeds", "0,0"], "--seeds repeats 0 in '0,0': two identical trials"),
        ("compare_strategies", ["--seeds", ""], "--seeds holds no seed: ''"),
        ("compare_strategies", ["--seeds", "-1"], "--seeds: seed -1 is out of range"),
        ("compare_strategies", ["--strategies", ";;"], "--strategies names no strategy"),
        (
            "compare_strategies",
            ["--strategies", "decay;decay"],
            r"two trials would be identical \(reference: decay 0.8-0.02 seed 0\)",
        ),
        ("compare_strategies", ["--num-cpus", "1000"], "--num-cpus: must be between 1 and"),
        ("pbt_schedule", ["--seeds", ""], "--seeds holds no seed"),
        (
            "compare_strategies",
            ["--methods", "recipee"],
            "argument --methods: unknown method 'recipee'; did you mean 'recipe'",
        ),
        ("compare_strategies", ["--methods", "recipe,referenc"], "unknown method 'referenc'"),
        ("compare_strategies", ["--methods", ","], "--methods names no method"),
        ("compare_strategies", ["--strategies", "decay;recipe"], "'recipe' is a method, not a strategy"),
        ("pbt_schedule", ["--method", "recip"], "argument --method: unknown method 'recip'"),
        ("search_margin_lr", ["--method", "ref"], "argument --method: unknown method 'ref'"),
        ("pbt_schedule", ["--method", "reference,recipe"], "argument --method: expected one method"),
    ],
)
def test_sweep_flags_fail_with_a_named_error_and_exit_2(script, flags, match, tmp_path, capsys):
    """Bad sweep flags stop before any work, exit 2, no traceback; --resume with
    nothing to resume is an error, not a silent fresh start."""
    with pytest.raises(SystemExit) as e:
        sweep_script(script)(["--storage", str(tmp_path), "--name", "x", *flags])
    assert e.value.code == 2
    err = capsys.readouterr().err
    import re

    assert re.search(match, err), err
    assert "Traceback" not in err and not (tmp_path / "x").exists()


def test_sweep_with_errored_trials_exits_non_zero_and_names_them(monkeypatch, tmp_path, capsys):
    """A sweep whose trials errored exited 0."""
    import counterarg.sweep.runner as runner_mod

    records = [
        TrialRecord("trial_ok", {"seed": 0}, status="TERMINATED"),
        TrialRecord("trial_bad", {"seed": 1}, status="ERROR", error="TrainingError: loss is nan"),
    ]
    monkeypatch.setattr(runner_mod, "run_sweep", lambda *a, **k: SweepResult("x", tmp_path, records, [], "table", 1.0))
    assert sweep_script("compare_strategies")(["--storage", str(tmp_path), "--seeds", "0"]) == 1
    err = capsys.readouterr().err
    assert "trial_bad: TrainingError: loss is nan" in err and "trial_ok" not in err
    records[1].status, records[1].ended = "TERMINATED", "epochs"
    assert sweep_script("compare_strategies")(["--storage", str(tmp_path), "--seeds", "0"]) == 0


def test_second_sweep_with_the_same_name_gets_a_named_error(tmp_path, capsys):
    """Two sweeps with the same --name both ran; the second now stops at once."""
    from counterarg.core.io import exclusive_lock

    with exclusive_lock(tmp_path / ".x.lock", "first driver"):
        with pytest.raises(SystemExit) as e:
            sweep_script("compare_strategies")(["--storage", str(tmp_path), "--name", "x", "--seeds", "0"])
    assert e.value.code == 2
    assert f"sweep folder {tmp_path / 'x'} is in use by another process" in capsys.readouterr().err


def test_smoke_encoder_folder_is_per_user_and_checked(tmp_path):
    """/tmp/counterarg-smoke-encoder was shared and reused without a check."""
    import argparse

    assert smoke_encoder_dir().name == f"counterarg-smoke-encoder-{os.getuid()}"
    args = argparse.Namespace(smoke_test=True, corpus=None, encoder=None, epochs=None, overrides=[])
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ConfigError, match="not a folder owned by you and writable only by you"):
        base_from_args(args, smoke_dir=shared)
    own = tmp_path / "own"
    assert base_from_args(args, smoke_dir=own)["encoder"] == str(own)
    assert (own.stat().st_mode & 0o777) == 0o700
    weights = next(own.glob("*.safetensors"))
    weights.write_bytes(b"changed since")  # reused only when its files match their manifest
    base_from_args(args, smoke_dir=own)
    assert weights.stat().st_size > 1000


def test_user_sweeps_get_their_own_folder_and_resume_finds_the_newest(tmp_path, capsys):
    from argparse import Namespace

    args = Namespace(name=None, smoke_test=False, resume=False, storage=str(tmp_path))
    name = sweep_name(args, "compare_strategies")
    assert name.startswith("compare_strategies_20") and name != "compare_strategies"  # never the reference
    assert sweep_name(Namespace(**{**vars(args), "smoke_test": True}), "compare_strategies").startswith(
        "compare_strategies_smoke_20"
    )
    assert sweep_name(Namespace(**{**vars(args), "name": "mine"}), "compare_strategies") == "mine"
    with pytest.raises(SweepStateError, match="no earlier compare_strategies_<date> sweep"):
        sweep_name(Namespace(**{**vars(args), "resume": True}), "compare_strategies")
    for n in (
        "compare_strategies_2026-01-01_00-00-00",
        "compare_strategies_2026-02-01_00-00-00",
        "compare_strategies_smoke_2026-03-01_00-00-00",
    ):
        (tmp_path / n).mkdir()
    assert (
        sweep_name(Namespace(**{**vars(args), "resume": True}), "compare_strategies")
        == "compare_strategies_2026-02-01_00-00-00"
    )
    assert "resuming the newest" in capsys.readouterr().out


@pytest.mark.slow
def test_a_toy_schedule_runs_through_set_and_the_strategy_list(monkeypatch, tmp_path, tiny_encoder, capsys):
    """Adding a schedule is one registry entry: registered once, it trains through ``counterarg train
    --set schedule=<toy>`` and becomes trials through a sweep script's ``--strategies``."""
    import json

    import counterarg.sweep.runner as runner_mod
    from counterarg.analysis.trials import strategy_label
    from counterarg.cli import main as cli_main
    from counterarg.sampling import schedules

    monkeypatch.setattr(schedules, "SCHEDULES", dict(schedules.SCHEDULES))  # undone after the test
    schedules.register(
        schedules.Schedule(
            "halving", lambda c, epoch: c.rate / 2**epoch, fields=("rate",), strategy={"rate": 0.5}, short=("rate",)
        )
    )
    # --set on the training command line: the rate each epoch mined with is the toy's
    out = tmp_path / "run"
    assert (
        cli_main(
            [
                "train",
                "--out",
                str(out),
                "--quiet",
                "--epochs",
                "2",
                "--set",
                f"encoder={tiny_encoder}",
                "--set",
                "schedule=halving",
                "--set",
                "rate=0.8",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["mining/rate"] for r in rows] == pytest.approx([0.8, 0.4])
    # --strategies on a sweep script: the trial configs it builds (run_sweep is not started)
    built = {}

    def fake_run_sweep(sweep, **kw):
        built["sweep"] = sweep
        return SweepResult("x", tmp_path, [], [], "table", 1.0)

    monkeypatch.setattr(runner_mod, "run_sweep", fake_run_sweep)
    assert (
        sweep_script("compare_strategies")(
            [
                "--storage",
                str(tmp_path / "results"),
                "--name",
                "toy",
                "--strategies",
                "halving;halving:rate=0.6;decay",
                "--methods",
                "reference",
                "--seeds",
                "0,1",
            ]
        )
        == 0
    )
    variants = built["sweep"].variants
    assert [(v["schedule"], v.get("rate"), v["seed"]) for v in variants] == [
        ("halving", 0.5, 0),
        ("halving", 0.5, 1),
        ("halving", 0.6, 0),
        ("halving", 0.6, 1),
        ("decay", None, 0),
        ("decay", None, 1),
    ]
    assert [strategy_label(v) for v in variants[::2]] == ["halving 0.5", "halving 0.6", "decay 0.8-0.02"]
    with pytest.raises(SystemExit) as e:  # unregistered, the name is an error naming the known ones
        monkeypatch.setattr(schedules, "SCHEDULES", {k: v for k, v in schedules.SCHEDULES.items() if k != "halving"})
        sweep_script("compare_strategies")(
            ["--storage", str(tmp_path / "results"), "--name", "toy2", "--strategies", "halving"]
        )
    assert e.value.code == 2 and "unknown strategy 'halving'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, match",
    [
        (
            ["--strategies", "fixed", "--seeds", "0,1"],
            "--resume: strategies differ from the sweep's: it runs reference: decay 0.8-0.02; recipe: decay 0.8-0.02, "
            "this command asks for reference: fixed 0.8; recipe: fixed 0.8",
        ),
        (
            ["--strategies", "decay", "--seeds", "0,2"],
            "--resume: seeds differ from the sweep's: it runs 0,1, this command asks for 0,2",
        ),
        (["--strategies", "decay;random", "--seeds", "0"], "strategies differ.*; seeds differ"),
    ],
)
def test_resume_with_another_grid_names_what_changed(flags, match, tmp_path, capsys):
    """--resume with other --strategies or --seeds silently resumed the old grid."""
    import json
    import re

    from counterarg.sweep.spaces import strategy_grid

    exp = tmp_path / "x"
    exp.mkdir()
    ran = strategy_grid(["decay"], [0, 1])
    (exp / "searcher-state-2026-01-01_00-00-00.pkl").write_text(json.dumps({"variants": ran, "next_index": 2}))
    with pytest.raises(SystemExit) as e:
        sweep_script("compare_strategies")(["--storage", str(tmp_path), "--name", "x", "--resume", *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and re.search(match, err), err
    assert "Traceback" not in err and not (tmp_path / ".x.lock").exists()
    # the same grid passes this check (and stops at the missing experiment state)
    with pytest.raises(SystemExit):
        sweep_script("compare_strategies")(
            ["--storage", str(tmp_path), "--name", "x", "--resume", "--strategies", "decay", "--seeds", "0,1"]
        )
    assert "nothing to resume at" in capsys.readouterr().err


def _printed_exports(text: str) -> list[str]:
    """The --out of every printed export command, parsed as a shell would."""
    import shlex

    return [shlex.split(line)[-1] for line in text.splitlines() if line.strip().startswith("counterarg export")]


def test_printed_export_commands_write_inside_the_sweep_folder(tmp_path, monkeypatch):
    """The printed `--out models/<slug>` was relative to wherever the user stood (a
    folder git does not ignore) and the same in every sweep; it is now inside the sweep's folder."""
    from pathlib import Path

    from counterarg.sweep.cli import best_commands
    from counterarg.sweep.runner import Sweep

    repo = tmp_path / "repo"
    monkeypatch.chdir(repo.mkdir() or repo)
    rows = []
    for name in ("sweep_a", "sweep_b"):
        ck = repo / "results" / name / "trial_1_fixed-0_seed0" / "best"
        rows.append(
            {
                "group": "recipe: fixed 0",
                "seed": 0,
                "trial_id": "t",
                "best_epoch": 3,
                "finished": True,
                "validation_unseen/mean/acc@1": 0.5,
                "best_checkpoint": str(ck),
            }
        )
    outs = []
    for name, row in zip(("sweep_a", "sweep_b"), rows):
        sweep_dir = repo / "results" / name
        sweep = Sweep(name=name, variants=[{}], metric="validation_unseen/mean/acc@1")
        text = best_commands([row], sweep, None, sweep_dir)
        (out,) = _printed_exports(text)
        assert not Path(out).is_absolute() and str(repo) not in text, text  # no path of this machine
        resolved = (Path.cwd() / out).resolve()
        assert resolved.is_relative_to(sweep_dir.resolve()), (out, sweep_dir)
        assert f"--checkpoint results/{name}/trial_1_fixed-0_seed0/best" in text
        outs.append(resolved)
    assert outs[0] != outs[1]  # a second sweep never prints the first one's folder


def test_export_folder_of_the_default_storage_is_ignored_by_git():
    """Exports under results/<sweep>/models/ leave `git status` empty (the committed
    reference folders included)."""
    import shutil
    import subprocess
    from pathlib import Path

    from counterarg.sweep.cli import export_folder

    root = Path(__file__).resolve().parents[2]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    for sweep in (
        "compare_strategies",
        "compare_strategies_2026-01-01_00-00-00",
        "pbt_schedule",
        "pbt_schedule_replay",
    ):
        path = export_folder(Path("results") / sweep, "reference: decay 0.8-0.02") / "model.safetensors"
        done = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=root)
        assert done.returncode == 0, f"{path} is not ignored by git"


@pytest.mark.parametrize("script", ["compare_strategies", "search_margin_lr", "search_recipe", "pbt_schedule"])
def test_sweep_help_states_configs_defaults(script, capsys):
    """--help said "--epochs (default: Config default, 20)" and "3 strategies x 3 seeds ...
    in results/compare_strategies/" while Config trains 30 epochs, there are 4 strategies and each
    run gets a timestamped folder. --help now reads the defaults from the code."""
    import re

    from counterarg.config import FROZEN_RECIPE, Config

    # the strategy sweeps' trials start from the frozen preset; the searches from the Config defaults
    epochs = FROZEN_RECIPE["epochs"] if script in ("compare_strategies", "pbt_schedule") else Config().epochs
    with pytest.raises(SystemExit) as done:
        sweep_script(script)(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    said = re.search(r"--epochs EPOCHS epochs per trial, >= 1 \(default: (\d+)\)", text)
    assert said and int(said.group(1)) == epochs, text
    description = text.split("options:")[0]
    for n in re.findall(r"(\d+) epochs", description):  # any epoch count the description states is the trials'
        assert int(n) == epochs, description
    assert "results/compare_strategies/" not in description  # user sweeps never write the committed folder


def test_results_readme_names_the_default_sweep_folder():
    """Results/README.md said the default --name is "the script's name"."""
    import re
    from pathlib import Path
    from types import SimpleNamespace

    text = (Path(__file__).resolve().parents[2] / "results" / "README.md").read_text(encoding="utf-8")
    assert "default: a fresh `<script>_<date>_<time>` per run" in text
    for smoke, doc in ((False, "<script>_<date>_<time>"), (True, "<script>_smoke_<date>_<time>")):
        assert f"`{doc}`" in text
        name = sweep_name(SimpleNamespace(name=None, smoke_test=smoke, resume=False), "compare_strategies")
        pattern = (
            doc.replace("<script>", "compare_strategies")
            .replace("<date>", r"\d{4}-\d\d-\d\d")
            .replace("<time>", r"\d\d-\d\d-\d\d")
        )
        assert re.fullmatch(pattern, name), (name, doc)


@pytest.mark.parametrize(
    "flags, labels",
    [
        (
            [],
            [
                "reference: fixed 0.8",
                "reference: decay 0.8-0.02",
                "reference: random",
                "recipe",
                "recipe: fixed 0.5",
                "recipe: decay 0.8-0.02",
                "recipe: random",
                "recipe: table 0.2*4,0.1*14,0",
            ],
        ),
        (
            ["--methods", "recipe"],
            ["recipe", "recipe: fixed 0.5", "recipe: decay 0.8-0.02", "recipe: random", "recipe: table 0.2*4,0.1*14,0"],
        ),
        (
            ["--methods", "recipe,reference", "--strategies", "fixed:rate=0;random"],
            ["recipe", "recipe: random", "reference: fixed 0", "reference: random"],
        ),
    ],
)
def test_methods_flag_crosses_strategies_with_methods(flags, labels, monkeypatch, tmp_path):
    """compare_strategies builds method x strategy x seed trials: the main job by default, one
    method's own list with --methods alone, every given strategy under every given method."""
    import counterarg.sweep.runner as runner_mod

    built = {}

    def fake_run_sweep(sweep, **kw):
        built["sweep"] = sweep
        return SweepResult("x", tmp_path, [], [], "table", 1.0)

    monkeypatch.setattr(runner_mod, "run_sweep", fake_run_sweep)
    assert (
        sweep_script("compare_strategies")(["--storage", str(tmp_path), "--name", "m", "--seeds", "0,1", *flags]) == 0
    )
    variants = built["sweep"].variants
    assert [v["label"] for v in variants[::2]] == labels and [v["seed"] for v in variants[:2]] == [0, 1]


def test_a_full_storage_disk_ends_the_sweep_with_a_named_error(monkeypatch, tmp_path, capsys):
    """Tune's own write to a full storage disk was a raw Ray traceback; it is one
    line naming the full disk, what was kept and the resume command, exit 1."""
    import errno

    import counterarg.sweep.runner as runner_mod

    def full(sweep, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "m" / "experiment_state.json"))

    monkeypatch.setattr(runner_mod, "run_sweep", full)
    with pytest.raises(SystemExit) as done:
        sweep_script("compare_strategies")(["--storage", str(tmp_path), "--name", "m", "--seeds", "0"])
    err = capsys.readouterr().err
    assert done.value.code == 1 and "Traceback" not in err
    assert f"disk full: could not write {tmp_path / 'm'}" in err and "--resume" in err

    def other(sweep, **kw):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(runner_mod, "run_sweep", other)
    with pytest.raises(OSError, match="Permission denied"):  # anything else is not called a full disk
        sweep_script("compare_strategies")(["--storage", str(tmp_path), "--name", "m2", "--seeds", "0"])


# ----------------------------------------------------------------------------- --help: fast, complete, documented
SCRIPTS = ("compare_strategies", "race_strategies", "pbt_schedule", "search_margin_lr", "search_recipe")


def _parser(script: str):
    import importlib.util

    from .conftest import REPO

    spec = importlib.util.spec_from_file_location(f"sweep_{script}", REPO / "sweeps" / f"{script}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build_parser()


def test_every_script_help_imports_no_ray_torch_or_pandas():
    """A sweep script's --help took seconds (Ray, torch, pandas, matplotlib at import); it parses first now."""
    from conftest import heavy_loaded_by

    from .conftest import REPO

    loaded = {
        s: heavy_loaded_by(
            f"import runpy, sys; sys.argv = [{s!r}, '--help']; "
            f"runpy.run_path({str(REPO / 'sweeps' / f'{s}.py')!r}, run_name='__main__')"
        )
        for s in SCRIPTS
    }
    assert not {s: libs for s, libs in loaded.items() if libs}, loaded


def test_every_script_option_has_help_shows_its_default_and_the_docs_table_agrees():
    """Every option of every sweep script has help and shows its default (--seeds, --gpus-per-trial and
    --scheduler showed none); --epochs and --encoder show the Config default of the script's preset;
    docs/configuration.md lists the same options with the same defaults."""
    import re
    from pathlib import Path

    from conftest import documented_options, walk_options

    from counterarg.config import Config

    from .conftest import REPO

    doc = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    for script in SCRIPTS:
        parser = _parser(script)
        options = walk_options(parser)
        assert documented_options(doc, f"sweeps/{script}.py") == {f: s or "none" for f, _, s in options}, script
        start = Config.from_dict(parser.config_start)
        for flags, action, shown in options:
            assert action.help, f"{script} {flags} has no help"
            if isinstance(action.default, tuple):  # a range: the shown text parses to it
                assert shown is not None and action.type(shown) == action.default, (script, flags, shown)
            elif isinstance(action.default, Path):  # shown from the repository root
                assert shown is not None and action.default == REPO / shown, (script, flags, shown)
            elif action.default is not None and action.default is not False and not isinstance(action.default, list):
                assert shown is not None and str(action.default) in shown, (script, flags, shown)
            if action.dest in ("epochs", "encoder"):
                assert re.search(rf"(?<![\w.]){re.escape(str(getattr(start, action.dest)))}(?![\w.])", shown or ""), (
                    script,
                    flags,
                    shown,
                )
        for flag in ("--seeds", "--gpus-per-trial"):
            assert (
                "default" in parser._option_string_actions[flag].help
                or parser._option_string_actions[flag].default is not None
            ), (script, flag)


def test_config_names_what_every_trial_starts_from(tmp_path):
    """--config: a preset's fields, none for `default` (the Config defaults), a JSON file's fields; a
    missing file or an unknown field is a ConfigError naming it; without it the script's own start."""
    from counterarg.config import FROZEN_RECIPE, ConfigError
    from counterarg.sweep.cli import base_from_args, start_fields

    assert start_fields("frozen") == FROZEN_RECIPE
    assert start_fields("default") == {}
    good = tmp_path / "start.json"
    good.write_text('{"finetune": "top:2", "epochs": 3}', encoding="utf-8")
    assert start_fields(str(good)) == {"finetune": "top:2", "epochs": 3}
    bad = tmp_path / "bad.json"
    bad.write_text('{"finetnue": "top:2"}', encoding="utf-8")
    with pytest.raises(ConfigError, match="finetnue"):
        start_fields(str(bad))
    with pytest.raises(ConfigError, match="nope.json"):
        start_fields(str(tmp_path / "nope.json"))
    parser = _parser("race_strategies")
    assert base_from_args(parser.parse_args([]), start=FROZEN_RECIPE)["finetune"] == "none"
    assert "finetune" not in base_from_args(parser.parse_args(["--config", "default"]), start=FROZEN_RECIPE)


def test_the_printed_resume_command_reads_back_in_a_shell(monkeypatch, capsys):
    """A Ctrl-C prints the command that resumes the sweep; a flag value holding ';' or spaces (the
    --strategies list) is quoted, so pasting it into a shell gives the script the same arguments."""
    import shlex
    import sys

    from counterarg.sweep import runner
    from counterarg.sweep.cli import run_from_args

    argv = ["sweeps/race_strategies.py", "--strategies", "fixed:rate=0;decay", "--name", "my race"]
    monkeypatch.setattr(sys, "argv", argv)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_sweep", interrupted)
    args = _parser("race_strategies").parse_args(argv[1:])
    with pytest.raises(SystemExit) as e:
        run_from_args(args, sweep=None)
    assert e.value.code == 130
    command = capsys.readouterr().err.strip().splitlines()[-1]
    assert shlex.split(command) == ["python", *argv, "--resume"]
