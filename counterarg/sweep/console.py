"""What a sweep prints while it runs: a status table a person can read, and quieter Ray logs."""

from __future__ import annotations

import logging
import sys
import time
from typing import Sequence

from ray.tune import ProgressReporter

from ..config import SEED, Config, ConfigError, fields_with
from ..analysis.methods import label_of
from ..analysis.search_summary import short_value
from ..analysis.trials import DEFAULT_MODE
from ..ray_internals import STORAGE_LOGGERS


class SweepReporter(ProgressReporter):
    """A status table a person can read: per trial its name (``recipe``, ``reference: decay 0.8-0.02``), seed, state, epoch and best metric.

    A search names its trials by the values of its searched ``fields`` too (``fixed 0 lr=0.00092``).

    Printed when a trial changes state and at most every ``every_s`` seconds otherwise (Tune's own
    table shows trial hashes and loss columns). Needs Tune's classic output engine
    (``RAY_AIR_NEW_OUTPUT=0``, set by :func:`counterarg.sweep.tuner.build_tuner`).
    """

    def __init__(self, metric: str, mode: str = DEFAULT_MODE, every_s: float = 30.0, fields: Sequence[str] = ()):
        self.metric, self.mode, self.every_s = metric, mode, every_s
        self.fields = [f for f in fields if f not in fields_with(SEED)]  # the seed has its own column
        self._last, self._states, self._start = 0.0, None, time.time()

    def setup(self, start_time: float | None = None, total_samples: int | None = None, metric=None, mode=None,
              **kwargs) -> None:
        self._start = start_time or time.time()

    def should_report(self, trials, done: bool = False) -> bool:
        states = tuple((t.trial_id, t.status) for t in trials)
        return states != self._states or (not done and time.time() - self._last >= self.every_s)

    def table(self, trials) -> str:
        rows = []
        for t in trials:
            try:
                cfg = Config.from_dict(dict(t.config)).to_dict()
                label = " ".join([label_of(cfg), *(f"{f}={short_value(cfg[f])}" for f in self.fields)])
            except (ConfigError, TypeError):
                label = "?"
            seed = dict(t.config).get("seed", Config().seed)
            last = t.last_result or {}
            best = (getattr(t, "metric_analysis", None) or {}).get(self.metric, {}).get(self.mode)
            rows.append((label, str(seed), t.status.lower(), str(last.get("epoch", "-")),
                         "-" if best is None else f"{best:.4f}"))
        head = ("strategy", "seed", "state", "epoch", f"best {self.metric}")
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        counts = {}
        for t in trials:
            counts[t.status.lower()] = counts.get(t.status.lower(), 0) + 1
        elapsed = time.time() - self._start
        lines = [f"[sweep] {elapsed / 60:.1f} min: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())),
                 fmt.format(*head)] + [fmt.format(*r) for r in sorted(rows)]
        return "\n".join(lines)

    def report(self, trials, done: bool, *sys_info: str) -> None:
        self._states = tuple((t.trial_id, t.status) for t in trials)
        self._last = time.time()
        print(self.table(trials), flush=True)


class DropRestoreHint:
    """Logging filter of Tune's interrupt messages: its hint names ``Tuner.restore(...)`` (ours says
    ``--resume``), and its "Stop signal received" warning is said once in the project's words."""

    STOP = "Stop signal received"

    def filter(self, record) -> bool:
        text = record.getMessage()
        if text.startswith(self.STOP):
            print("[sweep] Ctrl-C: stopping the trials and saving the sweep's state (Ctrl-C again stops at "
                  "once); finished epochs are kept and --resume continues", file=sys.stderr, flush=True)
            return False
        return "Tuner.restore(" not in text


class TrialsWithoutResults:
    """Logging filter for Tune's "Failed to fetch metrics for N trial(s)" warning.

    Tune reads every trial's ``result.json`` when it restores an experiment and when it builds the
    results, also for trials that have not reported an epoch yet (pending at a Ctrl-C or a kill):
    "both result.json and progress.csv were not found" is then no failure, and the summary lists
    those trials as unfinished. Any other failure to read a trial's results is said in the
    project's words, one line per trial.
    """

    NOT_FOUND = "both result.json and progress.csv were not found"

    def filter(self, record) -> bool:
        text = record.getMessage()
        if not text.startswith("Failed to fetch metrics for"):
            return True
        problems = [ln[2:] for ln in text.splitlines()[1:] if ln.startswith("- ") and self.NOT_FOUND not in ln]
        for line in problems:
            print(f"[sweep] could not read a trial's results: {line}", flush=True)
        return False


class DropTokenAuthNotice:
    """Logging filter: Ray's "Token authentication is enabled for this Ray cluster" on every start
    of a local sweep is the setting we want (a loopback Ray that only token holders may use), not a
    warning; its "disabled" warning still shows."""

    def filter(self, record) -> bool:
        return "Token authentication is enabled for this Ray cluster" not in record.getMessage()


def quiet_worker_logs() -> None:
    """No "Checkpoint successfully created" line per epoch per trial from Ray's storage logger."""
    for name in STORAGE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
