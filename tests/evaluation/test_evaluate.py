"""Scoring: acc@k / MRR by hand, ties, rerank against the classifier, a brute-force reference, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import score_classifier

from counterarg.evaluation.evaluate import EvaluationError, evaluate_split, query_ranks
from counterarg.retrieval.metrics import format_table
from counterarg.retrieval.pools import Pools, pools_from_labels
from counterarg.retrieval.tasks import TASKS

# One debate, Q = 3 (pairs 0, 1 pro; 2 con). 1-D sims; counters = candidates 0..2, points 3..5.
P1 = torch.tensor([[0.0], [10.0], [20.0]])  # points at 0, 10, 20
C1 = torch.tensor([[1.0], [13.0], [30.0]])  # counters at 1, 13, 30


@pytest.fixture
def one_debate():
    return pools_from_labels("test", ["t/x"] * 3, ["pro", "pro", "con"])


def test_acc_and_mrr_by_hand(one_debate):
    # epc: q0 -> c0 nearest (rank 1); q1 -> c1 (3) < c0 (9): 1; q2 -> c1 (7) < c2 (10): 2
    # epa: q2's true counter (10) ties with point 1 (10) and goes after it: c1, p1, c2 -> 3
    m = evaluate_split("test", one_debate, P1, C1, mode="retrieval", ks=(1, 2, 3), tasks=("epc", "epa"))
    assert m["test/epc/acc@1"] == pytest.approx(2 / 3)
    assert m["test/epc/acc@2"] == pytest.approx(1.0)
    assert m["test/epc/mrr"] == pytest.approx((1 + 1 + 1 / 2) / 3)
    assert m["test/epa/acc@1"] == pytest.approx(2 / 3)
    assert m["test/epa/acc@2"] == pytest.approx(2 / 3)
    assert m["test/epa/acc@3"] == pytest.approx(1.0)
    assert m["test/epa/mrr"] == pytest.approx((1 + 1 + 1 / 3) / 3)
    assert m["test/mean/acc@1"] == pytest.approx(2 / 3)
    assert m["test/mean/mrr"] == pytest.approx(((5 / 6) + (7 / 9)) / 2)
    assert set(m) == {f"test/{t}/{n}" for t in ("epc", "epa", "mean") for n in ("acc@1", "acc@2", "acc@3", "mrr")}


def test_degenerate_embeddings_get_worst_rank(one_debate):
    same = torch.zeros(3, 4)
    ranks = query_ranks(one_debate, same, same, mode="retrieval", tasks=("epc", "epa"))
    assert ranks["epc"].tolist() == [3, 3, 3]  # all tie: the true counter goes last
    assert ranks["epa"].tolist() == [5, 5, 5]


def test_cosine_metric(one_debate):
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    c = torch.tensor([[5.0, 0.1], [0.1, 3.0], [-1.0, 0.0]])  # scale is ignored by cosine
    r = query_ranks(one_debate, p, c, mode="retrieval", metric="cosine", tasks=("epc",))["epc"]
    assert r.tolist() == [1, 1, 3]


def test_rerank_follows_classifier(one_debate):
    # q2's distance order in epa: c1 (7), p1 (10), c2 (10, true, after its tie), c0 (19), p0 (20)
    ph = torch.tensor([[0.0], [0.0], [0.0]])
    ch = torch.tensor([[0.0], [1.0], [2.0]])  # classifier prefers c2 > c1 > c0
    # p1 (candidate 4) scores via point_h[1]; (2.0, 3): p1 ties c2 in probability and goes first
    for p1_score, k, expected_q2 in [(0.0, 3, 1), (3.0, 3, 2), (0.0, 2, 3), (2.0, 3, 2), (0.0, 1, 3)]:
        ph = torch.tensor([[0.0], [p1_score], [0.0]])
        r = query_ranks(one_debate, P1, C1, ph, ch, score_classifier, mode="rerank", rerank_k=k, tasks=("epa",))["epa"]
        assert r[2].item() == expected_q2, (p1_score, k)
    # q0: distance order c0 (1), p1 (10), c1 (13), p2 (20), c2 (30); with k=3 and c1 the
    # classifier's favourite among c0, p1, c1 the true counter c0 drops to rank 2 or 3
    ph = torch.tensor([[0.0], [0.5], [0.0]])
    ch = torch.tensor([[0.2], [1.0], [0.0]])
    r = query_ranks(one_debate, P1, C1, ph, ch, score_classifier, mode="rerank", rerank_k=3, tasks=("epa",))
    assert r["epa"][0].item() == 3  # c1 (1.0) > p1 (0.5) > c0 (0.2)


def test_rerank_only_calls_classifier_in_batches(one_debate):
    calls = []

    def counting(sp, sc, hp, hc):
        calls.append(sp.shape[0])
        return score_classifier(sp, sc, hp, hc)

    h = torch.rand(3, 5)
    query_ranks(one_debate, P1, C1, h, h, counting, mode="rerank", rerank_k=10)
    assert len(calls) == 1 and calls[0] > 1


# ----------------------------------------------------------------------------- brute force
def pool_distances(query, cands, metric):
    """Distances of one query to its pool's candidates, by the definition (float64 numpy)."""
    if metric == "l2":
        return ((cands - query) ** 2).sum(1)
    return 1 - (cands / np.linalg.norm(cands, axis=1, keepdims=True)) @ (query / np.linalg.norm(query))


