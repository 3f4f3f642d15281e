"""Racing strategies over seeds: spend training runs only on strategies that may still win.

Why: a strategy is a training procedure, and its unit of replication is the training run (a seed).
Running every strategy on ten seeds to find the best is wasteful once a few seeds show some of them
clearly behind. Racing, as algorithm configuration does it (F-Race, Birattari et al. 2002, "A
Racing Algorithm for Configuring Metaheuristics", GECCO; irace, López-Ibáñez et al. 2016, "The
irace package: Iterated racing for automatic algorithm configuration", Operations Research
Perspectives 3), runs every candidate on a first block of seeds, then after each round drops the
candidates a statistical test shows worse than the best and gives the survivors one more seed.

Here:

* **Value of a run**: the trial's best value of the sweep metric (the Config ``select_metric``, a
  *validation* key; never a test key) over its reported epochs, as model selection picks it.
* **Round decision** (:func:`race_round`, pure): the *leader* is the strategy with the best mean
  over its runs; every other strategy is compared with it by the seed-aware Welch test over
  per-run values (:func:`counterarg.analysis.significance.seed_test`), the p-values Holm-corrected over
  those comparisons (:func:`~counterarg.analysis.significance.holm`); a strategy is eliminated when
  it is behind the leader and its adjusted p < ``alpha``. A strategy with fewer than two runs
  cannot be tested and stays.
* **Errored trials** count as missing runs: their partial values are not used (a run cut short
  is not a sample of the procedure). A strategy left with no finished run after a round is
  eliminated with the reason "no finished run". ``--resume`` restarts errored trials under new
  ids; those re-runs appear in the summary but do not feed a race whose round was decided.
* **Stopping**: one strategy survives, every survivor ran ``max_seeds`` seeds, or the next round
  would take the race past ``budget`` trials (a round is started only when it fits whole, so no
  strategy is left with fewer seeds than the others).
* **Resume**: :class:`RaceSearcher` keeps its whole state (rounds, values, eliminations, trials
  in flight) as JSON in Tune's ``searcher-state-*.pkl``, saved with the experiment state, so
  ``Tuner.restore`` after a SIGKILL continues the race to the same eliminations.

The outputs (``race.csv``, ``race.png``, the summary's race section) are written from that saved
state by :mod:`counterarg.sweep.race_files`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scipy import stats

from ..analysis.significance import ALPHA, holm, seed_test
from ..analysis.trials import DEFAULT_MODE, group_labels
from ..config import ConfigError
from ..core.io import atomic_write_text
from ..evaluation.selection import beats
from .spaces import ConstantSpaceSearcher


@dataclass(frozen=True)
class RaceOptions:
    """How to race: the seed order, the first round's size, the limits and the test's level."""

    seeds: tuple[int, ...]  # seeds in the order the rounds use them
    first_seeds: int = 3
    max_seeds: int = 10
    budget: int | None = None  # at most this many trials in all
    alpha: float = ALPHA

    def __post_init__(self) -> None:
        if self.first_seeds < 2:
            raise ConfigError(f"--first-seeds must be >= 2 (the test needs two runs per side), got {self.first_seeds}")
        if self.max_seeds < self.first_seeds:
            raise ConfigError(f"--max-seeds {self.max_seeds} is below --first-seeds {self.first_seeds}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"race seeds must be distinct, got {list(self.seeds)}")
        if len(self.seeds) < self.max_seeds:
            raise ConfigError(
                f"--max-seeds {self.max_seeds} needs {self.max_seeds} seeds, --seeds gives "
                f"{len(self.seeds)}: {','.join(map(str, self.seeds))}"
            )
        if not 0 < self.alpha < 1:
            raise ConfigError(f"race alpha must be in (0, 1), got {self.alpha}")

    def check(self, n_strategies: int) -> None:
        """A race needs two strategies and a budget that holds its first round."""
        if n_strategies < 2:
            raise ConfigError(f"a race needs at least 2 strategies, got {n_strategies}")
        first = n_strategies * self.first_seeds
        if self.budget is not None and self.budget < first:
            raise ConfigError(
                f"--budget {self.budget} cannot hold the first round: {n_strategies} strategies x "
                f"{self.first_seeds} seeds = {first} trials"
            )

    def max_trials(self, n_strategies: int) -> int:
        full = n_strategies * self.max_seeds
        return full if self.budget is None else min(full, self.budget)

    def tune_samples(self, n_strategies: int) -> int:
        """Tune's ``num_samples`` cap: the race's own limit plus one round of slack for the trials a
        resume re-emits (:func:`reconcile_race_state`); the searcher itself stops the race."""
        return self.max_trials(n_strategies) + n_strategies


# ------------------------------------------------------------------------------------- the decision
@dataclass(frozen=True)
class Standing:
    """One strategy after a round: its runs so far, its mean with a 95% t-interval, its Holm-adjusted
    p-value against the leader (None for the leader or where it cannot be tested), and whether it
    was eliminated in this round and why."""

    strategy: str
    seeds: int
    value: float | None
    ci_low: float
    ci_high: float
    p_value: float | None
    eliminated: bool = False
    reason: str = ""
    leader: bool = False


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """The 95% t-interval of the mean of ``values`` (nan with fewer than two)."""
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    m = sum(values) / n
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * s / math.sqrt(n)
    return m - half, m + half


def race_round(
    values: Mapping[str, Sequence[float]], *, alpha: float = ALPHA, mode: str = DEFAULT_MODE
) -> list[Standing]:
    """Who is eliminated after a round, given each surviving strategy's per-run values.

    The leader has the best mean (ties: the first name in sorted order); each other strategy is
    tested against it (:func:`seed_test`), the p-values Holm-adjusted over those comparisons; a
    strategy behind the leader at adjusted p < ``alpha`` is eliminated, as is one with no value.
    Returned leader first, then by mean (best first), strategies without values last.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be max or min, got {mode!r}")
    sign = 1.0 if mode == "max" else -1.0
    scored = {g: [float(v) for v in vs] for g, vs in values.items() if len(vs)}
    empty = sorted(g for g in values if g not in scored)
    order = sorted(scored, key=lambda g: (-sign * sum(scored[g]) / len(scored[g]), g))
    out: list[Standing] = []
    if order:
        lead = order[0]
        tests = [seed_test(scored[lead], scored[g]) for g in order[1:]]
        adjusted = holm([t.p_value for t in tests])
        for i, g in enumerate(order):
            lo, hi = mean_interval(scored[g])
            mean = sum(scored[g]) / len(scored[g])
            if i == 0:
                out.append(Standing(g, len(scored[g]), mean, lo, hi, None, leader=True))
                continue
            t, p = tests[i - 1], adjusted[i - 1]
            worse = sign * t.diff > 0 and p is not None and p < alpha
            reason = f"behind {lead} at Holm-adjusted p = {p:.4g} < {alpha:g}" if worse else ""
            out.append(Standing(g, len(scored[g]), mean, lo, hi, p, worse, reason))
    out += [Standing(g, 0, None, math.nan, math.nan, None, True, "no finished run") for g in empty]
    return out


