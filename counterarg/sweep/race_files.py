"""A race's saved state in an experiment folder and the files made from it.

The race (:mod:`counterarg.sweep.race`) keeps its whole state as JSON in Tune's
``searcher-state-*.pkl``; here it is read back (:func:`load_race_state`), made consistent with the
saved trial list before a resume (:func:`reconcile_race_state`), and written out as ``race.csv``,
``race.png`` (:func:`write_race`) and the summary's race section (:func:`race_markdown`).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs as pafs

from ..analysis.plots import plot_race
from ..core.io import atomic_write_text
from ..ray_internals import experiment_states, searcher_state_files, state_trial_ids
from .race import finished_values

RACE_COLUMNS = ("round", "strategy", "seeds", "value", "p_value", "eliminated_in_round")


def reconcile_race_state(exp_dir: Path) -> list[str]:
    """Before a resume: give back to the queue the race's running trials the experiment state lacks.

    Tune uploads a save's state files one by one; a driver killed between them can leave a searcher
    state newer than the trial list, and the race would wait forever for a trial Tune never restores.
    Such trials go back to the front of the round's queue (to be emitted again); returns one line per
    trial. The opposite (a trial the searcher does not know) needs nothing: its result is ignored and
    the queue still holds its seed. Local experiment folders only.
    """
    states = experiment_states(exp_dir)
    searchers = searcher_state_files(exp_dir)
    if not states or not searchers:
        return []
    try:
        listed = state_trial_ids(states[-1])
        raw = json.loads(searchers[0].read_text())
    except (ValueError, KeyError, TypeError, IndexError):
        return []  # not a race's state, or cut short: the state repair names that
    lost = [tid for tid, t in raw.get("trials", {}).items() if t["state"] == "running" and tid not in listed]
    if not lost:
        return []
    raw["queue"] = [[raw["trials"][tid]["strategy"], raw["trials"][tid]["seed"]] for tid in lost] + raw["queue"]
    for tid in lost:
        del raw["trials"][tid]
    raw["emitted"] -= len(lost)
    atomic_write_text(searchers[0], json.dumps(raw))
    return [
        f"race trial {tid} ({q[0]}, seed {q[1]}) was not in the saved trial list: emitted again"
        for tid, q in zip(lost, raw["queue"])
    ]


def load_race_state(experiment: str) -> dict[str, Any] | None:
    """The race's saved state in an experiment folder (path or URI): the newest session's searcher-state file."""
    if "://" in experiment:
        fs, root = pafs.FileSystem.from_uri(experiment)
    else:
        fs, root = pafs.LocalFileSystem(), str(Path(experiment).resolve())
    try:
        infos = fs.get_file_info(pafs.FileSelector(root))
    except (OSError, FileNotFoundError):
        return None
    files = [
        i for i in infos if posixpath.basename(i.path).startswith("searcher-state-") and i.type == pafs.FileType.File
    ]
    if not files:
        return None
    # Tune picks the greatest name (its session's start time), not the newest mtime: every upload of a
    # resumed sweep rewrites the earlier sessions' files too
    newest = max(files, key=lambda i: i.path)
    with fs.open_input_stream(newest.path) as f:
        return json.loads(f.read().decode("utf-8"))


def race_rows(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """race.csv: one row per round and strategy raced in it; ``eliminated_in_round`` is the round
    the strategy left (on each of its rows; empty while it survived)."""
    rows = []
    for rnd in state["rounds"]:
        for s in rnd["standings"]:
            left = state["left"].get(s["strategy"])
            rows.append(
                {
                    "round": rnd["round"],
                    "strategy": s["strategy"],
                    "seeds": s["seeds"],
                    "value": s["value"],
                    "p_value": s["p_value"],
                    "eliminated_in_round": left["round"] if left else None,
                }
            )
    return rows


def race_markdown(state: Mapping[str, Any], metric: str) -> str:
    """The summary's race section: per strategy its finished runs, their validation mean and the round
    it left; a race in flight says which round and how many of its trials have finished."""
    runs = finished_values(state, list(state["strategies"]))
    if state["stop"]:
        ended = f"Ended: {state['stop']}."
    else:
        in_round = [t for t in state["trials"].values() if t.get("round") == state["round"]]
        done = sum(t["state"] in ("done", "error") for t in in_round)
        planned = len(in_round) + len(state.get("queue") or [])
        ended = (
            f"Not ended: round {state['round']} in flight ({done} of its {planned} trials finished); the "
            "seeds and means below count finished runs only, and no strategy leaves before its round is whole."
        )
    lines = [
        "## Race (validation)",
        "",
        f"Raced on {metric} (each run's best epoch), seed-aware Welch test against the leader after each "
        f"round, Holm-corrected, alpha {state['options']['alpha']:g}; per round in `race.csv`, `race.png`. " + ended,
        "",
        "| strategy | seeds | " + metric + " mean | left in round | why |",
        "|---|---|---|---|---|",
    ]
    for g in state["strategies"]:
        values = runs[g]
        left = state["left"].get(g)
        value = f"{sum(values) / len(values):.4f}" if values else "–"
        lines.append(
            f"| {g} | {len(values)} | {value} | {left['round'] if left else 'survived'} | "
            f"{left['reason'] if left else ''} |"
        )
    return "\n".join(lines) + "\n"


def write_race(state: Mapping[str, Any], out_dir: Path, metric: str) -> dict[str, Path]:
    """race.csv and race.png in ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "race.csv", "png": out_dir / "race.png"}
    frame = pd.DataFrame(race_rows(state), columns=list(RACE_COLUMNS)).astype({"eliminated_in_round": "Int64"})
    atomic_write_text(paths["csv"], frame.to_csv(index=False))  # a round number, not 1.0
    plot_race(state, paths["png"], metric)
    return paths


def survivors(state: Mapping[str, Any]) -> list[str]:
    return [g for g in state["strategies"] if g not in state["left"]]