def reference_ranks(pools: Pools, ps, cs, ph, ch, classify, mode, metric, k):
    """The definition, one query at a time: order the pool by (distance, is-true, index), rerank
    the first k by (-probability, is-true, distance position)."""
    q = pools.num_queries
    ps = np.asarray(ps, dtype=np.float64)
    cand = np.concatenate([cs, ps]).astype(np.float64)  # [2Q, d]
    if mode == "rerank":  # every (query, candidate) probability, in one call
        t = torch.as_tensor
        cand_h = np.concatenate([ch, ph])
        qi, ci = np.repeat(np.arange(q), 2 * q), np.tile(np.arange(2 * q), q)
        logits = classify(t(ps[qi]).float(), t(cand[ci]).float(), t(ph[qi]), t(cand_h[ci]))
        prob = torch.softmax(logits.float(), 1)[:, 1].numpy().reshape(q, 2 * q)
    out = {}
    for task in TASKS:
        mask = pools.mask(task).numpy()
        ranks = []
        for i in range(q):
            pool = np.nonzero(mask[i])[0]
            d = pool_distances(ps[i], cand[pool], metric)
            order = sorted(range(len(pool)), key=lambda j: (d[j], pool[j] == i, pool[j]))
            ranked = [int(pool[j]) for j in order]
            if mode == "rerank":
                top = ranked[:k]
                top = sorted(top, key=lambda c: (-prob[i, c], c == i, top.index(c)))
                ranked = top + ranked[k:]
            ranks.append(ranked.index(i) + 1)
        out[task] = ranks
    return out


