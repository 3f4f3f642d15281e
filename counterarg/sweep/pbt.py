"""Population Based Training over random_rate (optionally lr and margin): a learned schedule.

Sweep code (imports Ray); ``sweeps/pbt_schedule.py`` is its command line. How it fits:

* **The population** trains one method (``--method``: the default recipe by default, or the
  reference method; :mod:`counterarg.analysis.methods`) with the ``fixed`` schedule, a grid over the
  starting ``rate`` (:func:`initial_rates`): a member's rate is constant until PBT changes it. Every ``perturbation
  interval`` epochs (``time_attr="epoch"``, the epoch a trial's weights have reached), synchronously,
  the bottom ``quantile`` of the population by the project's Tune metric (Config ``select_metric``)
  takes the weights of a member of the top quantile (exploit) and a perturbed copy of its
  hyperparameters (explore): the rate moves one step on :data:`RATE_GRID` (or is resampled), lr and
  margin are scaled by 0.8 or 1.2 (or resampled). :class:`RateExplorePBT` makes sure the rate
  always moves (Ray's list shift is a no-op at the ends of the grid).
* **Taking weights** is a resume: the trainable (:func:`counterarg.sweep.trainable.trainable`) restarts from the
  donor's checkpoint with the new config, which ``train()`` accepts (the rate, lr and margin may
  change on resume: their ``resume`` role, config.fields_with). The checkpoint carries the metric history of its
  epochs and the lineage (:mod:`counterarg.sweep.lineage`), so the epochs a trial inherited keep the
  rates they were trained with.
* **Outputs**: ``schedules.csv`` (every trial's full lineage), ``schedules.png`` (the learned
  schedules beside decay) and the usual summary, in which each trial is named by its realised
  schedule as a ``rate_table`` and its history is its lineage's (so the best epoch and the
  per-query significance tests refer to the weights it ended with). The best learned table and
  the command that replays it from scratch under the same method, beside that method's
  hand-written schedules, close the run (:func:`replay_command`).
"""

from __future__ import annotations

import logging
import os
import random
import shlex
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining

from ..analysis.methods import DEFAULT_METHOD, get_method, labelled, strategy_label, variant_label
from ..analysis.summary import write_csv, write_summary
from ..analysis.trials import TRAIN_TIME_KEY, WALL_TIME_KEY
from ..config import SCHEDULE, Config, ConfigError, fields_with
from ..core.paths import runnable_path
from ..evaluation.selection import beats, best_row, early_stop
from ..model.checkpoint import read_checkpoint
from ..sampling import schedules
from . import lineage
from .records import best_checkpoint
from .recovery import read_sidecar
from .trainable import trainable

log = logging.getLogger(__name__)

#: The rates PBT moves between: one step is 0.1.
RATE_GRID = tuple(round(i / 10, 1) for i in range(11))
#: Config fields PBT may perturb.
MUTABLE = ("rate", "lr", "margin")


@dataclass
class PBTOptions:
    """What the scheduler needs; every value is checked here, naming the flag."""

    population: int = 4
    perturbation_interval: int = 2  # epochs between exploit/explore steps
    quantile: float = 0.25  # bottom fraction takes the weights of the top fraction
    resample_probability: float = 0.25
    mutate: tuple[str, ...] = ("rate",)
    lr_range: tuple[float, float] = (1e-4, 1e-2)  # resampling range (log-uniform)
    margin_range: tuple[float, float] = (0.1, 3.0)  # resampling range (uniform)

    def __post_init__(self) -> None:
        if not 2 <= self.population <= 64:
            raise ConfigError(f"--population must be between 2 and 64, got {self.population}")
        if self.perturbation_interval < 1:
            raise ConfigError(f"--perturbation-interval must be >= 1 epoch, got {self.perturbation_interval}")
        if not 0 < self.quantile <= 0.5:
            raise ConfigError(f"--quantile must lie in (0, 0.5], got {self.quantile}")
        if not 0 <= self.resample_probability <= 1:
            raise ConfigError(f"--resample-probability must lie in [0, 1], got {self.resample_probability}")
        bad = [m for m in self.mutate if m not in MUTABLE]
        if bad or "rate" not in self.mutate:
            raise ConfigError(
                f"--mutate takes rate plus any of lr, margin (comma-separated); got {','.join(self.mutate)!r}"
            )
        for name, (lo, hi) in (("--lr-range", self.lr_range), ("--margin-range", self.margin_range)):
            if not 0 < lo < hi:
                raise ConfigError(f"{name} must be LO,HI with 0 < LO < HI, got {lo},{hi}")


