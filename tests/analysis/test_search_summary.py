"""A search's section of summary.md (counterarg.analysis.search_summary), from hand-made trials: the
configurations ranked on validation (never test), their searched values, the selected one and its
command, ASHA's rungs in words."""

from __future__ import annotations

from pathlib import Path

from counterarg.analysis.search_summary import ranked_configurations, scheduler_text, search_markdown, selected_command
from counterarg.analysis.trials import TrialRecord
from counterarg.config import Config

from .conftest import epoch_row

METRIC = "validation_unseen/mean/acc@1"


def _trial(tid, lr, finetune, seed, val, test, status="TERMINATED", epochs=2):
    cfg = Config.from_dict({"lr": lr, "finetune": finetune, "seed": seed, "corpus": "/data/arguana.zip"}).to_dict()
    history = [] if status == "ERROR" else [epoch_row(e, val - 0.01 * (epochs - e), test) for e in range(1, epochs + 1)]
    for row in history:
        row["test_unseen/mean/acc@1"] = test - 0.1
    return TrialRecord(tid, cfg, history, status=status, error="boom" if status == "ERROR" else None)


def _records():
    # B is best on validation (mean of its two seeds), A best on test: the search must pick B
    return [
        _trial("a0", 1e-3, "none", 0, 0.50, 0.90),
        _trial("a1", 1e-3, "none", 1, 0.50, 0.90),
        _trial("b0", 2.5e-4, "top:1", 0, 0.60, 0.40),
        _trial("b1", 2.5e-4, "top:1", 1, 0.58, 0.40, epochs=1),
        _trial("c0", 3e-3, "none", 0, 0.0, 0.0, status="ERROR"),
    ]


def test_configurations_are_ranked_on_validation_and_seeds_averaged():
    ranked = ranked_configurations(_records(), METRIC)
    assert [len(c["rows"]) for c in ranked] == [2, 2, 1]
    assert [c["rows"][0]["config/lr"] for c in ranked] == [2.5e-4, 1e-3, 3e-3]  # errored last
    assert abs(ranked[0]["stats"][METRIC][0] - 0.59) < 1e-9


def test_section_shows_searched_values_selects_the_validation_best_and_its_command():
    md = search_markdown(_records(), ["lr", "finetune", "seed"], metric=METRIC, scheduler="FIFO: x")
    lines = md.splitlines()
    assert lines[0] == "## Search (validation)"
    assert "3 configuration(s) sampled over `lr`, `finetune`; FIFO: x." in md
    header = next(ln for ln in lines if ln.startswith("| rank"))
    assert header == (
        f"| rank | lr | finetune | seeds | epochs run | {METRIC} | test_unseen/mean/acc@1 | test/mean/acc@1 |"
    )
    rows = [ln for ln in lines if ln.startswith("| ") and ln != header]
    assert rows[0].startswith("| 1 | 0.00025 | top:1 | 2/2 | 2 | 0.5900 | 0.3000 | 0.4000 |")
    assert rows[1].startswith("| 2 | 0.001 | none | 2/2 | 2 | 0.5000 |")
    assert rows[2].startswith("| – | 0.003 | none | 0/1 (1 errored) | 0 | – |")
    assert (
        "**Selected** (rank 1 of 3, validation_unseen/mean/acc@1 0.5900 over 2 seed(s)): `lr=0.00025`, "
        "`finetune=top:1`" in md
    )
    assert "counterarg train --corpus .../data/arguana.zip --set lr=0.00025 --out OUT" in md  # top:1 is the default


def test_nothing_is_selected_when_no_configuration_finished_an_epoch():
    md = search_markdown([_trial("c0", 3e-3, "none", 0, 0, 0, status="ERROR")], ["lr"], metric=METRIC)
    assert "No configuration finished an epoch: nothing selected." in md and "Selected" not in md


def test_selected_command_sets_what_differs_from_the_defaults_only():
    cfg = Config.from_dict({"lr": 0.1 + 0.2, "neg_rank": [1, 30], "device": "cpu", "seed": 4}).to_dict()
    assert selected_command(cfg) == "counterarg train --set lr=0.30000000000000004 --set neg_rank=1,30 --out OUT"
    home = Config.from_dict({"encoder": str(Path.home() / "enc"), "loss": "infonce+0.5*pair_ce"}).to_dict()
    assert selected_command(home) == "counterarg train --set encoder=~/enc --set 'loss=infonce+0.5*pair_ce' --out OUT"


def test_scheduler_text_lists_ashas_rungs():
    assert "at epoch 1, 3, 9, 27 a trial below the top 1/3" in scheduler_text("asha", 30, 1, 3)
    assert "at epoch 2 a trial" in scheduler_text("asha", 4, 2, 2)
    assert scheduler_text("fifo", 30, 2, 2).startswith("FIFO")