def random_pools(rng, n_themes=3):
    debates, sides = [], []
    for t in range(n_themes):
        for d in range(rng.integers(1, 4)):
            for s in ("pro", "con"):
                for _ in range(rng.integers(0, 4)):
                    debates.append(f"t{t}/d{d}")
                    sides.append(s)
    order = rng.permutation(len(debates))  # pools must not rely on sorted pairs
    return pools_from_labels("test", [debates[j] for j in order], [sides[j] for j in order])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_with_ties(seed, monkeypatch):
    import counterarg.retrieval.pool_ranks as ev

    rng = np.random.default_rng(seed)
    pools = random_pools(rng)
    q = pools.num_queries
    # small integer coordinates: many exact ties in distance; small integer logits: ties in probability
    ps = rng.integers(0, 3, (q, 2)).astype(np.float32)
    cs = rng.integers(0, 3, (q, 2)).astype(np.float32)
    ph = rng.integers(0, 3, (q, 1)).astype(np.float32)
    ch = rng.integers(0, 3, (q, 1)).astype(np.float32)
    # small blocks and chunks exercise the block and chunk loops
    monkeypatch.setattr(ev, "BLOCK_ELEMENTS", 4 * 2 * q)
    monkeypatch.setattr(ev, "CLASSIFY_CHUNK", 7)
    for mode, metric, k in [
        ("retrieval", "l2", 1),
        ("retrieval", "cosine", 1),
        ("rerank", "l2", 3),
        ("rerank", "l2", 10),
        ("rerank", "cosine", 2),
        ("rerank", "l2", 1),
    ]:
        if metric == "cosine":  # parallel vectors tie only up to rounding: use generic directions
            ps_, cs_ = rng.normal(size=(q, 3)), rng.normal(size=(q, 3))
        else:
            ps_, cs_ = ps, cs
        got = query_ranks(pools, ps_, cs_, ph, ch, score_classifier, mode=mode, metric=metric, rerank_k=k)
        want = reference_ranks(pools, ps_, cs_, ph, ch, score_classifier, mode, metric, k)
        for task in TASKS:
            assert got[task].tolist() == want[task], (mode, metric, k, task)


def test_rerank_past_k_keeps_distance_rank():
    rng = np.random.default_rng(5)
    pools = random_pools(rng, n_themes=2)
    q = pools.num_queries
    ps, cs = rng.normal(size=(q, 3)), rng.normal(size=(q, 3))
    h = rng.normal(size=(q, 2))
    ret = query_ranks(pools, ps, cs, mode="retrieval")
    rr = query_ranks(pools, ps, cs, h, h, score_classifier, mode="rerank", rerank_k=4)
    for t in TASKS:
        far = ret[t] > 4
        assert torch.equal(rr[t][far], ret[t][far])
        assert bool((rr[t][~far] <= 4).all())


# ----------------------------------------------------------------------------- errors, table
def test_errors(one_debate):
    with pytest.raises(EvaluationError, match=r"point_sim has 2 rows but the pools have 3"):
        evaluate_split("test", one_debate, P1[:2], C1, mode="retrieval")
    with pytest.raises(EvaluationError, match=r"counter_h has 4 rows but the pools have 3"):
        evaluate_split("test", one_debate, P1, C1, P1, torch.zeros(4, 1), score_classifier)
    with pytest.raises(EvaluationError, match="needs a classify"):
        evaluate_split("test", one_debate, P1, C1, P1, C1)
    with pytest.raises(EvaluationError, match="NaN"):
        evaluate_split("test", one_debate, P1 * float("nan"), C1, mode="retrieval")
    with pytest.raises(EvaluationError, match="dim"):
        evaluate_split("test", one_debate, P1, torch.zeros(3, 2), mode="retrieval")
    with pytest.raises(EvaluationError, match="unknown task"):
        evaluate_split("test", one_debate, P1, C1, mode="retrieval", tasks=("nope",))
    with pytest.raises(EvaluationError, match="mode"):
        evaluate_split("test", one_debate, P1, C1, mode="fast")
    empty = pools_from_labels("validation", [], [])
    with pytest.raises(EvaluationError, match="'validation' has no queries"):
        evaluate_split("validation", empty, torch.zeros(0, 1), torch.zeros(0, 1), mode="retrieval")
    assert issubclass(EvaluationError, ValueError)


def test_empty_pool_is_reported(one_debate, monkeypatch):
    monkeypatch.setattr(Pools, "pool_sizes", lambda self, task: np.zeros(self.num_queries, dtype=int))
    with pytest.raises(EvaluationError, match="'test', task 'sdoc'.*empty"):
        evaluate_split("test", one_debate, P1, C1, mode="retrieval")


