"""Helpers the analysis tests share: hand-made trial records (epoch rows, a small sweep's records,
records with per-query ranks) and run folders as training and a sweep leave them, for ``counterarg
compare``. Plain functions: import them with ``from .conftest import ...``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from counterarg.analysis.methods import labelled
from counterarg.analysis.trials import TrialRecord
from counterarg.retrieval.tasks import TASKS


def epoch_row(epoch, val, test_base, train_s=None, wall_s=None):
    # the selection metric (Config().select_metric, the unseen view) carries the same value as the full view
    r = {
        "epoch": epoch,
        "validation/mean/acc@1": val,
        "validation_unseen/mean/acc@1": val,
        "test/mean/acc@1": test_base,
    }
    for i, t in enumerate(TASKS):
        r[f"test/{t}/acc@1"] = test_base + i / 100
        r[f"validation/{t}/acc@1"] = val
    if train_s is not None:
        r["time/train_total_s"] = train_s
        r["time_total_s"] = wall_s
    return r


def summary_records():
    # fixed: seeds 0,1 -> best epochs 2 (val .5) and 1 (val .6, tie-break irrelevant)
    # each config carries its method and name, as the sweep's builders make them (methods.labelled)
    fixed0 = TrialRecord(
        "a0",
        labelled({"schedule": "fixed", "rate": 0.8, "seed": 0}, "recipe"),
        [epoch_row(1, 0.4, 0.30), epoch_row(2, 0.5, 0.40, 9.0, 10.0), epoch_row(3, 0.45, 0.90, 9.0, 10.0)],
    )
    fixed1 = TrialRecord(
        "a1",
        labelled({"schedule": "fixed", "rate": 0.8, "seed": 1}, "recipe"),
        [epoch_row(1, 0.6, 0.20, 4.5, 5.0), epoch_row(2, 0.6, 0.99, 9.5, 10.0)],
    )  # tie -> epoch 1
    rand0 = TrialRecord(
        "b0", labelled({"schedule": "random", "seed": 0}, "recipe"), [epoch_row(1, 0.3, 0.50, 18.0, 20.0)]
    )
    bad = TrialRecord(
        "c0",
        labelled({"schedule": "decay", "seed": 0}, "recipe"),
        [],
        status="ERROR",
        error="TrainingError: metric train/loss is nan at epoch 1",
    )
    return [fixed0, fixed1, rand0, bad]


def ranked_records(n=200, gap=0.3, seed=0):
    """Two strategies x 2 seeds with per-query ranks at their best epoch: ``good`` hits on about
    ``gap`` more queries than ``bad``; ``bad2`` is ``bad``'s exact copy under another strategy."""
    rng = np.random.default_rng(seed)
    unseen = np.arange(n) % 2 == 0
    base = rng.random(n)
    recs = []
    for name, rate, thresh in (("good", 0.5, 0.4 + gap), ("bad", 0.6, 0.4), ("bad2", 0.7, 0.4)):
        for s in (0, 1):
            hits = base < thresh
            ranks = {f"test/{t}": np.where(hits, 1, 2) for t in TASKS}
            ranks["test/unseen"] = unseen
            ranks["epoch"] = np.array(1)
            row = epoch_row(1, 0.5, float(hits.mean()))
            for t in TASKS:
                row[f"test/{t}/acc@1"] = float(hits.mean())
                row[f"test_unseen/{t}/acc@1"] = float(hits[unseen].mean())
            row["test_unseen/mean/acc@1"] = float(hits[unseen].mean())
            recs.append(
                TrialRecord(
                    f"{name}{s}", labelled({"schedule": "fixed", "rate": rate, "seed": s}, "recipe"), [row], ranks=ranks
                )
            )
    return recs


def write_run(
    folder: Path,
    seed: int,
    p: float,
    *,
    n: int = 300,
    layout: str = "run",
    splits=("validation", "test"),
    unseen=None,
    config: dict | None = None,
    base_seed: int = 7,
    corpus: str | None = "arguana",
) -> Path:
    """A run folder holding ``best_ranks.npz`` as training leaves it: a query of a task is a hit
    (rank 1) where its difficulty (uniform, shared by every run: ``base_seed``) is below ``p`` plus
    the seed's own shift, and 5% of the queries flip at random per run. ``layout``: ``run``
    (``counterarg train --out``: config.json, best/, checkpoint/), ``trial`` (a sweep trial:
    params.json, checkpoint_000001/ and the newer checkpoint_000003/) or ``checkpoint`` (the ranks
    in the folder itself). ``corpus`` names the query texts the ranks record (``{split}/queries``;
    None: none recorded, as ranks kept before they were)."""
    from counterarg.retrieval.pools import query_digest

    difficulty = np.random.default_rng(base_seed).random((len(TASKS), n))  # [T, n], shared by runs
    rng = np.random.default_rng(1000 + seed * 31 + int(p * 100))
    mask = (np.arange(n) % 2 == 0) if unseen is None else unseen
    arrays = {"epoch": np.array(2)}
    for split in splits:
        shift = rng.normal(0, 0.01)  # the seed's own effect
        for t, task in enumerate(TASKS):
            hits = (difficulty[t] < p + shift) ^ (rng.random(n) < 0.05)  # [n]
            arrays[f"{split}/{task}"] = np.where(hits, 1, rng.integers(2, 50, n)).astype(np.int32)
        arrays[f"{split}/unseen"] = mask
        if corpus is not None:
            arrays[f"{split}/queries"] = query_digest(
                [f"{corpus} {split} point {i}" for i in range(n)], [f"{corpus} {split} counter {i}" for i in range(n)]
            )
    cfg = {"seed": seed, "lr": 0.0003, "schedule": "fixed", **(config or {})}
    folder.mkdir(parents=True)
    targets = {
        "run": [folder / "best", folder / "checkpoint"],
        "checkpoint": [folder],
        "trial": [folder / "checkpoint_000003"],
    }[layout]
    if layout == "trial":  # an older checkpoint whose ranks must not be read: every query missed
        old = folder / "checkpoint_000001"
        old.mkdir()
        np.savez(
            old / "best_ranks.npz",
            **{
                k: (np.full_like(v, 9) if k.count("/") and not k.endswith(("unseen", "queries")) else v)
                for k, v in arrays.items()
            },
        )
        (folder / "params.json").write_text(json.dumps(cfg))
    elif layout == "run":
        (folder / "config.json").write_text(json.dumps(cfg))
    for target in targets:
        target.mkdir(exist_ok=True)
        np.savez(target / "best_ranks.npz", **arrays)
        if layout != "trial":
            (target / "config.json").write_text(json.dumps(cfg))
    return folder
