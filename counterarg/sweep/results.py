"""What a finished (or resumed, or interrupted) sweep leaves: Tune's trials as records, the zero-shot
baseline beside them, the session in the provenance, a race's files and section, a search's section,
and the summary files (:func:`counterarg.analysis.summary.write_summary`); :class:`SweepResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..analysis.provenance import record_session
from ..analysis.search_summary import scheduler_text, search_markdown
from ..analysis.summary import write_summary
from ..analysis.trials import TrialRecord
from .prepare import sweep_baseline
from .race_files import load_race_state, race_markdown, write_race
from .records import collect_records
from .storage import DriverFolder
from .tuner import asha_settings, search_fields

if TYPE_CHECKING:
    from .runner import Sweep


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns: the trials as records, the summary rows and table, the timing."""

    experiment: str  # storage URI/path of the experiment
    local_dir: Path  # where summary files were written (object storage: the working copy publish() uploads)
    records: list[TrialRecord]
    rows: list[dict[str, Any]]
    markdown: str
    wall_s: float  # the sweep's wall time: every recorded run and resume (provenance.py), else this session's
    verdicts: dict = field(default_factory=dict)  # (task, view) -> significance.Verdict
    baseline: dict[str, float] | None = None  # the zero-shot encoder's validation/test metrics
    baseline_ranks: dict[str, Any] | None = None  # its per-query ranks (the tests against it)
    race: dict[str, Any] | None = None  # a race's final state (counterarg.sweep.race.RaceSearcher)
    remote: DriverFolder | None = None  # object storage: the working copy that publish() uploads

    @property
    def summary_at(self) -> str:
        """Where summary.md and the other summary files are: the local folder, or the experiment's URI."""
        return self.experiment if self.remote is not None else str(self.local_dir)

    def publish(self) -> list[str]:
        """Upload summary files written into :attr:`local_dir` since (object storage; else nothing)."""
        return self.remote.push() if self.remote is not None else []

    session_s: float | None = None  # this run's or resume's own wall time (None: as wall_s)
    sessions: int = 1  # the runs and resumes wall_s sums


def write_results(
    sweep: Sweep,
    grid,
    out: Path,
    *,
    exp_path: str,
    wall_s: float,
    resumed: bool,
    base: dict[str, Any] | None = None,
    remote: DriverFolder | None = None,
) -> SweepResult:
    """The results of ``sweep`` from Tune's ``ResultGrid`` ``grid``, written into ``out``: the session
    (its wall time ``wall_s`` adds to the earlier runs'), race.csv/race.png, summary.md and its files.
    ``base``: the trials' shared fields as they ran (inputs staged into object storage; default the
    sweep's); ``remote``: the working copy of a remote experiment that :meth:`SweepResult.publish` uploads."""
    print("[sweep] building the summary (trial results, zero-shot encoder, significance tests, plots)", flush=True)
    records = collect_records(grid, sweep.tune_metric, sweep.mode, base=sweep.base if base is None else base)
    baseline, baseline_ranks = sweep_baseline(sweep) or (None, None)
    record_session(out, wall_s, resumed=resumed)  # the summary's wall time sums every run and resume
    race = load_race_state(exp_path) if sweep.race is not None else None
    sections = []
    if race is not None:
        write_race(race, out, sweep.tune_metric)
        sections.append(race_markdown(race, sweep.tune_metric))
    if search_fields(sweep):
        how = scheduler_text(sweep.scheduler, *asha_settings(sweep))
        sections.append(
            search_markdown(records, search_fields(sweep), metric=sweep.tune_metric, mode=sweep.mode, scheduler=how)
        )
    written = write_summary(
        records,
        out,
        title=f"{sweep.name}",
        metric=sweep.tune_metric,
        mode=sweep.mode,
        sweep_wall_s=wall_s,
        baseline=baseline,
        baseline_ranks=baseline_ranks,
        extra_sections=sections,
        progress=True,
    )
    return SweepResult(
        experiment=exp_path,
        local_dir=out,
        records=records,
        rows=written["rows"],
        markdown=written["markdown"],
        wall_s=written["wall_s"] or wall_s,
        verdicts=written["verdicts"],
        baseline=baseline,
        baseline_ranks=baseline_ranks,
        race=race,
        session_s=wall_s,
        sessions=written["sessions"],
        remote=remote,
    )