def test_format_table(one_debate):
    m = evaluate_split("test", one_debate, P1, C1, mode="retrieval")
    text = format_table(m, "test", one_debate)
    lines = text.splitlines()
    assert lines[0].split() == ["test", "acc@1", "acc@5", "acc@10", "mrr", "pool"]
    assert [line.split()[0] for line in lines[2:]] == [*TASKS, "mean"]
    assert lines[-2].split()[-1] == "5.0"  # epa pool: 3 counters + 2 other points
    with pytest.raises(EvaluationError):
        format_table(m, "validation")


# ----------------------------------------------------------------------------- copies of a text
def label_pool(task, i, debates, sides, themes):
    """Candidate ids of query ``i``'s pool by the task's definition, from the labels alone."""
    q = len(debates)
    same_d = [j for j in range(q) if (themes[j], debates[j]) == (themes[i], debates[i])]
    same_t = [j for j in range(q) if themes[j] == themes[i]]
    if task == "sdoc":
        return [j for j in same_d if sides[j] == sides[i]]
    if task == "sdoa":
        return [j for j in same_d if sides[j] == sides[i]] + [q + j for j in same_d if sides[j] != sides[i]]
    group = {"sdc": same_d, "sda": same_d, "stc": same_t, "sta": same_t}.get(task, list(range(q)))
    if task in ("sdc", "stc", "epc"):
        return list(group)
    return list(group) + [q + j for j in group if j != i]


def reference_ranks_texts(labels, texts, ps, cs, ph, ch, classify, mode, metric, k, fused_w=0.0):
    """The copy rule by its definition: drop copies of the query, keep the first copy of every other
    text, the first copy of the true counter's text is the hit; then rank as :func:`reference_ranks`."""
    debates, sides, themes = labels
    q = len(debates)
    cand = np.concatenate([cs, ps]).astype(np.float64)  # [2Q, d]
    cand_h = np.concatenate([ch, ph])
    out = {}
    for task in TASKS:
        ranks = []
        for i in range(q):
            pool, seen_t = [], set()
            for c in sorted(label_pool(task, i, debates, sides, themes)):
                if texts[c] == texts[q + i] and texts[c] != texts[i]:
                    continue  # a copy of the query is no candidate
                if texts[c] in seen_t:
                    continue  # each text once
                seen_t.add(texts[c])
                pool.append(c)
            hit = next(c for c in pool if texts[c] == texts[i])
            pool = np.array(pool)
            d = pool_distances(ps[i], cand[pool], metric)
            order = sorted(range(len(pool)), key=lambda j: (d[j], pool[j] == hit, pool[j]))
            ranked = [int(pool[j]) for j in order]
            if mode == "fused":  # fused_w * log-odds - distance over the top k, ties ahead of the hit
                t = torch.as_tensor
                top = ranked[:k]
                logits = classify(
                    t(np.repeat(ps[i : i + 1], len(top), 0)).float(),
                    t(cand[top]).float(),
                    t(np.repeat(ph[i : i + 1], len(top), 0)),
                    t(cand_h[top]),
                ).double()
                score = (fused_w * (logits[:, 1] - logits[:, 0])).tolist()
                dist = {int(pool[j]): d[j] for j in range(len(pool))}
                top = [
                    c for _, c in sorted(enumerate(top), key=lambda x: (-(score[x[0]] - dist[x[1]]), x[1] == hit, x[0]))
                ]
                ranked = top + ranked[k:]
            if mode == "rerank":
                t = torch.as_tensor
                top = ranked[:k]
                logits = classify(
                    t(np.repeat(ps[i : i + 1], len(top), 0)).float(),
                    t(cand[top]).float(),
                    t(np.repeat(ph[i : i + 1], len(top), 0)),
                    t(cand_h[top]),
                )
                prob = torch.softmax(logits.float(), 1)[:, 1].tolist()
                top = [c for _, c in sorted(zip(range(len(top)), top), key=lambda x: (-prob[x[0]], x[1] == hit, x[0]))]
                ranked = top + ranked[k:]
            ranks.append(ranked.index(hit) + 1)
        out[task] = ranks
    return out


