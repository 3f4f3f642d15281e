"""A random or ASHA search's section of summary.md: its configurations ranked on validation, the
value of every searched field, and the one configuration it selects.

Why a section of its own: a search's question is "which values", so its table is one row per
sampled configuration (its seeds averaged), a column per searched field, ranked by the sweep's
``select_metric`` (validation only). Test columns are shown beside it, never used to rank; the
selected configuration is the top row, and the section says how many configurations it was chosen
from (the more, the more its validation figure flatters it: the test figure is the one to
report). Plain data in, markdown out; no Ray here.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from ..config import MACHINE, SEED, Config, fields_with
from ..core.paths import portable_path
from ..sampling.schedules import format_value
from .trials import DEFAULT_METRIC, DEFAULT_MODE, TrialRecord, group_stats, summary_rows

#: The test columns shown beside the validation metric (mean acc@1, both views).
TEST_COLUMNS = ("test_unseen/mean/acc@1", "test/mean/acc@1")
#: Fields left out of the selected configuration's command: where it runs, not what it trains.


def short_value(v: Any) -> str:
    """A searched value in the table: floats to 3 significant digits, lists joined by commas."""
    if isinstance(v, float):
        return f"{v:.3g}"
    return format_value(v)


def _exact(v: Any) -> str:
    """A value for a command line, exactly as the trial had it (a float's full repr)."""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return ",".join(_exact(x) for x in v)
    return str(v)


def _mean(stats: Mapping[str, Any], key: str) -> str:
    return f"{stats[key][0]:.4f}" if key in stats else "–"


def ranked_configurations(
    records: Sequence[TrialRecord], metric: str = DEFAULT_METRIC, mode: str = DEFAULT_MODE
) -> list[dict[str, Any]]:
    """One entry per configuration (a group of seeds): ``group``, ``rows`` (its trials), ``stats``
    (:func:`~counterarg.analysis.trials.group_stats` over its finished trials), best first by ``metric``
    (configurations without a finished value last, in name order)."""
    rows = summary_rows(records, metric, mode)
    stats = group_stats(rows, [metric, *TEST_COLUMNS])
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    sign = -1 if mode == "max" else 1

    def key(g: str):
        v = stats[g].get(metric)
        return (0, sign * v[0], g) if v is not None and not math.isnan(v[0]) else (1, 0.0, g)

    return [{"group": g, "rows": groups[g], "stats": stats[g]} for g in sorted(groups, key=key)]


def selected_command(config: Mapping[str, Any]) -> str:
    """``counterarg train`` with the selected configuration: ``--set`` for every field that differs
    from the Config defaults (machine fields and the seed left out; the corpus as ``--corpus``)."""
    defaults = Config().to_dict()
    parts = ["counterarg", "train"]
    if config.get("corpus"):
        parts += ["--corpus", portable_path(config["corpus"])]
    left_out = {*fields_with(SEED, MACHINE), "corpus"}  # the repeat, the machine; the corpus has its flag
    for k in sorted(config):
        if k in left_out or k not in defaults or format_value(config[k]) == format_value(defaults[k]):
            continue
        v = portable_path(config[k]) if k == "encoder" and "/" in str(config[k]) else _exact(config[k])
        parts += ["--set", f"{k}={v}"]
    return " ".join(_shell(p) for p in parts) + " --out OUT"


def _shell(part: str) -> str:
    """``part`` for a shell: as it is when plain, a leading ``~/`` or ``$TMPDIR/`` left to expand."""
    for lead in ("", "~/", "$TMPDIR/"):
        rest = part.split("=", 1)[1] if "=" in part else part
        if rest.startswith(lead) and re.fullmatch(r"[\w./=:,+@%-]*", part.replace(lead, "", 1)):
            return part
    return shlex.quote(part)


def scheduler_text(scheduler: str, max_t: int, grace: int, factor: float) -> str:
    """How a search's trials were scheduled, in words: ASHA's rungs (Ray's ``grace * factor**k``
    below ``max_t`` epochs) or every trial to its end (FIFO)."""
    if scheduler != "asha":
        return "FIFO: every trial ran to its last epoch or its own early stop (patience)"
    rungs: list[float] = [grace]
    while rungs[-1] * factor < max_t:
        rungs.append(rungs[-1] * factor)
    return (
        f"ASHA (grace period {grace}, reduction factor {factor:g}, up to {max_t} epochs): at epoch "
        f"{', '.join(f'{r:g}' for r in rungs)} a trial below the top 1/{factor:g} of those that reached "
        "that epoch before it stopped there"
    )


def search_markdown(
    records: Sequence[TrialRecord],
    searched: Sequence[str],
    *,
    metric: str = DEFAULT_METRIC,
    mode: str = DEFAULT_MODE,
    scheduler: str = "",
) -> str:
    """The search's section: the configurations ranked on ``metric`` (validation) with their searched
    fields' values, seeds, epochs run and test means, then the selected one and its command."""
    fields = [f for f in searched if f not in fields_with(SEED)]
    ranked = ranked_configurations(records, metric, mode)
    lines = [
        "## Search (validation)",
        "",
        f"{len(ranked)} configuration(s) sampled over {', '.join(f'`{f}`' for f in fields) or 'no field'}"
        + (f"; {scheduler}" if scheduler else "")
        + f". Ranked and selected on `{metric}` only (validation); "
        "the test columns are shown, never used to choose. The best of many configurations on the same "
        "validation queries flatters its validation figure: report its test figure.",
        "",
    ]
    header = ["rank", *fields, "seeds", "epochs run", metric, *TEST_COLUMNS]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, c in enumerate(ranked, 1):
        first, st = c["rows"][0], c["stats"]
        values = [short_value(first.get(f"config/{f}")) for f in fields]
        done = max(r["epochs_done"] for r in c["rows"])
        errored = sum(r["status"] == "ERROR" for r in c["rows"])
        seeds = f"{st['n']}/{st['trials']}" + (f" ({errored} errored)" if errored else "")
        lines.append(
            "| "
            + " | ".join(
                [
                    str(i) if metric in st else "–",
                    *values,
                    seeds,
                    str(done),
                    _mean(st, metric),
                    *(_mean(st, k) for k in TEST_COLUMNS),
                ]
            )
            + " |"
        )
    best = ranked[0] if ranked and metric in ranked[0]["stats"] else None
    lines.append("")
    if best is None:
        lines.append("No configuration finished an epoch: nothing selected.")
        return "\n".join(lines) + "\n"
    config = best["rows"][0]
    chosen = ", ".join(f"`{f}={format_value(config.get(f'config/{f}'))}`" for f in fields)
    full = {k[len("config/") :]: v for k, v in config.items() if k.startswith("config/")}
    lines += [
        f"**Selected** (rank 1 of {len(ranked)}, {metric} {best['stats'][metric][0]:.4f} over "
        f"{best['stats']['n']} seed(s)): {chosen or 'the start itself'}. Trained with:",
        "",
        f"    {selected_command(full)}",
        "",
    ]
    return "\n".join(lines)
