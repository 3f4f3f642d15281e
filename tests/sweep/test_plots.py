"""The summary's figures (counterarg.sweep.plots), drawn from hand-made trial records."""

from __future__ import annotations

import pytest

from counterarg.sweep.plots import plot_telemetry, read_plot_data
from counterarg.sweep.summary import write_summary

from .conftest import ranked_records


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
    assert read_plot_data(tmp_path / "some.png") == {"mining/dist_negative": {
        "fixed 0.5": {"epochs": [1], "mean": [0.7], "min": [0.7], "max": [0.7]}}}  # good0: one seed of two


def test_verdict_plot_shows_each_gap_to_the_best_with_its_holm_p(tmp_path):
    out = write_summary(ranked_records(), tmp_path, title="t")
    drawn = read_plot_data(out["paths"]["verdicts"])
    cells = drawn["all"]
    assert cells["fixed 0.5"]["sdoc"] == {"gap": 0.0, "p_holm": None, "best": True, "significant": True}
    worse = cells["fixed 0.6"]["sdoc"]
    comp = next(c for c in out["comparisons"] if (c.task, c.view, c.strategy_a, c.strategy_b)
                == ("sdoc", "all", "fixed 0.5", "fixed 0.6"))
    assert worse["gap"] == pytest.approx(-comp.diff) and worse["p_holm"] == pytest.approx(comp.p_holm)
    assert worse["significant"] and set(drawn) == {"all", "unseen"}
