"""The task registry (counterarg.retrieval.tasks): the eight tasks in order, unknown names refused, and a task
registered in one entry is evaluated, tabled and summarised."""

from __future__ import annotations

import pytest
import torch
from conftest import LAYOUT, make_split

from counterarg.retrieval.pools import build_pools
from counterarg.retrieval.tasks import REGISTRY, TASKS, EvaluationError, check_tasks


def test_tasks_tuple():
    assert TASKS == ("sdoc", "sdoa", "sdc", "sda", "stc", "sta", "epc", "epa")


@pytest.fixture
def toy_task():
    """A ninth task registered for one test: counters and other points of the same debate side."""
    import counterarg.retrieval.tasks as tasks_mod

    task = tasks_mod.register_task(
        tasks_mod.Task("sdsa", "same debate side: counters + other points", "debate_side", "group")
    )
    yield task
    tasks_mod.REGISTRY.pop(task.name)
    tasks_mod.TASKS = tuple(tasks_mod.REGISTRY)


def test_a_registered_task_is_evaluated_and_summarised(toy_task, tmp_path):
    from counterarg.analysis.summary import summary_markdown
    from counterarg.analysis.trials import TrialRecord, summary_rows
    from counterarg.evaluation.evaluate import evaluate_split
    from counterarg.retrieval.metrics import format_table
    from counterarg.retrieval.tasks import Task, register_task, task_names

    pools = build_pools(make_split(LAYOUT))
    assert set(pools.members("sdsa", 0).tolist()) == {0, 1, 9}  # d1/pro counters 0, 1 and point 1
    q = pools.num_queries
    g = torch.Generator().manual_seed(0)
    m = evaluate_split("test", pools, torch.randn(q, 4, generator=g), torch.randn(q, 4, generator=g), mode="retrieval")
    assert "test/sdsa/acc@1" in m and "\nsdsa " in format_table(m, "test", pools)
    assert m["test/mean/acc@1"] == pytest.approx(sum(m[f"test/{t}/acc@1"] for t in task_names()) / 9)
    row = {"epoch": 1, "validation/mean/acc@1": 0.5, "validation_unseen/mean/acc@1": 0.5, **m}
    md = summary_markdown(summary_rows([TrialRecord("a", {"schedule": "random"}, [row])]))
    assert "| epa | sdsa | mean |" in md  # the summary's columns follow the registry
    with pytest.raises(EvaluationError, match="exists already"):
        register_task(Task("sdoc", "again", "debate"))
    with pytest.raises(EvaluationError, match="scope"):
        register_task(Task("bad", "?", "galaxy"))


def test_check_tasks_names_unknown_tasks_and_keeps_order():
    assert check_tasks() == TASKS and check_tasks(["epa", "sdoc"]) == ("epa", "sdoc")
    with pytest.raises(EvaluationError, match=r"unknown task\(s\) nope; known: sdoc, sdoa"):
        check_tasks(["sdoc", "nope"])
    with pytest.raises(EvaluationError, match="no tasks"):
        check_tasks([])
    assert all(REGISTRY[t].split_wide == (t in ("epc", "epa")) for t in TASKS)
    assert [t for t in TASKS if REGISTRY[t].with_points] == ["sdoa", "sda", "sta", "epa"]