def initial_rates(population: int) -> list[float]:
    """Starting rates spread evenly inside the grid: 2 -> 0.3, 0.7; 4 -> 0.2, 0.4, 0.6, 0.8."""
    return [RATE_GRID[round(10 * (i + 1) / (population + 1))] for i in range(population)]


def mutations(opts: PBTOptions) -> dict[str, Any]:
    """``hyperparam_mutations``: Config field -> values (a list: adjacent steps) or a Tune domain."""
    out: dict[str, Any] = {"rate": list(RATE_GRID)}
    if "lr" in opts.mutate:
        out["lr"] = tune.loguniform(*opts.lr_range)
    if "margin" in opts.mutate:
        out["margin"] = tune.uniform(*opts.margin_range)
    return out


class RateExplorePBT(PopulationBasedTraining):
    """Ray's PBT, except that an explore step always moves the rate by at least one grid step, a
    trial's last epoch is not a perturbation point (its new weights would never train), a
    synchronous step after a resumed sweep does not leave every trial waiting forever, and a trial
    that takes weights while Tune is still saving its last epoch is not stopped after its next one.

    Ray shifts a list-valued hyperparameter to an adjacent value, which does nothing at the ends of
    the list, and a resample may draw the donor's own value; a trial would then only copy weights.
    """

    def on_trial_result(self, tune_controller, trial, result):
        # a trial's last epoch: nothing is left to train with new weights or values, let it end
        if int(result.get("epoch", 0)) >= int(trial.config.get("epochs", Config.epochs)):
            return self.CONTINUE
        before = self._next_perturbation_sync
        decision = super().on_trial_result(tune_controller, trial, result)
        if self._synch and self._next_perturbation_sync != before:  # a synchronous step just ran
            reached = max(s.last_train_time for s in self._trial_state.values())
            if self._next_perturbation_sync <= reached:
                # Ray sets the next step to the furthest epoch reached when trials are past the
                # planned one (a sweep resumed after a kill: the scheduler starts afresh at epoch
                # 0 while its trials are at epoch 5); every trial then waits for a step it has
                # already reached and none is chosen to run again. The next step is one interval on.
                self._next_perturbation_sync = reached + self._perturbation_interval
        return decision

    def _exploit(self, tune_controller, trial, trial_to_clone):
        """Ray's exploit, then drop the decision Tune cached for the trial's run that just ended.

        Ray 2.60 (ray-project/ray#57906): the trial that first reached the synchronous step was told
        to pause, and Tune saves it before pausing; if the last trial arrives while that save is in
        flight, ``pause_trial(should_checkpoint=False)`` in Ray's exploit caches a STOP "for after
        the save" and then drops the save. The trial restarts from the donor's weights, and Tune
        carries out that stale STOP after the trial's next epoch: it ends as TERMINATED, epochs
        short (3 of 27 two-trial test sweeps on 2 CPUs). The trial is PAUSED with no actor and no
        pending work here, so any cached decision belongs to the run that ended.
        """
        super()._exploit(tune_controller, trial, trial_to_clone)
        cached = getattr(tune_controller, "_cached_trial_decisions", None)
        if trial.status == Trial.PAUSED and isinstance(cached, dict) and trial.trial_id in cached:
            log.debug(
                "dropped the stale %s that Tune cached for %s when it was paused mid-save",
                cached.pop(trial.trial_id),
                trial.trial_id,
            )

    def _get_new_config(self, trial, trial_to_clone):
        new, operations = super()._get_new_config(trial, trial_to_clone)
        grid = list(self._hyperparam_mutations.get("rate", ()))
        old = trial_to_clone.config.get("rate")
        if grid and new.get("rate") == old and old in grid:
            i = grid.index(old)
            j = 1 if i == 0 else len(grid) - 2 if i == len(grid) - 1 else i + random.choice((-1, 1))
            new["rate"] = grid[j]
            operations["rate"] = f"{operations.get('rate', 'kept')}, then moved one step"
        new["label"] = variant_label(new, new.get("method"))  # explore makes a new variant: named here
        return new, operations


