"""The HParams table of a sweep in TensorBoard: its columns, its metrics and the protos that carry them.

How TensorBoard's HParams tab picks what it shows (tensorboard 2.21, ``plugins/hparams``): the
server answers ``POST /data/plugin/hparams/experiment`` with the first ``_hparams_/experiment``
summary it finds in any run, but sorts its columns by ``(not differs, name)`` before answering
(``backend_context._sort_and_reduce_to_hparams_limit``); the page ticks the first five columns and
the first five metrics, in the order served. tensorboardX's ``hparams()`` sets no ``differs`` and no
display name, so a sweep's table opened on ``batch_size, dedupe_pairs, eval_metric, ...`` whatever
order it wrote. Here every column is written with ``differs`` set and a *name* that sorts in the
order wanted (``01 method``, ``02 strategy``, ``03 seed``, the schedule and its fields, the searched
fields, then the other fields that vary); the page shows each column's display name (``method``).
The metrics keep the order written: the sweep's metric first, then the unseen view's test mean.

The Trial ID column is 10em wide: a trial's session group is named by its short Tune id (the
``trial_id`` of summary.csv, the ``trial_<id>_...`` folder), which it shows in full, beside the
strategy and seed columns. The last column, ``ended``, says how the trial ended
(:data:`counterarg.analysis.endings.ENDINGS`: its planned epochs, patience, its scheduler). The
protos are TensorBoard's own (``tensorboard.plugins.hparams``), carried in tensorboardX summaries.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

from ..analysis.methods import strategy_label
from ..config import LABEL, MACHINE, Config, fields_with
from ..retrieval.tasks import task_names
from ..sampling import schedules
from ..sampling.schedules import format_value

EXPERIMENT_TAG, START_TAG, END_TAG = (
    "_hparams_/experiment",
    "_hparams_/session_start_info",
    "_hparams_/session_end_info",
)
#: The splits and views whose acc@1 at the selected epoch are metric columns.
METRIC_SPLITS = ("validation", "validation_unseen", "test", "test_unseen")
#: Where the values at a trial's selected epoch are logged (a running value per epoch); TensorBoard
#: tags cannot hold ``@`` (tensorboardX writes it ``_``).
SELECTED = "selected"
#: The columns every sweep's table starts with, before its schedule and searched fields.
LEAD = ("method", "strategy", "seed")


def tag_of(key: str) -> str:
    """A metric key as a TensorBoard tag: ``validation/sdoc/acc@1`` -> ``validation/sdoc/acc_1``."""
    return key.replace("@", "_")


def selected_tag(key: str) -> str:
    """The tag of ``key``'s value at the trial's selected epoch: ``selected/validation/sdoc/acc_1``."""
    return f"{SELECTED}/{tag_of(key)}"


def metric_keys(metric: str) -> list[str]:
    """The metric columns in order: the sweep's metric, the unseen view's test mean (or the full
    view's, when the sweep selects on that), the other means, then each task's acc@1 per split."""
    unseen = "test_unseen/mean/acc@1" if metric != "test_unseen/mean/acc@1" else "test/mean/acc@1"
    keys = [metric, unseen, *(f"{s}/mean/acc@1" for s in METRIC_SPLITS)]
    keys += [f"{s}/{t}/acc@1" for s in METRIC_SPLITS for t in task_names()]
    return list(dict.fromkeys(keys))


@dataclass(frozen=True)
class Column:
    """One HParams column: the field it shows, the name that orders it, its type."""

    field: str
    name: str  # "<rank> <field>": TensorBoard sorts the columns by this
    kind: str  # "string" | "number" | "bool"


def _kind(field: str) -> str:
    if field in LEAD:  # a seed is a name, not a quantity: "1", never "1.0000"
        return "string"
    default = Config().to_dict().get(field)
    if isinstance(default, bool):
        return "bool"
    return "number" if isinstance(default, (int, float)) else "string"


def table_columns(configs: Sequence[Mapping[str, Any]], fields: Iterable[str] = ()) -> list[Column]:
    """The sweep's columns: method, strategy, seed, ``schedule`` and the fields its schedules read,
    then ``fields`` (the searched or varying fields), placement and paths left out, and ``ended``."""
    order = list(LEAD) + ["schedule"]
    for cfg in configs or [{}]:
        entry = schedules.SCHEDULES.get({**Config().to_dict(), **dict(cfg)}["schedule"])
        order += list(entry.fields) if entry else []
    order += [f for f in fields if f not in fields_with(MACHINE, LABEL)] + ["ended"]
    order = list(dict.fromkeys(order))
    return [Column(f, f"{i + 1:02d} {f}", _kind(f)) for i, f in enumerate(order)]


def column_values(columns: Sequence[Column], config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's value in each column that applies to it (a schedule field only where its schedule
    reads it): ``{column name: value}``; the method the trial carries (``none`` for a config no sweep
    labelled), the strategy as summary.csv's strategy column."""
    full = {**Config().to_dict(), **dict(config)}
    entry = schedules.SCHEDULES.get(full["schedule"])
    rate_fields = {f for c in schedules.SCHEDULES.values() for f in c.fields}
    out: dict[str, Any] = {}
    for c in columns:
        if c.field == "method":
            v: Any = full.get("method") or "none"  # the method the trial carries, made with its variant
        elif c.field == "strategy":
            v = strategy_label(full)
        elif c.field in rate_fields and (entry is None or c.field not in entry.fields):
            continue
        else:
            v = full.get(c.field)
        if v is None:
            continue
        out[c.name] = (
            bool(v)
            if c.kind == "bool"
            else float(v)
            if c.kind == "number" and isinstance(v, (int, float))
            else format_value(v)
            if not isinstance(v, str)
            else v
        )
    return out


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    meta = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name="hparams", content=data.SerializeToString())
    )
    return Summary(value=[Summary.Value(tag=tag, metadata=meta)])


_TYPES = {"string": api_pb2.DATA_TYPE_STRING, "number": api_pb2.DATA_TYPE_FLOAT64, "bool": api_pb2.DATA_TYPE_BOOL}


def experiment_summary(columns: Sequence[Column], metric: str) -> Summary:
    """The sweep's ``_hparams_/experiment``: its columns (each ``differs``, so none is moved behind
    the others) and its metric columns (the values at each trial's selected epoch by ``metric``)."""
    hparams = [
        api_pb2.HParamInfo(name=c.name, display_name=c.field, type=_TYPES[c.kind], differs=True) for c in columns
    ]
    metrics = [
        api_pb2.MetricInfo(
            name=api_pb2.MetricName(tag=selected_tag(k)),
            display_name=k,
            description=f"at the trial's selected epoch (best {metric})",
        )
        for k in metric_keys(metric)
    ]
    exp = api_pb2.Experiment(hparam_infos=hparams, metric_infos=metrics, time_created_secs=time.time())
    return _summary(EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=exp, version=0))


def session_start_summary(values: Mapping[str, Any], group: str) -> Summary:
    """A trial's row: its column values, its session group named ``group`` (its short id)."""
    info = plugin_data_pb2.SessionStartInfo(group_name=group, start_time_secs=time.time())
    for name, v in values.items():
        if isinstance(v, bool):
            info.hparams[name].bool_value = v
        elif isinstance(v, (int, float)):
            info.hparams[name].number_value = float(v)
        else:
            info.hparams[name].string_value = str(v)
    return _summary(START_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=info, version=0))


def session_end_summary() -> Summary:
    """A finished trial's status: success."""
    info = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
    return _summary(END_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=info, version=0))
