"""The lineage of a trial's weights (counterarg.sweep.lineage), by hand; no Ray."""

from __future__ import annotations

import pytest

from counterarg.analysis.plots import read_plot_data
from counterarg.sampling.schedules import format_value
from counterarg.sweep.lineage import (
    COLUMNS,
    inherit,
    lineage_entry,
    missing_epochs,
    plot_schedules,
    rate_table,
    schedule_rows,
)


def _row(epoch, rate, lr=1e-3, margin=1.0):
    return {"epoch": epoch, "mining/rate": rate, "optim/lr": lr, "loss/margin": margin, "train/loss": 1.0}


def test_entries_follow_the_weights_through_exploits_and_kills():
    a = [lineage_entry(_row(1, 0.3), "A"), lineage_entry(_row(2, 0.4), "A")]
    assert a[1] == {"epoch": 2, "random_rate": 0.4, "lr": 1e-3, "margin": 1.0, "trained_by": "A", "donor": None}
    # B takes A's weights after epoch 2: both epochs name A as donor, A as trainer
    b = inherit(a, 2, donor="A") + [lineage_entry(_row(3, 0.5), "B")]
    assert [(e["trained_by"], e["donor"]) for e in b] == [("A", "A"), ("A", "A"), ("B", None)]
    assert a[0]["donor"] is None  # the donor's own lineage is untouched
    # C takes B's weights after epoch 3: the donor is B for all three, trainers stay A, A, B
    c = inherit(b, 3, donor="B")
    assert [(e["trained_by"], e["donor"]) for e in c] == [("A", "B"), ("A", "B"), ("B", "B")]
    # B resumed after a driver kill from its own epoch-2 checkpoint: epoch 3 is dropped, donors kept
    assert [(e["epoch"], e["donor"]) for e in inherit(b, 2, donor=None)] == [(1, "A"), (2, "A")]
    assert missing_epochs(b, 4) == [4] and missing_epochs(b, 3) == []


def test_rate_table_drops_trailing_repeats_only():
    entries = [lineage_entry(_row(e, r), "A") for e, r in ((3, 0.2), (1, 0.8), (2, 0.2), (4, 0.2))]
    assert rate_table(entries) == [0.8, 0.2]
    assert rate_table([lineage_entry(_row(1, 0.5), "A")]) == [0.5]
    assert (
        format_value(
            rate_table(
                [lineage_entry(_row(1, 0.8), "A"), lineage_entry(_row(2, 0.25), "A"), lineage_entry(_row(3, 0.0), "A")]
            )
        )
        == "0.8,0.25,0"
    )  # the --set form


def test_schedule_rows_and_plot(tmp_path):
    lineages = {
        "B": inherit([lineage_entry(_row(1, 0.3), "A")], 1, "A") + [lineage_entry(_row(2, 0.4, 2e-3), "B")],
        "A": [lineage_entry(_row(1, 0.3), "A"), lineage_entry(_row(2, 0.2), "A")],
    }
    rows = schedule_rows(lineages, {"A": {1: 0.1, 2: 0.2}, "B": {1: 0.1, 2: 0.3}}, "validation/mean/acc@1")
    assert [(r["trial"], r["epoch"], r["random_rate"], r["donor"], r["trained_by"]) for r in rows] == [
        ("A", 1, 0.3, "", "A"),
        ("A", 2, 0.2, "", "A"),
        ("B", 1, 0.3, "A", "A"),
        ("B", 2, 0.4, "", "B"),
    ]
    assert rows[3]["lr"] == 2e-3 and rows[3]["validation/mean/acc@1"] == 0.3
    assert set(COLUMNS) <= set(rows[0])
    plot_schedules(
        lineages, tmp_path / "s.png", best="B", reference={"decay": [0.8, 0.78]}, fields=("random_rate", "lr")
    )
    drawn = read_plot_data(tmp_path / "s.png")
    assert drawn["best"] == "B" and drawn["reference"] == {"decay": [0.8, 0.78]}
    assert drawn["random_rate"] == {
        "A": {"epochs": [1, 2], "values": [0.3, 0.2], "inherited": []},
        "B": {"epochs": [1, 2], "values": [0.3, 0.4], "inherited": [1]},
    }
    assert drawn["lr"]["B"]["values"] == [1e-3, 2e-3]


def test_an_entry_needs_the_realised_rate():
    with pytest.raises(KeyError):
        lineage_entry({"epoch": 1}, "A")