def make_scheduler(opts: PBTOptions) -> RateExplorePBT:
    """The PBT scheduler of a sweep (metric and mode come from the sweep's TuneConfig)."""
    return RateExplorePBT(
        time_attr="epoch",
        perturbation_interval=opts.perturbation_interval,
        hyperparam_mutations=mutations(opts),
        quantile_fraction=opts.quantile,
        resample_probability=opts.resample_probability,
        synch=True,
    )


def param_space(base: dict[str, Any], opts: PBTOptions, method: str = DEFAULT_METHOD) -> dict[str, Any]:
    """The population: ``method``'s fields, the fixed schedule, a grid over the starting rate. A
    method field set in ``base`` (``--set``) keeps that value; lr and margin, when mutated and not
    set in ``base``, start from values PBT samples from their ranges. Each member is named as Tune
    makes it, from its starting rate (``recipe: fixed 0.4``; :func:`member_label`)."""
    clash = sorted(set(base) & set(fields_with(SCHEDULE)))
    if clash:
        raise ConfigError(f"PBT learns the rate; do not set {', '.join(clash)} (--set) for this sweep")
    own = {k: v for k, v in get_method(method).fields.items() if k not in base and k not in opts.mutate}
    return {
        **own,
        "schedule": schedules.FIXED.name,
        "rate": tune.grid_search(initial_rates(opts.population)),
        "method": method,
        "label": tune.sample_from(member_label),
    }


def member_label(spec: dict[str, Any]) -> str:
    """A population member's one name, made by Tune as it resolves the member's config (its rate, from
    the grid, and its method). Tune passes its trial spec (the config under ``config``)."""
    config = spec["config"] if "config" in spec else spec
    return variant_label({k: config[k] for k in fields_with(SCHEDULE) if k in config}, config["method"])


# ----------------------------------------------------------------------------- after the sweep
@dataclass
class Learned:
    """What a finished PBT sweep learned: every trial's lineage and the best one's table."""

    lineages: dict[str, list[dict[str, Any]]]
    histories: dict[str, list[dict[str, Any]]]
    best: str | None
    best_table: list[float] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # summary.csv rows (lineage-based)
    verdicts: dict = field(default_factory=dict)


def read_lineages(experiment: str) -> dict[str, tuple[list[dict], list[dict], Any]]:
    """Trial id -> (lineage, metric history, Tune result) of the weights each trial ended with
    (its latest checkpoint in storage, on any pyarrow filesystem)."""
    out = {}
    grid = tune.Tuner.restore(experiment, trainable=trainable).get_results()
    for res in (grid[i] for i in range(len(grid))):  # a ResultGrid is indexed; it declares no __iter__
        ckpt = res.checkpoint
        if ckpt is None:
            continue
        trial = str((res.metrics or {}).get("trial_id") or Path(res.path).name)
        entries = list(read_sidecar(ckpt.filesystem, str(ckpt.path).rstrip("/")).get("lineage") or [])
        with tempfile.TemporaryDirectory() as d:
            ckpt.to_directory(d)
            history = list(read_checkpoint(d)["history"])
        out[trial] = (entries, history, res)
    return out


def lineage_record(rec, entries: list[dict], history: list[dict], result, metric: str, mode: str):
    """A summary record for a PBT trial: named by its realised schedule as a rate table, with its
    lineage's history (Tune's timing fields kept from its last reported row). Its best epoch's
    checkpoint is named only where this trial trained that epoch after its last exploit (an
    inherited epoch's checkpoint lies with a donor whose weights may since have moved on)."""
    table = lineage.rate_table(entries)
    config = labelled({**rec.config, "schedule": schedules.TABLE.name, "rate_table": table}, rec.config.get("method"))
    hist = [dict(r) for r in history]
    if hist and rec.history:
        for k in (TRAIN_TIME_KEY, WALL_TIME_KEY):
            if k in rec.history[-1]:
                hist[-1][k] = rec.history[-1][k]
    best = best_row(hist, metric, mode)
    own = {int(e["epoch"]) for e in entries if not e.get("donor")}
    kept = best_checkpoint(result, best["epoch"]) if best and int(best["epoch"]) in own else None
    return replace(rec, config=config, history=hist, best_checkpoint=kept)


def last_epoch(base, history: list[dict], epochs: int) -> int:
    """The epoch a trial's lineage must reach: ``epochs``, or the one after which its weights'
    run stopped early (``patience`` epochs without a new best: no epoch is missing after it)."""
    end = max((int(r["epoch"]) for r in history), default=0)
    if end < epochs and early_stop(Config.from_dict(dict(base)), history, end) is not None:
        return end
    return epochs


