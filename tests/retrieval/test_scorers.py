"""The scorer registry (counterarg.retrieval.scorers): one query and a split's pools ranked by each entry, the
fused formula, the registry's checks, and a toy scorer registered here usable through train, evaluate and rank."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import score_classifier

from counterarg.cli import main
from counterarg.retrieval import scorers
from counterarg.retrieval.pool_ranks import split_embeddings
from counterarg.retrieval.pools import pools_from_labels
from counterarg.retrieval.scorers import Scorer, check_options, get_scorer, rank_candidates, register_scorer
from counterarg.retrieval.tasks import TASKS, EvaluationError


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


# One debate, Q = 3 (pairs 0, 1 pro; 2 con); candidates: counters 0..2, then points 3..5. Query 2 (point
# at 20) in epa, by squared L2: c1 49, p1 100, c2 100 (its true counter, after its tie), c0 361, p0 400.
# Logit of the positive class = the candidate's h (c0 0, c1 1, c2 2, every point 0). The top 3 (c1, p1, c2)
# by probability: c2 first (rank 1); by 10 * log-odds - distance: c1 -39, c2 -80, p1 -100 (rank 2).
TINY_RANKS = {
    "retrieval": {"sdoc": [1, 1, 1], "sdoa": [1, 1, 2], "sdc": [1, 1, 2], "sda": [1, 1, 3], "epa": [1, 1, 3]},
    "rerank": {"sdoc": [2, 1, 1], "sdoa": [3, 1, 1], "sdc": [3, 2, 1], "sda": [3, 1, 1], "epa": [3, 1, 1]},
    "fused": {"sdoc": [1, 1, 1], "sdoa": [1, 1, 1], "sdc": [1, 1, 2], "sda": [1, 1, 2], "epa": [1, 1, 2]},
}


def tiny_split(scorer: Scorer, tasks=TASKS):
    """The pools and the checked embeddings of the split above, for ``scorer``."""
    pools = pools_from_labels("test", ["t/x"] * 3, ["pro", "pro", "con"])
    p, c = torch.tensor([[0.0], [10.0], [20.0]]), torch.tensor([[1.0], [13.0], [30.0]])
    hp, hc = torch.zeros(3, 1), torch.tensor([[0.0], [1.0], [2.0]])
    emb = split_embeddings(
        pools, p, c, hp, hc, metric="l2", tasks=tasks, split="test", scorer=scorer, classify=score_classifier
    )
    return pools, emb


@pytest.mark.parametrize("name", list(TINY_RANKS))
def test_each_registered_mode_ranks_a_splits_pools(name):
    """Each entry's rank_pools gives the ranks the evaluator gave before it was split by scorer (and, in
    one debate, the theme and whole-split tasks rank as the debate's: stc = sdc, epc = sdc, sta = sda)."""
    scorer = check_options(name, "l2", 3)
    pools, emb = tiny_split(scorer)
    ranks = scorer.rank_pools(pools, emb, TASKS, score_classifier, rerank_k=3, fused_w=10.0)
    want = {**TINY_RANKS[name], "stc": TINY_RANKS[name]["sdc"], "sta": TINY_RANKS[name]["sda"]}
    want["epc"] = want["sdc"]
    assert {t: r.tolist() for t, r in ranks.items()} == want
    if scorer.needs_classifier:  # the top 1 reranked is the distance order
        assert scorer.rank_pools(pools, emb, TASKS, score_classifier, rerank_k=1)["epa"].tolist() == [1, 1, 3]


def test_a_registered_scorer_ranks_pools_by_its_own_score(toy_scorer):
    """``least_likely`` puts the classifier's least likely of each top first. Query 2's top 3: p1, c1, c2
    (rank 3); query 0's (c0, p1, c1): p1 ties c0 and goes ahead (2); query 1's (c1, c0, p0): 3. With the
    top 2, query 2's true counter (third by distance) keeps its rank."""
    pools, emb = tiny_split(toy_scorer, ("epa",))
    assert toy_scorer.rank_pools(pools, emb, ("epa",), score_classifier, rerank_k=3)["epa"].tolist() == [2, 3, 3]
    assert toy_scorer.rank_pools(pools, emb, ("epa",), score_classifier, rerank_k=2)["epa"].tolist() == [2, 2, 3]
    with pytest.raises(EvaluationError, match="mode 'least_likely' needs a classify"):
        split_embeddings(
            pools, emb.point_sim, emb.counter_sim, metric="l2", tasks=("epa",), split="t", scorer=toy_scorer
        )


def test_options_are_checked_in_one_place():
    with pytest.raises(EvaluationError, match="metric must be one of l2, cosine; got 'dot'"):
        check_options("retrieval", "dot", 10)
    with pytest.raises(EvaluationError, match="rerank_k must be >= 1, got 0"):
        check_options("rerank", "l2", 0)
    assert check_options("fused", "cosine", 1) is get_scorer("fused")


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
