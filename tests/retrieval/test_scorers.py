"""The scorer registry (counterarg.retrieval.scorers): one query ranked by each entry, the fused formula, the
registry's checks, and a toy scorer registered here usable through train, evaluate and rank."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import score_classifier

from counterarg.cli import main
from counterarg.retrieval import scorers
from counterarg.retrieval.scorers import Scorer, get_scorer, rank_candidates, register_scorer
from counterarg.retrieval.tasks import EvaluationError


def test_rank_candidates():
    q = torch.tensor([0.0])
    cands = torch.tensor([[3.0], [1.0], [1.0], [2.0]])
    ids, scores = rank_candidates(q, cands, mode="retrieval")
    assert ids.tolist() == [1, 2, 3, 0]  # the tie 1/2 by lower index
    assert scores.tolist() == pytest.approx([1, 1, 2, 3])
    hc = torch.tensor([[0.0], [0.0], [1.0], [5.0]])
    ids, scores = rank_candidates(q, cands, torch.zeros(1), hc, score_classifier, mode="rerank", rerank_k=2, k=3)
    assert ids.tolist() == [2, 1, 3]
    assert scores[0] > scores[1] and math.isnan(scores[2])
    ids, _ = rank_candidates(q, cands, torch.zeros(1), torch.zeros(4, 1), score_classifier, mode="rerank", rerank_k=3)
    assert ids.tolist() == [1, 2, 3, 0]  # equal probabilities keep distance order


def test_fused_is_weight_times_log_odds_minus_distance():
    q = torch.tensor([0.0])
    cands = torch.tensor([[1.0], [2.0], [3.0]])
    hc = torch.tensor([[0.0], [1.5], [4.0]])  # log-odds = h (score_classifier)
    for w, want in ((0.0, [0, 1, 2]), (1.0, [2, 1, 0]), (0.5, [0, 2, 1])):  # 0.5: a tie, distance order
        ids, scores = rank_candidates(
            q, cands, torch.zeros(1), hc, score_classifier, mode="fused", rerank_k=3, fused_w=w
        )
        assert ids.tolist() == want, w
        assert scores.tolist() == pytest.approx([w * float(hc[i, 0]) - float(cands[i, 0]) for i in want])


def test_registry_names_its_entries_and_refuses_bad_ones(monkeypatch):
    monkeypatch.setattr(scorers, "SCORERS", dict(scorers.SCORERS))  # undone after the test
    assert list(scorers.SCORERS)[:3] == ["retrieval", "rerank", "fused"]
    assert get_scorer("fused").picks_weight and not get_scorer("rerank").picks_weight
    with pytest.raises(EvaluationError, match="mode must be one of retrieval, rerank, fused.*'fussed'"):
        get_scorer("fussed")
    with pytest.raises(EvaluationError, match="exists already"):
        register_scorer(Scorer("rerank"))
    with pytest.raises(EvaluationError, match="needs combine"):
        register_scorer(Scorer("half", needs_classifier=True))


@pytest.fixture
def toy_scorer(monkeypatch):
    """``least_likely``: the top rerank_k reordered by the classifier's *lowest* probability first."""
    monkeypatch.setattr(scorers, "SCORERS", dict(scorers.SCORERS))
    return register_scorer(
        Scorer("least_likely", needs_classifier=True, combine=lambda v, d, w: -v, label="-p(counter)")
    )


@pytest.mark.slow
def test_a_toy_scorer_is_one_entry_for_train_evaluate_and_rank(toy_scorer, tiny_encoder, tmp_path, capsys):
    run = tmp_path / "run"
    toy = ["--set", "eval_mode=least_likely"]
    assert (
        main(
            [
                "train",
                "--out",
                str(run),
                "--quiet",
                "--epochs",
                "1",
                "--set",
                f"encoder={tiny_encoder}",
                "--set",
                "max_length=32",
                "--set",
                "rerank_k=3",
                *toy,
            ]
        )
        == 0
    )
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert json.loads((run / "config.json").read_text())["eval_mode"] == "least_likely"
    js = tmp_path / "v.json"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(run / "checkpoint"),
                "--split",
                "validation",
                "--quiet",
                "--json",
                str(js),
                *toy,
            ]
        )
        == 0
    )
    got = json.loads(js.read_text())
    want = {k: v for k, v in row.items() if k.startswith("validation/") and "/acc@" in k}
    assert {k: got[k] for k in want} == pytest.approx(want, abs=1e-9)  # evaluate scores as training did
    capsys.readouterr()
    args = [
        "rank",
        "--checkpoint",
        str(run / "checkpoint"),
        "--text",
        "Taxes on banks hurt growth",
        "--split",
        "test",
        "--k",
        "3",
        "--json",
        "--quiet",
    ]
    assert main(args + toy) == 0
    least = json.loads(capsys.readouterr().out)
    assert main(args + ["--set", "eval_mode=rerank"]) == 0
    rerank = json.loads(capsys.readouterr().out)
    assert least["score"] == "-p(counter)" and least["mode"] == "least_likely"
    # the same top 3 by distance, in the reverse order of the reference's rerank, scored -p
    assert [r["id"] for r in least["results"]] == [r["id"] for r in rerank["results"]][::-1]
    assert [r["score"] for r in least["results"]] == pytest.approx([-r["score"] for r in rerank["results"]][::-1])
