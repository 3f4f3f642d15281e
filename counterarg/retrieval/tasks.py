"""The eight counterargument-retrieval tasks (Wachsmuth et al., ACL 2018): the task registry.

A task is one :class:`Task` record in :data:`REGISTRY`: a rule saying which candidates share a
query's pool. Everything else (pool masks and sizes in pools.py, the evaluator's whole-split fast
path, metric keys, summary columns) follows from the record, so adding a task is one
:func:`register_task` call (at the end of this module, or from outside) plus its test.

=====  ===========================================================================
task   pool of query ``i``
=====  ===========================================================================
sdoc   counters of the same debate and the same side folder (pro/con)
sdoa   counters of the same debate and side, plus points of the debate's other side
sdc    all counters of the debate
sda    all counters and all other points of the debate (not point ``i`` itself)
stc    all counters of the theme
sta    all counters and all other points of the theme
epc    all counters of the split
epa    all counters and all other points of the split
=====  ===========================================================================

Pools are built from true pairs only (unpaired records are neither queries nor candidates), and
the true counter is always in the pool. How a split's pools are laid out and built, with the copy
rule and the unseen view: pools.py.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """One retrieval task: which candidates share a query's pool, as a rule over pair labels.

    ``scope`` groups the pairs (``debate_side``: the same debate and side folder, ``debate``,
    ``theme``, ``split``: all of them); the pool holds the counters of the query's group and, by
    ``points``, no points (``None``), the other points of the group (``"group"``), or the points of
    the debate's other side (``"other_side"``, only with ``scope="debate_side"``). Everything else
    (pool masks, sizes, the evaluator's whole-split fast path, summary columns) follows from this.
    """

    name: str
    description: str
    scope: str  # debate_side | debate | theme | split
    points: str | None = None  # None | group | other_side

    @property
    def split_wide(self) -> bool:
        """Pools are the whole split: the evaluator ranks columns of its distance block directly."""
        return self.scope == "split"

    @property
    def with_points(self) -> bool:
        return self.points is not None


#: The registry: task name -> record, in registration order (the eight of Wachsmuth et al. (2018) are
#: registered at the end of this module, in their order; adding a task is one more register_task call).
REGISTRY: dict[str, Task] = {}
TASKS: tuple[str, ...] = ()  # the eight, as registered at import; task_names() sees later registrations
SCOPES = ("debate_side", "debate", "theme", "split")


def task_names() -> tuple[str, ...]:
    """Every registered task, in order (read at call time, so registered tasks are included)."""
    return tuple(REGISTRY)


def register_task(task: Task) -> Task:
    """Add a task (a new pool rule) to :data:`REGISTRY`; evaluation, metrics and summaries pick it up.

    ``TASKS`` is rebuilt in place of the module attribute, so code that reads ``tasks.TASKS`` at call
    time sees it. Raises :class:`EvaluationError` for a taken name or an unknown scope/points rule.
    """
    global TASKS
    if task.name in REGISTRY:
        raise EvaluationError(f"task {task.name!r} exists already")
    if (
        task.scope not in SCOPES
        or task.points not in (None, "group", "other_side")
        or (task.points == "other_side" and task.scope != "debate_side")
    ):
        raise EvaluationError(
            f"task {task.name!r}: scope must be one of {', '.join(SCOPES)} and points "
            f"None, 'group' or 'other_side' (with scope debate_side); got {task.scope!r}, "
            f"{task.points!r}"
        )
    REGISTRY[task.name] = task
    TASKS = tuple(REGISTRY)
    return task


class EvaluationError(ValueError):
    """Evaluation cannot run as asked (empty split or pool, mismatched shapes, unknown task)."""


def check_tasks(tasks=None) -> tuple[str, ...]:
    """Validate a task list (default: all registered) and return it as a tuple; unknown names raise
    :class:`EvaluationError`."""
    tasks = task_names() if tasks is None else tuple(tasks)
    unknown = [t for t in tasks if t not in REGISTRY]
    if unknown:
        raise EvaluationError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(task_names())}")
    if not tasks:
        raise EvaluationError("no tasks to evaluate")
    return tasks


for _task in (
    Task("sdoc", "same debate, same side: counters", "debate_side"),
    Task("sdoa", "same debate: same-side counters + other-side points", "debate_side", "other_side"),
    Task("sdc", "same debate: all counters", "debate"),
    Task("sda", "same debate: all counters + other points", "debate", "group"),
    Task("stc", "same theme: all counters", "theme"),
    Task("sta", "same theme: all counters + other points", "theme", "group"),
    Task("epc", "entire portal: all counters", "split"),
    Task("epa", "entire portal: all counters + other points", "split", "group"),
):
    register_task(_task)
