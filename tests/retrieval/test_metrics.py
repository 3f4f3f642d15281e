"""Metrics from ranks (counterarg.retrieval.metrics): acc@k and MRR by hand, the unseen view, the text table."""

from __future__ import annotations

import pytest
import torch

from counterarg.retrieval.metrics import format_table, metric_key, metrics_from_ranks, unseen_split, view_metrics
from counterarg.retrieval.pools import pools_from_labels
from counterarg.retrieval.tasks import EvaluationError


def test_acc_and_mrr_from_ranks_by_hand():
    m = metrics_from_ranks("test", {"sdoc": torch.tensor([1, 2, 4]), "epa": torch.tensor([1, 1, 10])}, ks=(1, 3))
    assert m[metric_key("test", "sdoc", "acc@1")] == pytest.approx(1 / 3)
    assert m["test/sdoc/acc@3"] == pytest.approx(2 / 3)
    assert m["test/sdoc/mrr"] == pytest.approx((1 + 1 / 2 + 1 / 4) / 3)
    assert m["test/epa/acc@1"] == pytest.approx(2 / 3) and m["test/epa/mrr"] == pytest.approx((2 + 0.1) / 3)
    assert m["test/mean/acc@1"] == pytest.approx(0.5)
    assert m["test/mean/mrr"] == pytest.approx((m["test/sdoc/mrr"] + m["test/epa/mrr"]) / 2)


def test_view_metrics_add_the_unseen_queries_only_when_there_are_some():
    ranks = {"sdoc": torch.tensor([1, 3, 1, 2])}
    labels = (["t/d"] * 4, ["pro", "pro", "con", "con"])
    with_view = view_metrics("test", pools_from_labels("test", *labels, unseen=[True, True, False, False]), ranks)
    assert unseen_split("test") == "test_unseen"
    assert with_view["test/sdoc/acc@1"] == pytest.approx(0.5) and with_view["test_unseen/sdoc/acc@1"] == 0.5
    assert with_view["test_unseen/sdoc/mrr"] == pytest.approx((1 + 1 / 3) / 2)
    none_unseen = view_metrics("test", pools_from_labels("test", *labels, unseen=[False] * 4), ranks)
    assert not any(k.startswith("test_unseen/") for k in none_unseen)
    assert not any(
        k.startswith("test_unseen/") for k in view_metrics("test", pools_from_labels("test", *labels), ranks)
    )


def test_format_table_rows_columns_and_pool_sizes():
    pools = pools_from_labels("test", ["t/d"] * 4, ["pro", "pro", "con", "con"])
    m = metrics_from_ranks("test", {"sdoc": torch.tensor([1, 2, 1, 1]), "epc": torch.tensor([1, 4, 2, 1])})
    lines = format_table(m, "test", pools).splitlines()
    assert lines[0].split() == ["test", "acc@1", "acc@5", "acc@10", "mrr", "pool"]
    assert [ln.split()[0] for ln in lines[2:]] == ["sdoc", "epc", "mean"]  # registry order, then the mean
    assert lines[2].split()[1] == "0.750" and lines[2].split()[-1] == "2.0"  # two counters per debate side
    assert lines[3].split()[-1] == "4.0" and len(lines[4].split()) == 5  # the mean row has no pool size
    assert "pool" not in format_table(m, "test").splitlines()[0]
    with pytest.raises(EvaluationError, match="no metrics for split 'validation'"):
        format_table(m, "validation")
