"""The ArguAna view (counterarg.retrieval.arguana): its construction on a hand-made corpus (queries,
relevant texts, copies, the unseen mask), its measures against pytrec_eval, its table, and the counts on
the real corpus."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from counterarg.data.corpus import Corpus, Pair, Record, Split, TextTable, load_corpus
from counterarg.retrieval.arguana import MAIN, MEASURES, VIEW, build_view, format_view, view_metrics
from counterarg.retrieval.tasks import EvaluationError


def _rec(split, debate, side, number, kind, text):
    return Record(split, "T", debate, side, number, kind, text, "mem")


def _split(name, pairs, unpaired=()):
    ps = [Pair(_rec(name, d, s, n, "point", pt), _rec(name, d, s, n, "counter", ct)) for d, s, n, pt, ct in pairs]
    un = [_rec(name, d, s, n, "point", pt) for d, s, n, pt in unpaired]
    return Split(name, [r for p in ps for r in (p.point, p.counter)] + un, ps, un)


def small_corpus() -> Corpus:
    """Training holds "P-old"/"C-old"; test repeats "P-old" as a point and copies "C2" under a second
    debate; one test point has no counter; validation holds one more pair."""
    training = _split(
        "training",
        [("d0", "pro", 1, "P-old", "C-old"), ("d0", "con", 1, "P-t", "C-t")],
        unpaired=[("d0", "pro", 2, "P-lonely-train")],
    )
    validation = _split("validation", [("d5", "pro", 1, "P-v", "C-v")])
    test = _split(
        "test",
        [
            ("d1", "pro", 1, "P1", "C1"),
            ("d1", "con", 1, "P-old", "C-new"),  # its point occurs in training: seen
            ("d2", "pro", 1, "P2", "C2"),
            ("d3", "pro", 1, "P2", "C2"),
        ],  # the same pair filed under a second debate
        unpaired=[("d1", "pro", 2, "P-no-counter")],
    )
    return Corpus("mem", {"training": training, "validation": validation, "test": test})


def test_view_queries_relevant_texts_and_copies():
    corpus = small_corpus()
    table = TextTable.from_corpus(corpus)
    view = build_view(corpus, table, "test")
    texts = table.texts
    # the collection: every distinct text of the pairs once (the unpaired files' texts are not in it)
    assert sorted(texts[i] for i in view.docs) == sorted(
        {"P-old", "C-old", "P-t", "C-t", "P-v", "C-v", "P1", "C1", "C-new", "P2", "C2"}
    )
    # queries: the pairs in order, then the point without a counter
    assert [texts[i] if i >= 0 else None for i in view.query] == ["P1", "P-old", "P2", "P2", None]
    assert [texts[i] if i >= 0 else None for i in view.relevant] == ["C1", "C-new", "C2", "C2", None]
    assert view.answerable.tolist() == [True, True, True, True, False]
    # unseen: no text of the query occurs in training (the point without a counter: its point only)
    assert view.unseen.tolist() == [True, False, True, True, True]
    assert view.corpus_texts == 13  # the 11 above, plus the 2 texts found only in unpaired files
    assert "5 queries" in view.describe() and "1 without a counter" in view.describe()


def test_view_of_a_split_without_points_and_of_training():
    corpus = small_corpus()
    table = TextTable.from_corpus(corpus)
    assert build_view(corpus, table, "training").unseen is None  # training has no unseen view
    empty = Corpus("mem", {**corpus.splits, "validation": Split("validation", [], [], [])})
    with pytest.raises(EvaluationError, match="no point files"):
        build_view(empty, TextTable.from_corpus(empty), "validation")


def test_measures_are_closed_forms_of_the_rank():
    view = build_view(small_corpus(), TextTable.from_corpus(small_corpus()), "test")
    ranks = torch.tensor([1.0, 3.0, 10.0, 150.0, float("inf")])
    m = view_metrics("test", view, ranks)
    assert m[f"test/{VIEW}/ndcg@1"] == pytest.approx(1 / 5)
    assert m[f"test/{VIEW}/ndcg@10"] == pytest.approx((1 + 1 / np.log2(4) + 1 / np.log2(11)) / 5)
    assert m[f"test/{VIEW}/mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 10) / 5)
    assert m[f"test/{VIEW}/recall@100"] == pytest.approx(3 / 5)
    # the unseen view: queries 0, 2, 3, 4
    assert m[f"test_unseen/{VIEW}/recall@100"] == pytest.approx(2 / 4)
    assert set(m) == {f"{s}/{VIEW}/{name}" for s in ("test", "test_unseen") for name in MEASURES}
    with pytest.raises(EvaluationError, match="ranks have shape"):
        view_metrics("test", view, ranks[:3])


def test_measures_equal_pytrec_eval_on_hand_made_rankings():
    """Random scores over 300 documents for 40 queries (no ties), one relevant document each (none
    for three of them): the measures from the relevant document's rank equal pytrec_eval's, which
    MTEB uses (MRR@10 as recip_rank over each run cut at 10, as MTEB's top-10 MRR)."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(3)
    q, n = 40, 300
    scores = rng.permutation(q * n).reshape(q, n).astype(float)  # distinct: no ties
    relevant = rng.integers(0, n, q)
    relevant[[5, 17, 33]] = -1  # no relevant document in the collection
    qrels = {f"q{i}": {(f"d{relevant[i]}" if relevant[i] >= 0 else "missing"): 1} for i in range(q)}
    run = {f"q{i}": {f"d{j}": scores[i, j] for j in range(n)} for i in range(q)}
    top10 = {k: dict(sorted(v.items(), key=lambda kv: -kv[1])[:10]) for k, v in run.items()}
    want = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.1,10", "recall.100"}).evaluate(run)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    ranks = torch.tensor(
        [float((scores[i] >= scores[i, relevant[i]]).sum()) if relevant[i] >= 0 else np.inf for i in range(q)]
    )
    from counterarg.retrieval.arguana import ArguAnaView

    view = ArguAnaView("test", np.arange(n), np.zeros(q, np.int64), relevant, None, n)
    got = view_metrics("test", view, ranks)
    lib = {"ndcg@10": "ndcg_cut_10", "ndcg@1": "ndcg_cut_1", "recall@100": "recall_100"}
    for name, key in lib.items():
        assert got[f"test/{VIEW}/{name}"] == pytest.approx(np.mean([want[k][key] for k in want]), abs=1e-12)
    assert got[f"test/{VIEW}/mrr@10"] == pytest.approx(np.mean([rr[k]["recip_rank"] for k in rr]), abs=1e-12)
    assert set(lib) | {"mrr@10"} == set(MEASURES)  # every measure is checked