def race_table(round_no: int, standings: Sequence[Standing]) -> str:
    """A round's standings for the console: strategy, seeds, mean value, p vs the leader, verdict."""
    head = ("strategy", "seeds", "val mean", "p vs leader", "")
    rows = []
    for s in standings:
        verdict = "leader" if s.leader else ("eliminated" if s.eliminated else "stays")
        rows.append(
            (
                s.strategy,
                str(s.seeds),
                "-" if s.value is None else f"{s.value:.4f}",
                "-" if s.p_value is None else f"{s.p_value:.4f}",
                verdict,
            )
        )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [f"[race] after round {round_no}:", "  " + fmt.format(*head).rstrip()]
        + ["  " + fmt.format(*r).rstrip() for r in rows]
    )


def strategy_labels(strategies: Sequence[Mapping[str, Any]], base: Mapping[str, Any] | None = None) -> list[str]:
    """The race's name of each strategy: its summary group label, so race.csv and summary.md agree."""
    labels = group_labels([{**dict(base or {}), **dict(s)} for s in strategies])
    if len(set(labels)) != len(labels):
        raise ConfigError(f"two raced strategies are the same: {', '.join(labels)}")
    return labels


# ------------------------------------------------------------------------------------- the searcher
def finished_values(state: Mapping[str, Any], strategies: Sequence[str]) -> dict[str, list[float]]:
    """Per strategy of ``strategies``, the values of its finished runs in a race's saved ``state``
    (errored or valueless runs are missing): what a round is decided on and the summary shows."""
    out: dict[str, list[float]] = {g: [] for g in strategies}
    for t in state["trials"].values():
        if t["strategy"] in out and t["state"] == "done" and t["value"] is not None:
            out[t["strategy"]].append(t["value"])
    return out


