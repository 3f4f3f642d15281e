"""What a sweep prints while it runs: a progress line a person can read, and quieter Ray logs."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence

from ray.tune import ProgressReporter

from ..analysis.methods import label_of
from ..analysis.search_summary import short_value
from ..analysis.trials import DEFAULT_MODE
from ..config import SEED, Config, ConfigError, fields_with
from ..evaluation.selection import beats
from ..ray_internals import RESTORE_LOGGER, STORAGE_LOGGERS


class SweepReporter(ProgressReporter):
    """One line of progress a person can read, instead of Tune's table of every trial::

        [sweep] 3.2 min: 5/24 trials ended (1 error), 2 running, 17 pending; epochs 37/120; best 0.1736 (reference: decay 0.8-0.02, seed 1)

    Printed when a trial ends (at most every ``min_s`` seconds) and otherwise every ``every_s``
    seconds, so a 24-trial sweep of 16 minutes prints about 40 lines where Tune's 26-line table
    came 79 times. A search names its best trial by the values of its searched ``fields`` too
    (``recipe lr=0.00092``). Needs Tune's classic output engine (``RAY_AIR_NEW_OUTPUT=0``, set by
    :func:`counterarg.sweep.tuner.build_tuner`); the summary's tables follow the sweep.
    """  # noqa: E501 - the example is one printed line, verbatim: split, it would no longer be the line

    ENDED = ("terminated", "error")

    def __init__(
        self,
        metric: str,
        mode: str = DEFAULT_MODE,
        every_s: float = 60.0,
        fields: Sequence[str] = (),
        min_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ):
        self.metric, self.mode, self.every_s, self.min_s = metric, mode, every_s, min_s
        self.fields = [f for f in fields if f not in fields_with(SEED)]  # the seed has its own place
        self.clock = clock
        #: when the last line was printed and how many trials had ended then (None before the first)
        self._last: float | None = None
        self._ended: int | None = None
        self._start = clock()

    def setup(
        self, start_time: float | None = None, total_samples: int | None = None, metric=None, mode=None, **kwargs
    ) -> None:
        self._start = start_time or self.clock()

    def should_report(self, trials, done: bool = False) -> bool:
        if done or self._last is None:
            return True
        since = self.clock() - self._last
        ended = sum(str(t.status).lower() in self.ENDED for t in trials)
        return since >= self.every_s or (ended != self._ended and since >= self.min_s)

    def label(self, trial) -> str:
        """The trial's one name (the one it carries, :func:`~counterarg.analysis.methods.label_of`)
        and searched values."""
        try:
            cfg = Config.from_dict(dict(trial.config)).to_dict()
            return " ".join([label_of(cfg), *(f"{f}={short_value(cfg[f])}" for f in self.fields)])
        except (ConfigError, TypeError):
            return "?"

    def line(self, trials) -> str:
        """The progress line: trials by state, epochs reported of planned, the best trial so far."""
        counts: dict[str, int] = {}
        for t in trials:
            counts[str(t.status).lower()] = counts.get(str(t.status).lower(), 0) + 1
        ended = sum(counts.get(k, 0) for k in self.ENDED)
        parts = [
            f"{ended}/{len(trials)} trials ended"
            + (f" ({counts['error']} error{'s' * (counts['error'] > 1)})" if counts.get("error") else "")
        ]
        parts += [f"{counts[k]} {k}" for k in sorted(counts) if k not in self.ENDED]
        epochs = planned = 0
        best = None
        for t in trials:
            cfg = dict(t.config or {})
            planned += int(cfg.get("epochs") or Config().epochs)
            epochs += int((t.last_result or {}).get("epoch") or 0)
            v = (getattr(t, "metric_analysis", None) or {}).get(self.metric, {}).get(self.mode)
            if v is not None and (best is None or beats(v, best[0], self.mode)):
                best = (v, t)
        text = f"[sweep] {(self.clock() - self._start) / 60:.1f} min: " + ", ".join(parts)
        text += f"; epochs {epochs}/{planned}"
        if best is not None:
            seed = dict(best[1].config).get("seed", Config().seed)
            text += f"; best {best[0]:.4f} ({self.label(best[1])}, seed {seed})"
        return text

    def report(self, trials, done: bool, *sys_info: str) -> None:
        self._last = self.clock()
        self._ended = sum(str(t.status).lower() in self.ENDED for t in trials)
        print(self.line(trials), flush=True)


class DropRestoreHint:
    """Logging filter of Tune's interrupt and end-of-run messages: its hint names ``Tuner.restore(...)``
    (ours says ``--resume``), its "Stop signal received" warning is said once in the project's words,
    and its notes on the state it wrote and the run time are dropped (the sweep prints its own)."""

    STOP = "Stop signal received"
    #: Tune's end-of-run notes: the sweep's own lines say where its state is and how long it took
    NOTES = ("Wrote the latest version of all result files", "Total run time:")

    def filter(self, record) -> bool:
        text = record.getMessage()
        if text.startswith(self.NOTES):
            return False
        if text.startswith(self.STOP):
            print(
                "[sweep] Ctrl-C: stopping the trials and saving the sweep's state (Ctrl-C again stops at "
                "once); finished epochs are kept and --resume continues",
                file=sys.stderr,
                flush=True,
            )
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
    """No "Checkpoint successfully created" line per epoch per trial from Ray's storage logger, and no
    "Restored on 127.0.0.1 from checkpoint" per resumed trial from Tune's trainable (the sweep says
    what it resumed). Run in every worker as it starts (``worker_process_setup_hook``,
    :func:`counterarg.sweep.runner.init_ray`) and by the trainable."""
    for name in (*STORAGE_LOGGERS, RESTORE_LOGGER):
        logging.getLogger(name).setLevel(logging.WARNING)