def finish(result, sweep, out_dir: Path) -> Learned:
    """Write schedules.csv, schedules.png and the lineage-based summary of a finished PBT sweep."""
    metric, mode = sweep.metric, sweep.mode
    epochs = int(Config.from_dict(dict(sweep.base)).epochs)
    found = read_lineages(result.experiment)
    lineages = {t: v[0] for t, v in found.items()}
    histories = {t: v[1] for t, v in found.items()}
    problems = [
        f"{t}: lineage misses epoch(s) {', '.join(map(str, m))}"
        for t, entries in sorted(lineages.items())
        if (m := lineage.missing_epochs(entries, last_epoch(sweep.base, histories[t], epochs)))
    ]
    records = [
        lineage_record(r, *found[r.trial_id], metric, mode) if r.trial_id in found else r for r in result.records
    ]
    written = write_summary(
        records,
        out_dir,
        title=f"{sweep.name} (PBT: each trial named by its learned schedule)",
        metric=metric,
        mode=mode,
        sweep_wall_s=result.wall_s,
        baseline=getattr(result, "baseline", None),
        baseline_ranks=getattr(result, "baseline_ranks", None),
    )
    values = {t: {int(r["epoch"]): r.get(metric) for r in h} for t, h in histories.items()}
    paths = {
        "schedules_csv": out_dir / "schedules.csv",
        "schedules_png": out_dir / "schedules.png",
        **{f"summary_{k}": v for k, v in written["paths"].items()},
    }
    write_csv(
        lineage.schedule_rows(lineages, values, metric), paths["schedules_csv"], columns=[*lineage.COLUMNS, metric]
    )
    best_trial, best_value = None, None
    for t, h in sorted(histories.items()):
        b = best_row(h, metric, mode)
        if b is not None and beats(b[metric], best_value, mode):
            best_trial, best_value = t, b[metric]
    decay = Config.from_dict({**schedules.strategy_fields(schedules.DECAY.name), "epochs": epochs})
    reference = {strategy_label(decay.to_dict()): [schedules.random_rate(decay, e) for e in range(epochs)]}
    plot_fields = ["random_rate"] + [f for f in ("lr", "margin") if f in sweep.pbt.mutate]
    lineage.plot_schedules(lineages, paths["schedules_png"], best=best_trial, reference=reference, fields=plot_fields)
    best_table = lineage.rate_table(lineages[best_trial]) if best_trial else []
    return Learned(
        lineages=lineages,
        histories=histories,
        best=best_trial,
        best_table=best_table,
        paths=paths,
        problems=problems,
        rows=written["rows"],
        verdicts=written["verdicts"],
    )


def replay_strategies(method: str, table: Sequence[float]) -> str:
    """``--strategies`` of the replay: ``method``'s hand-written main-job schedules (its tables
    left out) and the learned ``table``, e.g. ``fixed:rate=0;fixed:rate=0.5;decay;random;table:rate_table=...``."""
    hand = [s for s in get_method(method).strategies if s.partition(":")[0] != schedules.TABLE.name]
    return ";".join([*hand, f"{schedules.TABLE.name}:rate_table={schedules.format_value(table)}"])


def replay_command(args, table: Sequence[float], name: str, method: str = DEFAULT_METHOD) -> str:
    """The one command that replays ``table`` from scratch with 3 seeds under ``method``, beside
    that method's hand-written schedules (:func:`replay_strategies`)."""
    cmd = [
        "python",
        "sweeps/compare_strategies.py",
        "--methods",
        method,
        "--strategies",
        replay_strategies(method, table),
        "--seeds",
        "0,1,2",
        "--name",
        f"{name}_replay",
    ]
    if args.smoke_test:
        cmd.append("--smoke-test")
    for flag, value in (
        ("--corpus", args.corpus),
        ("--encoder", args.encoder),
        ("--epochs", args.epochs),
        ("--storage", args.storage),
        ("--num-cpus", args.num_cpus),
    ):
        if value is not None:
            local = flag in ("--corpus", "--storage") or (flag == "--encoder" and os.path.exists(str(value)))
            cmd += [flag, runnable_path(str(value)) if local else str(value)]
    for item in args.overrides:
        cmd += ["--set", item]
    return " ".join(shlex.quote(c) for c in cmd)