class RaceSearcher(ConstantSpaceSearcher):
    """A Tune searcher that races ``strategies`` (flat Config fields, no seed) over seeds.

    Emits round 1 (every strategy x the first ``first_seeds`` seeds), returns None from
    :meth:`suggest` while a round runs, decides the round (:func:`race_round`) when its last trial
    completes, then emits one more seed per survivor, until a stopping rule holds (its reason in
    ``state["stop"]``); then ``FINISHED``. The state is plain JSON (:meth:`save` / :meth:`restore`).
    """

    def __init__(
        self,
        strategies: Sequence[Mapping[str, Any]],
        options: RaceOptions,
        base: Mapping[str, Any] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        verbose: bool = True,
    ):
        super().__init__(metric=metric, mode=mode)
        options.check(len(strategies))
        labels = strategy_labels(strategies, base)
        self.verbose = verbose
        self.state: dict[str, Any] = {
            "strategies": {g: dict(s) for g, s in zip(labels, strategies)},
            "options": asdict(options),
            "alive": list(labels),
            "round": 1,
            "queue": [[g, seed] for g in labels for seed in options.seeds[: options.first_seeds]],
            "trials": {},
            "rounds": [],
            "left": {},
            "emitted": 0,
            "stop": None,
        }

    @property
    def options(self) -> RaceOptions:
        o = dict(self.state["options"])
        return RaceOptions(**{**o, "seeds": tuple(o["seeds"])})

    # -- Tune's calls
    def suggest(self, trial_id: str):
        st = self.state
        self._advance()
        if st["stop"] is not None:
            return self.FINISHED
        if not st["queue"]:
            return None  # the round is still running
        g, seed = st["queue"].pop(0)
        st["trials"][trial_id] = {"strategy": g, "seed": seed, "round": st["round"], "value": None, "state": "running"}
        st["emitted"] += 1
        return {**st["strategies"][g], "seed": seed}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        t = self.state["trials"].get(trial_id)
        if t is not None and t["state"] == "running":
            t["value"] = self._better(t["value"], (result or {}).get(self._metric))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        t = self.state["trials"].get(trial_id)
        if t is None or t["state"] != "running":
            return  # a re-run of an errored trial after --resume: its round was decided without it
        if error:
            t["state"] = "error"
        else:
            t["value"] = self._better(t["value"], (result or {}).get(self._metric))
            t["state"] = "done"
            if t["value"] is None:
                print(
                    f"[race] trial {trial_id} ({t['strategy']}, seed {t['seed']}) finished without reporting "
                    f"{self._metric}: counted as a missing run",
                    flush=True,
                )
        self._advance()

    def save(self, checkpoint_path: str) -> None:
        atomic_write_text(Path(checkpoint_path), json.dumps({**self.state, "metric": self._metric, "mode": self._mode}))

    def restore(self, checkpoint_path: str) -> None:
        """The saved race; also its metric and mode (``Tuner.restore`` does not set them again)."""
        state = json.loads(Path(checkpoint_path).read_text())
        self._metric = state.pop("metric", None) or self._metric
        self._mode = state.pop("mode", None) or self._mode
        self.state = state

    # -- the race
    def _better(self, old: float | None, new: Any) -> float | None:
        if not isinstance(new, (int, float)) or isinstance(new, bool) or not math.isfinite(new):
            return old
        return float(new) if beats(new, old, self._mode or DEFAULT_MODE) else old

    def values(self) -> dict[str, list[float]]:
        """Per surviving strategy, the values of its finished runs (errored or valueless: missing)."""
        return finished_values(self.state, self.state["alive"])

    def _advance(self) -> None:
        """Decide the current round once all its trials are emitted and complete; plan the next."""
        st = self.state
        if st["stop"] is not None or st["queue"]:
            return
        if any(t["state"] == "running" for t in st["trials"].values()):
            return
        opts = self.options
        standings = race_round(self.values(), alpha=opts.alpha, mode=self._mode or DEFAULT_MODE)
        st["rounds"].append({"round": st["round"], "standings": [asdict(s) for s in standings]})
        for s in standings:
            if s.eliminated:
                st["left"][s.strategy] = {"round": st["round"], "reason": s.reason}
        st["alive"] = [g for g in st["alive"] if g not in st["left"]]
        if self.verbose:
            print(race_table(st["round"], standings), flush=True)
        used = opts.first_seeds + st["round"] - 1
        if len(st["alive"]) <= 1:
            st["stop"] = f"one strategy survives: {st['alive'][0]}" if st["alive"] else "no strategy survives"
        elif used >= opts.max_seeds:
            st["stop"] = f"--max-seeds {opts.max_seeds} reached by {len(st['alive'])} survivors"
        elif opts.budget is not None and st["emitted"] + len(st["alive"]) > opts.budget:
            st["stop"] = (
                f"--budget {opts.budget}: the next round needs {len(st['alive'])} trials, "
                f"{opts.budget - st['emitted']} left"
            )
        else:
            st["round"] += 1
            st["queue"] = [[g, opts.seeds[used]] for g in st["alive"]]
            return
        if self.verbose:
            print(f"[race] finished after round {st['round']}: {st['stop']}", flush=True)