def copy_heavy_split(rng, n_themes=3, n_texts=None):
    """Random labels and texts drawn from a small vocabulary, so that points and counters repeat
    within and across pools (as ArguAna's debates filed under several themes)."""
    debates, sides, themes = [], [], []
    for t in range(n_themes):
        for d in range(rng.integers(1, 4)):
            for s in ("pro", "con"):
                for _ in range(rng.integers(1, 4)):
                    themes.append(f"t{t}")
                    debates.append(f"d{d}")
                    sides.append(s)
    q = len(debates)
    n_texts = n_texts or max(3, q)
    texts = rng.integers(0, n_texts, 2 * q).tolist()  # candidate order: counters, then points
    return (debates, sides, themes), texts


def per_text_embeddings(rng, texts, metric):
    """``(ps, cs, ph, ch)``: one random embedding per TEXT, so copies embed identically (as with any
    deterministic encoder); small integers for l2 (exact ties between texts), generic for cosine."""
    n_texts, q = max(texts) + 1, len(texts) // 2
    if metric == "cosine":
        emb = rng.normal(size=(n_texts, 3))
    else:
        emb = rng.integers(0, 3, (n_texts, 2)).astype(np.float64)
    emb_h = rng.integers(0, 3, (n_texts, 1)).astype(np.float32)
    return emb[texts[q:]], emb[texts[:q]], emb_h[texts[q:]], emb_h[texts[:q]]


def copy_heavy_pools(rng, n_themes=3):
    """:func:`copy_heavy_split` and its pools: ``(labels, texts, pools)``."""
    labels, texts = copy_heavy_split(rng, n_themes=n_themes)
    debates, sides, themes = labels
    q = len(debates)
    pools = pools_from_labels(
        "test",
        [f"{t}/{d}" for t, d in zip(themes, debates)],
        sides,
        themes,
        point_texts=texts[q:],
        counter_texts=texts[:q],
    )
    return labels, texts, pools


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_copies_match_the_definition(seed, monkeypatch):
    import counterarg.retrieval.pool_ranks as ev

    rng = np.random.default_rng(seed)
    labels, texts, pools = copy_heavy_pools(rng)
    q = pools.num_queries
    monkeypatch.setattr(ev, "BLOCK_ELEMENTS", 3 * 2 * q)
    monkeypatch.setattr(ev, "CLASSIFY_CHUNK", 5)
    for mode, metric, k in [
        ("retrieval", "l2", 1),
        ("retrieval", "cosine", 1),
        ("rerank", "l2", 3),
        ("rerank", "l2", 10),
        ("rerank", "cosine", 2),
    ]:
        ps, cs, ph, ch = per_text_embeddings(rng, texts, metric)
        got = query_ranks(pools, ps, cs, ph, ch, score_classifier, mode=mode, metric=metric, rerank_k=k)
        want = reference_ranks_texts(labels, texts, ps, cs, ph, ch, score_classifier, mode, metric, k)
        for task in TASKS:
            assert got[task].tolist() == want[task], (seed, mode, metric, k, task)


