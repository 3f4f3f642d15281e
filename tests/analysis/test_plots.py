"""The summary's figures (counterarg.analysis.plots), drawn from hand-made trial records."""

from __future__ import annotations

import pytest

from counterarg.analysis.plots import plot_telemetry, read_plot_data
from counterarg.analysis.summary import write_summary

from .conftest import ranked_records


@pytest.mark.slow
def test_mining_telemetry_is_plotted_when_trials_report_it(tmp_path):
    import matplotlib.image as mpimg

    recs = ranked_records()
    assert "telemetry" not in write_summary(recs, tmp_path / "none", title="t")["paths"]  # nothing to plot
    for i, r in enumerate(recs):
        r.history[0]["mining/share_points"] = 0.5 + i / 100
        r.history[0]["mining/share_hard"] = 1.0
    out = write_summary(recs, tmp_path / "some", title="t")
    img = mpimg.imread(out["paths"]["telemetry"])
    assert img.ndim == 3 and img.std() > 0.05
    drawn = read_plot_data(out["paths"]["telemetry"])
    assert sorted(drawn) == ["mining/share_hard", "mining/share_points"]  # only what the trials reported
    points = drawn["mining/share_points"]
    assert len(points) == 3  # strategies good, bad, bad2: the mean of their two seeds' values
    assert sorted(c["mean"][0] for c in points.values()) == pytest.approx([0.505, 0.525, 0.545])
    assert all(c["epochs"] == [1] for c in points.values())


def test_telemetry_plot_is_skipped_without_telemetry_and_drawn_with_it(tmp_path):
    recs = ranked_records()
    assert plot_telemetry(recs, tmp_path / "none.png") is False and not (tmp_path / "none.png").exists()
    recs[0].history[0]["mining/dist_negative"] = 0.7
    assert plot_telemetry(recs, tmp_path / "some.png") is True
    assert read_plot_data(tmp_path / "some.png") == {
        "mining/dist_negative (cosine)": {
            "recipe: fixed 0.5": {"epochs": [1], "mean": [0.7], "min": [0.7], "max": [0.7]}
        }
    }  # good0: one seed of two


def test_l2_and_cosine_distances_get_panels_of_their_own(tmp_path):
    """The telemetry put L2 distances (up to 7) and distances of unit vectors (about 0.9)
    on one axis; each eval_metric now has its own panel, strategies named alike in all of them."""
    recs = ranked_records()
    for r in recs:
        r.config["eval_metric"] = "l2" if r.config["rate"] == 0.5 else "cosine"
        r.history[0]["mining/dist_negative"] = 7.0 if r.config["eval_metric"] == "l2" else 0.9
        r.history[0]["mining/share_hard"] = 1.0
    assert plot_telemetry(recs, tmp_path / "t.png") is True
    drawn = read_plot_data(tmp_path / "t.png")
    assert sorted(drawn) == ["mining/dist_negative (cosine)", "mining/dist_negative (l2)", "mining/share_hard"]
    l2, cos = drawn["mining/dist_negative (l2)"], drawn["mining/dist_negative (cosine)"]
    assert [c["mean"] for c in l2.values()] == [[7.0]]  # one strategy trained with l2
    assert [c["mean"] for c in cos.values()] == [[0.9], [0.9]]  # two with cosine
    assert set(drawn["mining/share_hard"]) == set(l2) | set(cos)  # one name per strategy in every panel


def test_validation_curves_mark_epochs_with_fewer_seeds(tmp_path):
    """After one seed stopped early, the curve silently averaged the seeds left."""
    from counterarg.analysis.plots import plot_curves
    from counterarg.analysis.trials import TrialRecord

    metric = "validation_unseen/mean/acc@1"
    long = TrialRecord(
        "a0",
        {"schedule": "fixed", "rate": 0.8, "seed": 0},
        [{"epoch": e, metric: v} for e, v in ((1, 0.2), (2, 0.4), (3, 0.5))],
    )
    short = TrialRecord(
        "a1", {"schedule": "fixed", "rate": 0.8, "seed": 1}, [{"epoch": e, metric: v} for e, v in ((1, 0.4), (2, 0.2))]
    )  # stopped after 2
    plot_curves([long, short], tmp_path / "c.png", metric)
    (curve,) = read_plot_data(tmp_path / "c.png")["curves"].values()
    assert curve["epochs"] == [1, 2, 3] and curve["mean"] == pytest.approx([0.3, 0.3, 0.5])
    assert curve["seeds"] == [2, 2, 1] and curve["of"] == 2


@pytest.mark.slow
def test_verdict_plot_shows_each_gap_to_the_best_with_its_holm_p(tmp_path):
    out = write_summary(ranked_records(), tmp_path, title="t")
    drawn = read_plot_data(out["paths"]["verdicts"])
    cells = drawn["all"]
    assert cells["recipe: fixed 0.5"]["sdoc"] == {"gap": 0.0, "p_holm": None, "best": True, "significant": True}
    worse = cells["recipe: fixed 0.6"]["sdoc"]
    comp = next(
        c
        for c in out["comparisons"]
        if (c.task, c.view, c.strategy_a, c.strategy_b) == ("sdoc", "all", "recipe: fixed 0.5", "recipe: fixed 0.6")
    )
    assert worse["gap"] == pytest.approx(-comp.diff) and worse["p_holm"] == pytest.approx(comp.p_holm)
    assert worse["significant"] and set(drawn) == {"all", "unseen"}


def test_one_colour_per_strategy_in_every_figure(tmp_path):
    """The validation curves gave two pairs of strategies one colour (a hollow marker took the next
    colour of the cycle) and the task bars coloured them otherwise; now both take the sweep's map."""
    from counterarg.analysis.colours import strategy_colours
    from counterarg.analysis.trials import TrialRecord

    from .conftest import epoch_row

    records = []
    for i in range(10):  # ten strategies; the even ones' seed 1 stops an epoch early (hollow markers)
        for seed in (0, 1):
            rows = [epoch_row(e, 0.1 * e + i / 100, 0.3 + i / 100) for e in (1, 2, 3)]
            records.append(
                TrialRecord(
                    f"t{i}{seed}",
                    {"schedule": "fixed", "rate": i / 10, "seed": seed},
                    rows[:2] if seed and i % 2 == 0 else rows,
                )
            )
    out = write_summary(records, tmp_path, title="t")
    curves = read_plot_data(out["paths"]["curves"])["curves"]
    bars = read_plot_data(out["paths"]["bars"])["colours"]
    assert len(curves) == 10 and len({c["colour"] for c in curves.values()}) == 10  # no two alike
    assert {g: c["colour"] for g, c in curves.items()} == bars == strategy_colours(curves)


def test_the_task_bars_legend_sits_beside_the_bars(tmp_path):
    """The legend covered the sdoc and sdoa bars."""
    import matplotlib.pyplot as plt

    from counterarg.analysis.plots import _task_bars
    from counterarg.analysis.trials import summary_rows

    rows = summary_rows(ranked_records())
    fig, ax = plt.subplots(figsize=(13, 4.5))
    _task_bars(ax, rows, "all", None, {r["group"]: "#000000" for r in rows})
    fig.tight_layout()
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # right of the axes: over no bar
    plt.close(fig)
