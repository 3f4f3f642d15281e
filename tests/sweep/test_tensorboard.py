"""TensorBoard as a sweep's dashboard (counterarg.sweep.tensorboard, hparams_table, strategy_runs):
the trials' events on hand-made trials; what TensorBoard's own server serves over them; and a smoke
sweep opened in Debian's headless Chromium, with screenshots as test artefacts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from counterarg.analysis.methods import labelled
from counterarg.analysis.trials import TrialRecord
from counterarg.sweep.hparams_table import LEAD, tag_of
from counterarg.sweep.strategy_runs import STRATEGIES_DIR, write_strategy_runs
from counterarg.sweep.tensorboard import SweepTBXLogger, epoch_scalars

from .tensorboard_server import (
    artifacts_dir,
    chromium,
    deep_text,
    get,
    hparams_experiment,
    no_browser_reason,
    tensorboard,
    wait_for,
)

METRIC = "validation_unseen/mean/acc@1"


class _Trial:
    """What the logger reads of a Tune trial (hashable, as Tune's are)."""

    def __init__(self, root: Path, trial_id: str, config: dict):
        self.trial_id, self.config, self.evaluated_params = trial_id, config, {}
        self.local_path = str(root / f"trial_{trial_id}_{config['schedule']}_seed{config['seed']}")

    def init_local_path(self):
        os.makedirs(self.local_path, exist_ok=True)


def _accumulator(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return acc


def _hparams_data(folder) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    return {
        tag: plugin_data_pb2.HParamsPluginData.FromString(raw)
        for tag, raw in _accumulator(folder).PluginTagToContent("hparams").items()
    }


CONFIGS = [
    labelled(c, "recipe")
    for c in (  # as the sweep makes them: each carries its method and name
        {"schedule": "fixed", "rate": 0.8, "seed": 0},
        {"schedule": "fixed", "rate": 0.8, "seed": 1},
        {"schedule": "decay", "rate_start": 0.8, "rate_step": 0.02, "seed": 0},
        {"schedule": "decay", "rate_start": 0.8, "rate_step": 0.02, "seed": 1},
    )
]


def _row(epoch: int, value: float, best_epoch: int) -> dict:
    return {
        "epoch": epoch,
        "training_iteration": epoch,
        "done": False,
        "pid": 1,
        METRIC: value,
        "test_unseen/mean/acc@1": value / 2,
        "validation_unseen/sdoc/acc@1": value + 0.1,
        "test/mean/acc@1": value / 3,
        "train/loss": 1.0 / epoch,
        "select/best_epoch": best_epoch,
    }


def hand_sweep(root: Path, epochs: int = 3) -> list[TrialRecord]:
    """Four trials through the logger as Tune would drive it (the last one stopped after epoch 2 of
    3: unfinished), then the sweep's strategy runs; returns the records."""
    configs = [{**c, "epochs": epochs} for c in CONFIGS]
    logger = SweepTBXLogger(["seed", "schedule"], metric=METRIC, configs=configs)
    records = []
    for i, cfg in enumerate(configs):
        trial = _Trial(root, f"t{i}", cfg)
        logger.log_trial_start(trial)
        values = [0.2 + i / 10, 0.5 + i / 10, 0.4 + i / 10][: 2 if i == 3 else epochs]  # epoch 2 is the best
        history = []
        for e, v in enumerate(values, start=1):
            row = _row(e, v, best_epoch=min(e, 2))
            logger.log_trial_result(e, trial, row)
            history.append(row)
        logger.log_trial_end(trial)
        records.append(
            TrialRecord(
                trial.trial_id, cfg, history, path=trial.local_path, status="UNFINISHED" if i == 3 else "TERMINATED"
            )
        )
    write_strategy_runs(records, root, METRIC)
    return records


def test_trials_log_their_metrics_by_name_and_the_sweep_columns(tmp_path):
    records = hand_sweep(tmp_path)
    assert not list(tmp_path.glob("events.out.tfevents.*"))  # nothing at the root: no "." run
    trial = Path(records[0].path)
    acc = _accumulator(trial)
    tags = acc.Tags()["scalars"]
    assert {"validation_unseen/mean/acc_1", "validation_unseen/sdoc/acc_1", "train/loss"} <= set(tags)
    assert not [t for t in tags if t.startswith("ray/") or "/" not in t], tags  # no prefix, no Tune bookkeeping
    assert [e.step for e in acc.Scalars("validation_unseen/mean/acc_1")] == [1, 2, 3]
    selected = acc.Scalars("selected/validation_unseen/mean/acc_1")  # logged at each newly selected epoch
    assert [(e.step, round(e.value, 6)) for e in selected] == [(1, 0.2), (2, 0.5)]
    for rec in records:  # every trial holds the same experiment: whichever TensorBoard reads first
        data = _hparams_data(rec.path)
        exp = data["_hparams_/experiment"].experiment
        assert [h.display_name for h in exp.hparam_infos] == [
            "method",
            "strategy",
            "seed",
            "schedule",
            "rate",
            "rate_start",
            "rate_step",
            "rate_floor",
            "ended",
        ]
        assert all(h.differs for h in exp.hparam_infos)  # else TensorBoard moves a column behind the others
        assert [m.display_name for m in exp.metric_infos][:3] == [
            METRIC,
            "test_unseen/mean/acc@1",
            "validation/mean/acc@1",
        ]
        if not rec.finished:  # interrupted: no row yet (TensorBoard keeps the first; --resume writes it)
            assert "_hparams_/session_start_info" not in data and "_hparams_/session_end_info" not in data
            continue
        start = data["_hparams_/session_start_info"].session_start_info
        assert start.hparams["09 ended"].string_value == "epochs"
        assert start.group_name == rec.trial_id and start.hparams["03 seed"].string_value == str(rec.config["seed"])
        assert start.hparams["02 strategy"].string_value == (
            "fixed 0.8" if rec.config["schedule"] == "fixed" else "decay 0.8-0.02"
        )
        assert ("05 rate" in start.hparams) == (rec.config["schedule"] == "fixed")  # only what it reads
        assert data["_hparams_/session_end_info"].session_end_info.status == 1  # STATUS_SUCCESS


def test_epoch_scalars_keep_metrics_and_drop_tune_bookkeeping():
    row = {
        "epoch": 2,
        "training_iteration": 2,
        "time_total_s": 9.0,
        "done": False,
        "validation/sdoc/acc@1": 0.5,
        "train/loss": float("nan"),
        "mining/share_hard": 1,
        "trial_id": "x",
        "select/best_epoch": 2,
    }
    assert epoch_scalars(row) == {"validation/sdoc/acc_1": 0.5, "mining/share_hard": 1.0, "select/best_epoch": 2.0}


def test_strategy_runs_average_the_finished_seeds(tmp_path):
    from tensorboard.plugins.custom_scalar import layout_pb2

    records = hand_sweep(tmp_path)
    runs = sorted(p.name for p in (tmp_path / STRATEGIES_DIR).iterdir())
    assert runs == ["recipe-decay-0.8-0.02", "recipe-fixed-0.8"]
    decay = _accumulator(tmp_path / STRATEGIES_DIR / "recipe-decay-0.8-0.02")
    # the decay trial t3 stopped at epoch 2 of 3: it is left out, t2 alone is averaged
    assert [round(e.value, 6) for e in decay.Scalars("validation_unseen/mean/acc_1")] == [0.4, 0.7, 0.6]
    assert [e.value for e in decay.Scalars("strategy_band/validation_unseen/mean/acc_1/lower")] == [
        e.value for e in decay.Scalars("strategy_band/validation_unseen/mean/acc_1/upper")
    ]  # one seed: no band
    note = decay.Tensors("strategy/text_summary")[0].tensor_proto.string_val[0].decode()
    assert note.startswith("recipe: decay 0.8-0.02: mean over 1/2 seeds (1 unfinished)"), note
    fixed = _accumulator(tmp_path / STRATEGIES_DIR / "recipe-fixed-0.8")
    means = [e.value for e in fixed.Scalars("strategy_band/validation_unseen/mean/acc_1/mean")]
    lower = [e.value for e in fixed.Scalars("strategy_band/validation_unseen/mean/acc_1/lower")]
    assert means == pytest.approx([0.25, 0.55, 0.45])  # seeds 0 and 1: 0.2/0.3, 0.5/0.6, 0.4/0.5
    assert [m - lo for m, lo in zip(means, lower)] == pytest.approx([0.0707107] * 3)  # std (ddof 1)
    layout = layout_pb2.Layout.FromString(fixed.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = {c.title: c for cat in layout.category for c in cat.chart}
    assert list(charts)[:2] == [METRIC, "test_unseen/mean/acc@1"]
    assert charts[METRIC].margin.series[0].lower == "strategy_band/validation_unseen/mean/acc_1/lower"
    assert "validation_unseen/sdoc/acc@1" in charts  # a chart per task of the metric's split
    records[3].status, records[3].ended = "TERMINATED", "epochs"  # a resume finished it: all runs rewritten
    records[3].history.append(_row(3, 0.7, 2))
    write_strategy_runs(records, tmp_path, METRIC)
    decay = _accumulator(tmp_path / STRATEGIES_DIR / "recipe-decay-0.8-0.02")
    assert [round(e.value, 6) for e in decay.Scalars("validation_unseen/mean/acc_1")] == [0.45, 0.75, 0.65]


def check_server(url: str, strategies: list[str]) -> dict:
    """What TensorBoard's own endpoints serve over a sweep folder: the HParams experiment as the page
    gets it (method, strategy, seed first; the sweep's metric first), the runs (the strategy runs,
    no "."), the custom-scalars layout and the strategy runs' data for its margin charts."""
    runs = wait_for(
        lambda: (r := get(f"{url}/data/runs")) and set(strategies) <= set(r) and r, f"the strategy runs {strategies}"
    )
    assert "." not in runs, runs
    exp = wait_for(lambda: (e := hparams_experiment(url)).get("hparamInfos") and e, "the HParams experiment")
    shown = [h.get("displayName") or h["name"] for h in exp["hparamInfos"]]
    assert shown[:3] == list(LEAD), shown  # the page ticks the first five, in the order served
    metrics = [m.get("displayName") for m in exp["metricInfos"]]
    assert metrics[:2] == [METRIC, "test_unseen/mean/acc@1"], metrics
    tags = get(f"{url}/data/plugin/scalars/tags")  # the curves under the metrics' own names
    trial_tags = {t for run, ts in tags.items() if run.startswith("trial_") for t in ts}
    assert tag_of(METRIC) in trial_tags and not [t for t in trial_tags if t.startswith("ray/")], sorted(trial_tags)
    layout = get(f"{url}/data/plugin/custom_scalars/layout")
    charts = [c for cat in layout["category"] for c in cat["chart"]]
    margin = next(c for c in charts if c["title"] == METRIC)["margin"]["series"][0]
    for run in strategies:
        got = get(f"{url}/data/plugin/custom_scalars/scalars?run={run}&tag={margin['lower']}")
        assert got["regex_valid"] and got["tag_to_events"][margin["lower"]], got
    return exp


@pytest.mark.slow
def test_tensorboard_serves_the_sweep_columns_and_strategy_runs(tmp_path):
    """TensorBoard's server, not the files: before, the sweep's experiment was served with its
    columns sorted by name (batch_size, dedupe_pairs, ...), since the server orders them so."""
    hand_sweep(tmp_path)
    with tensorboard(tmp_path, tmp_path / "tensorboard.log") as url:
        check_server(url, [f"{STRATEGIES_DIR}/recipe-decay-0.8-0.02", f"{STRATEGIES_DIR}/recipe-fixed-0.8"])


@pytest.fixture(scope="module")
def smoke_sweep(tiny, tmp_path_factory):
    """A small real sweep: two strategies x two seeds, two epochs, on the tiny BERT: the recipe
    (every negative mined) and all-random negatives, which train apart even there."""
    import ray

    from counterarg.sweep.runner import Sweep, run_sweep

    from .conftest import sweep_base, unique_name

    base = sweep_base(tiny, epochs=2)
    # as a sweep script makes them: each variant carries its method and name (the HParams method column)
    variants = [labelled({"schedule": s, "seed": seed}, "recipe") for s in ("fixed", "random") for seed in (0, 1)]
    sweep = Sweep(name=unique_name("tb"), base=base, variants=variants)
    storage = tmp_path_factory.mktemp("tb-sweep")
    try:
        res = run_sweep(sweep, storage=storage, num_cpus=2, verbose=0)
    finally:
        ray.shutdown()
    return storage / sweep.name, res


@pytest.mark.slow
def test_the_dashboard_in_chromium(smoke_sweep, tmp_path):
    """A smoke sweep's folder under TensorBoard, in Debian's headless Chromium: the HParams table
    shows method, strategy, seed and the sweep's metric; the Custom Scalars tab draws a margin chart
    per strategy; the Scalars tab lists the strategy runs. Screenshots: artifacts_dir()."""
    exp, res = smoke_sweep
    assert all(r.finished for r in res.records), [(r.trial_id, r.ended, r.error) for r in res.records]
    strategies = [f"{STRATEGIES_DIR}/{p.name}" for p in sorted((exp / STRATEGIES_DIR).iterdir())]
    assert len(strategies) == 2, strategies
    with tensorboard(exp, tmp_path / "tensorboard.log") as url:
        check_server(url, strategies)
        reason = no_browser_reason()
        if reason:
            pytest.skip(f"TensorBoard's endpoints checked; the browser part needs Chromium: {reason}")
        shots = artifacts_dir()
        with chromium() as driver:
            driver.get(f"{url}/#hparams")
            headers = wait_for(
                lambda: (h := deep_text(driver, ".table-header")) and METRIC in h and h, "the HParams table", timeout=90
            )
            assert {"method", "strategy", "seed", METRIC} <= set(headers), headers
            cells = deep_text(driver, ".table-cell")
            assert {"fixed 0", "random"} <= set(cells), cells
            assert {r.trial_id for r in res.records} <= set(cells), cells  # the Trial IDs, in full
            driver.save_screenshot(str(shots / "hparams.png"))

            driver.get(f"{url}/#custom_scalars")
            chart = wait_for(
                lambda: [
                    t
                    for t in deep_text(driver, "tf-custom-scalar-margin-chart-card")
                    if t.startswith(METRIC) and "Matches (2)" in t
                ],
                "the margin chart",
                timeout=90,
            )
            assert all(f"({s})" in chart[0] for s in strategies), chart  # a mean ± std band per strategy run
            driver.save_screenshot(str(shots / "custom_scalars.png"))

            driver.get(f"{url}/#scalars&tagFilter={tag_of(METRIC)}")
            runs = wait_for(
                lambda: (t := " ".join(deep_text(driver, "tf-runs-selector"))) and strategies[0] in t and t,
                "the runs list",
                timeout=90,
            )
            assert all(s in runs for s in strategies) and all(r.trial_id in runs for r in res.records), runs
            time.sleep(5)  # the charts draw after the runs list
            driver.save_screenshot(str(shots / "scalars.png"))
    for name in ("hparams", "custom_scalars", "scalars"):
        assert (shots / f"{name}.png").stat().st_size > 10_000, name