def test_a_copy_of_the_true_counter_is_the_hit_and_a_copy_of_the_query_is_no_candidate():
    # one debate, 3 pairs; counter 2 is a verbatim copy of counter 0, point 1 a copy of point 0
    pools = pools_from_labels(
        "test", ["t/x"] * 3, ["pro", "pro", "con"], point_texts=["P", "P", "R"], counter_texts=["C", "D", "C"]
    )
    q0 = torch.tensor([[0.0, 0.0], [5.0, 5.0], [9.0, 9.0]])  # points
    # the model puts counter 2 (copy of query 0's true counter) first for query 0
    cs = torch.tensor([[1.0, 0.0], [3.0, 0.0], [1.0, 0.0]])
    r = query_ranks(pools, q0, cs, mode="retrieval")
    for t in TASKS:
        assert r[t][0] == 1, t  # the copy stands for the true counter: a hit, not a tie
    # a copy of the query (point 1, at distance 0 from point 0) never ranks: epa rank of query 0 is 1
    assert pools.members("epa", 0).tolist() == [0, 1, 5]  # C (the hit), D, R; points 0 and 1 (P) are out
    assert pools.pool_sizes("epa")[0] == 3  # C, D, R: each text once, P excluded
    assert pools.pool_sizes("epc")[0] == 2  # C, D
    # the same query without the copy rule: the copy of its counter ties and wins (pessimistic rule)
    plain = pools_from_labels("test", ["t/x"] * 3, ["pro", "pro", "con"])
    assert query_ranks(plain, q0, cs, mode="retrieval")["epc"][0] == 2


def test_pool_sizes_match_masks_with_copies():
    rng = np.random.default_rng(11)
    _, _, pools = copy_heavy_pools(rng, n_themes=4)
    for t in TASKS:
        assert pools.pool_sizes(t).tolist() == pools.mask(t).sum(1).tolist(), t
        ids, valid = pools.index(t)
        assert valid.sum(1).tolist() == pools.mask(t).sum(1).tolist(), t


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fused_matches_a_brute_force_sort(seed, monkeypatch):
    import counterarg.retrieval.pool_ranks as ev

    rng = np.random.default_rng(10 + seed)
    labels, texts, pools = copy_heavy_pools(rng)
    q = pools.num_queries
    monkeypatch.setattr(ev, "BLOCK_ELEMENTS", 3 * 2 * q)
    monkeypatch.setattr(ev, "CLASSIFY_CHUNK", 5)
    for metric, k, w in [("l2", 3, 0.5), ("l2", 10, 2.0), ("l2", 10, 0.0), ("cosine", 4, 0.3), ("cosine", 10, 3.0)]:
        ps, cs, ph, ch = per_text_embeddings(rng, texts, metric)
        got = query_ranks(pools, ps, cs, ph, ch, score_classifier, mode="fused", metric=metric, rerank_k=k, fused_w=w)
        want = reference_ranks_texts(labels, texts, ps, cs, ph, ch, score_classifier, "fused", metric, k, w)
        for task in TASKS:
            assert got[task].tolist() == want[task], (seed, metric, k, w, task)
        if w == 0.0:  # no weight on the classifier: plain retrieval
            plain = query_ranks(pools, ps, cs, mode="retrieval", metric=metric)
            assert all(got[t].tolist() == plain[t].tolist() for t in TASKS)


# ----------------------------------------------------------------------------- a corpus split, as evaluate
def test_a_corpus_split_zero_shot_scores_as_the_sweeps_baseline(tiny_encoder, capsys):
    """``counterarg evaluate --zero-shot``'s work and the sweep's zero-shot baseline: one number per key."""
    from counterarg.config import Config
    from counterarg.data.corpus import CorpusError
    from counterarg.evaluation.evaluate import evaluate_corpus_split, zero_shot_metrics

    cfg = Config(encoder=tiny_encoder, max_length=32, finetune="none")
    report = evaluate_corpus_split(cfg, "validation", progress=True)
    assert report.pools.describe() in capsys.readouterr().out  # said before the model is built
    assert report.corpus.is_demo and report.view.split == "validation"
    baseline = zero_shot_metrics(cfg, splits=("validation",))
    assert set(report.metrics) == set(baseline) and "validation/mean/acc@1" in baseline
    assert report.metrics == pytest.approx(baseline, abs=1e-12)
    with pytest.raises(CorpusError, match="no split 'nope'"):
        evaluate_corpus_split(cfg, "nope", progress=False)
