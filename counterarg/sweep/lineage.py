"""The lineage of a trial's weights: which trial trained each epoch, with which rate, lr and margin.

Population Based Training (``sweeps/pbt_schedule.py``) copies the weights of good trials into bad
ones (exploit) and perturbs their hyperparameters (explore). A trial's final weights then carry the
epochs of one or more donors before its own. The sweep trainable (:func:`counterarg.sweep.trainable.trainable`)
keeps, in the sidecar of every checkpoint it reports, one entry per epoch of those weights::

    {"epoch": 3, "random_rate": 0.4, "lr": 0.001, "margin": 1.0,
     "trained_by": "a1b2c_00001", "donor": "a1b2c_00000"}

``trained_by`` is the trial that trained the epoch; ``donor`` is the trial whose weights this
trial took at the exploit that brought the epoch in (None for epochs it trained from its own
weights). The values are the realised ones of the epoch's metric row (``mining/rate``,
``optim/lr``, ``loss/margin``). A checkpoint taken over by another trial passes its lineage on
(:func:`inherit`), so the lineage survives any chain of exploits and any driver kill: it travels
with the weights. Nothing here imports Ray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: schedules.csv columns: one row per (trial, epoch) of every trial's final lineage.
COLUMNS = ("trial", "epoch", "random_rate", "lr", "margin", "donor", "trained_by")


def lineage_entry(row: Mapping[str, Any], trial_id: str) -> dict[str, Any]:
    """The entry of an epoch ``trial_id`` trained, from that epoch's metric row."""
    return {
        "epoch": int(row["epoch"]),
        "random_rate": float(row["mining/rate"]),
        "lr": _float(row.get("optim/lr")),
        "margin": _float(row.get("loss/margin")),
        "trained_by": trial_id,
        "donor": None,
    }


def inherit(entries: Sequence[Mapping[str, Any]], epoch: int, donor: str | None) -> list[dict[str, Any]]:
    """The lineage a run resuming a checkpoint of ``epoch`` epochs starts from.

    Entries after ``epoch`` (an epoch trained again after a kill) are dropped. With a ``donor``
    (weights taken from another trial), every inherited entry names it.
    """
    out = [dict(e) for e in entries if int(e["epoch"]) <= epoch]
    if donor is not None:
        for e in out:
            e["donor"] = donor
    return sorted(out, key=lambda e: int(e["epoch"]))


def missing_epochs(entries: Sequence[Mapping[str, Any]], epochs: int) -> list[int]:
    """Epochs 1..``epochs`` with no entry (a complete lineage has none)."""
    have = {int(e["epoch"]) for e in entries}
    return [e for e in range(1, epochs + 1) if e not in have]


def rate_table(entries: Sequence[Mapping[str, Any]]) -> list[float]:
    """The realised rates in epoch order as a ``rate_table``; trailing repeats are dropped, since
    a table holds its last value."""
    rates = [round(float(e["random_rate"]), 6) for e in sorted(entries, key=lambda e: int(e["epoch"]))]
    while len(rates) > 1 and rates[-1] == rates[-2]:
        rates.pop()
    return rates


def schedule_rows(
    lineages: Mapping[str, Sequence[Mapping[str, Any]]],
    metrics: Mapping[str, Mapping[int, float | None]] | None = None,
    metric: str | None = None,
) -> list[dict[str, Any]]:
    """schedules.csv rows: every trial's lineage, trial then epoch ascending; with ``metrics``
    (trial -> epoch -> value of ``metric``), a column of that metric at each epoch."""
    rows = []
    for trial in sorted(lineages):
        for e in sorted(lineages[trial], key=lambda e: int(e["epoch"])):
            row = {"trial": trial, **{k: e.get(k) for k in COLUMNS if k != "trial"}}
            row["donor"] = row["donor"] or ""
            if metrics is not None and metric:
                row[metric] = metrics.get(trial, {}).get(int(e["epoch"]))
            rows.append(row)
    return rows


def plot_schedules(
    lineages: Mapping[str, Sequence[Mapping[str, Any]]],
    path: Path,
    *,
    best: str | None = None,
    reference: Mapping[str, Sequence[float]] | None = None,
    fields: Sequence[str] = ("random_rate",),
) -> None:
    """The learned schedules over epochs, one panel per field; the ``best`` trial drawn bold;
    ``reference`` curves (e.g. decay) dashed; a dot where an epoch was trained by another trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..analysis.plots import save_figure

    fig, axes = plt.subplots(len(fields), 1, figsize=(8, 3.2 * len(fields) + 0.8), squeeze=False, sharex=True)
    # the plot's data: the best trial's name, the reference curves, then per field each trial's steps
    drawn: dict[str, Any] = {"best": best, "reference": {k: list(v) for k, v in (reference or {}).items()}}
    for ax, f in zip(axes[:, 0], fields):
        for trial in sorted(lineages):
            entries = sorted(lineages[trial], key=lambda e: int(e["epoch"]))
            xs = [int(e["epoch"]) for e in entries]
            ys = [e.get(f) for e in entries]
            if not xs or any(y is None for y in ys):
                continue
            inherited = [i for i, e in enumerate(entries) if e.get("trained_by") != trial]  # trained by a donor
            drawn.setdefault(f, {})[trial] = {"epochs": xs, "values": ys, "inherited": [xs[i] for i in inherited]}
            bold = trial == best
            (line,) = ax.step(
                xs,
                ys,
                where="mid",
                lw=2.8 if bold else 1.2,
                alpha=1.0 if bold else 0.6,
                label=f"{trial} (best)" if bold else trial,
                zorder=3 if bold else 2,
            )
            if inherited:
                ax.plot(
                    [xs[i] for i in inherited], [ys[i] for i in inherited], "o", ms=3, color=line.get_color(), zorder=4
                )
        if f == "random_rate":
            for name, values in (reference or {}).items():
                ax.plot(range(1, len(values) + 1), values, "k--", lw=1.2, label=name)
            ax.set_ylim(-0.05, 1.05)
        if f == "lr":
            ax.set_yscale("log")
        ax.set_ylabel(f)
        ax.grid(alpha=0.3)
    axes[0, 0].set_title("Learned schedules (PBT): each trial's lineage; dots = epochs trained by a donor")
    axes[-1, 0].set_xlabel("epoch")
    from matplotlib.ticker import MaxNLocator

    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        axes[0, 0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, drawn, dpi=120)


def _float(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v