def test_table_shows_both_views_in_per_cent():
    view = build_view(small_corpus(), TextTable.from_corpus(small_corpus()), "test")
    m = view_metrics("test", view, torch.tensor([1.0, 2.0, 1.0, 1.0, float("inf")]))
    table = format_view(m, "test", view)
    lines = table.splitlines()
    assert lines[0].split() == [VIEW, *MEASURES, "queries"]
    assert lines[2].split()[0] == "test" and lines[2].split()[-1] == "5"
    assert lines[3].split()[0] == "test_unseen" and lines[3].split()[-1] == "4"
    assert float(lines[2].split()[2]) == pytest.approx(60.0)  # ndcg@1: 3 of 5
    with pytest.raises(EvaluationError, match=MAIN):
        format_view({}, "test", view)


@pytest.mark.corpus
def test_view_counts_on_the_real_corpus(real_corpus):
    """BEIR's query count (1,406 test point files, five without a counter), the collection (8,550
    distinct texts of the pairs, of the corpus's 8,567) and the unseen queries."""
    corpus = load_corpus(real_corpus)
    view = build_view(corpus, TextTable.from_corpus(corpus), "test")
    assert view.num_queries == 1406 and int((~view.answerable).sum()) == 5
    assert view.docs.shape[0] == 8550 and view.corpus_texts == 8567
    assert (view.query >= 0).sum() == 1401  # the five points without a counter are in no pair
    assert int(view.unseen[:1401].sum()) == 783  # the eight tasks' unseen queries (pools.py)
