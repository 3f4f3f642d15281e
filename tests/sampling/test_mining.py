"""Hard-negative mining (counterarg.sampling.mining): the reference rule against a brute force, random draws,
text-identity exclusion, the generalised rule (several negatives, rank windows, the margin guard),
and the telemetry of what was mined."""

import numpy as np
import pytest

from counterarg.retrieval.index import make_index
from counterarg.sampling.mining import MiningResult, dedupe_pairs, mine_negatives, mining_telemetry


def mine(P, C, rate, rng, **kw):
    """``mine_negatives`` over exact indexes of ``P`` and ``C`` (training keeps its indexes across epochs)."""
    return mine_negatives(
        P, C, rate, rng, point_index=make_index("exact", P), counter_index=make_index("exact", C), **kw
    )


def brute_force(P, C, pk=None, ck=None):
    """The rule written out directly: nearest allowed point vs nearest allowed counter, tie -> point."""
    n = len(P)
    pk = np.arange(n) if pk is None else pk
    ck = np.arange(n, 2 * n) if ck is None else ck
    out = []
    for i in range(n):
        banned = {pk[i], ck[i]}
        dp = [(np.linalg.norm(P[i] - P[j]), j) for j in range(n) if pk[j] not in banned]
        dc = [(np.linalg.norm(P[i] - C[j]), j) for j in range(n) if ck[j] not in banned]
        bp, bc = min(dp), min(dc)
        out.append(bp[1] if bp[0] <= bc[0] else n + bc[1])
    return np.array(out)


@pytest.fixture
def emb():
    rng = np.random.default_rng(0)
    return rng.normal(size=(60, 8)), rng.normal(size=(60, 8))


def test_rate_zero_is_exact_hard_rule(emb):
    P, C = emb
    res = mine(P, C, 0.0, np.random.default_rng(1))
    assert res.n_hard == 60 and res.n_random == 0
    np.testing.assert_array_equal(res.negatives[:, 0], brute_force(P, C))


def test_never_self_or_own_counter(emb):
    P, C = emb
    # make each point's own counter its nearest neighbour, and the point itself is at distance 0
    C = P + 1e-3
    for rate in (0.0, 0.5, 1.0):
        res = mine(P, C, rate, np.random.default_rng(2))
        n = len(P)
        assert not np.any(res.negatives[:, 0] == np.arange(n))
        assert not np.any(res.negatives[:, 0] == n + np.arange(n))


def test_rate_one_is_all_random_and_uniformish(emb):
    P, C = emb
    res = mine(P, C, 1.0, np.random.default_rng(3))
    assert res.n_random == 60 and res.n_hard == 0
    many = np.concatenate([mine(P, C, 1.0, np.random.default_rng(s)).negatives[:, 0] for s in range(50)])
    assert (many < 60).mean() == pytest.approx(0.5, abs=0.05)  # points and counters equally likely


def test_reproducible_under_seed(emb):
    P, C = emb
    a = mine(P, C, 0.5, np.random.default_rng(7))
    b = mine(P, C, 0.5, np.random.default_rng(7))
    c = mine(P, C, 0.5, np.random.default_rng(8))
    np.testing.assert_array_equal(a.negatives, b.negatives)
    np.testing.assert_array_equal(a.is_random, b.is_random)
    assert not np.array_equal(a.negatives, c.negatives)
    assert 15 < a.n_random < 45


def test_duplicate_texts_and_ties():
    # 6 pairs on a grid with exact distance ties; pairs 0 and 1 share the same point text,
    # pairs 2 and 3 share the same counter text (and so the same embeddings)
    P = np.array([[0, 0], [0, 0], [1, 0], [0, 1], [5, 5], [5, 6]], dtype=float)
    C = np.array([[0, 1], [3, 3], [2, 2], [2, 2], [5, 4], [6, 6]], dtype=float)
    pk = np.array([10, 10, 12, 13, 14, 15])
    ck = np.array([20, 21, 22, 22, 24, 25])
    res = mine(P, C, 0.0, np.random.default_rng(0), point_keys=pk, counter_keys=ck)
    np.testing.assert_array_equal(res.negatives[:, 0], brute_force(P, C, pk, ck))
    keys = np.concatenate([pk, ck])
    chosen = keys[res.negatives[:, 0]]
    assert not np.any(chosen == pk) and not np.any(chosen == ck)  # never the same text as anchor/counter
    # pair 0's nearest point (distance 0) is pair 1's identical text: skipped
    assert res.negatives[:, 0][0] not in (0, 1)
    # random draws also avoid duplicates of the anchor and of its counter
    for s in range(20):
        r = mine(P, C, 1.0, np.random.default_rng(s), point_keys=pk, counter_keys=ck)
        ch = keys[r.negatives[:, 0]]
        assert not np.any(ch == pk) and not np.any(ch == ck)


def test_all_hits_banned_requeries_deeper():
    # 5 pairs whose first four points are copies of one text: k=3 hits are all banned for them
    P = np.array([[0, 0]] * 4 + [[9, 9]], dtype=float)
    C = np.array([[0, 0.1]] * 4 + [[9, 9.5]], dtype=float)
    pk = np.array([1, 1, 1, 1, 2])
    ck = np.array([3, 3, 3, 3, 4])
    res = mine(P, C, 0.0, np.random.default_rng(0), point_keys=pk, counter_keys=ck)
    np.testing.assert_array_equal(res.negatives[:, 0][:4], [4, 4, 4, 4])  # the only other point text
    np.testing.assert_array_equal(res.negatives[:, 0], brute_force(P, C, pk, ck))


def test_bad_inputs():
    P = np.zeros((3, 2))
    with pytest.raises(ValueError, match="shape"):
        mine(P, np.zeros((4, 2)), 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="rate"):
        mine(P, P, 1.5, np.random.default_rng(0))


# --------------------------------------------------------------------------- neg_rank, neg_margin, dedupe_pairs


def ranked_brute_force(P, C, pk, ck, i, margin=None):
    """Anchor i's allowed candidates, nearest first: (distance, points first, id), one per text, guarded."""
    n = len(P)
    keys = np.concatenate([pk, ck])
    cands = sorted(
        (np.linalg.norm(P[i] - X[j]), int(kind), kind * n + j) for kind, X in ((0, P), (1, C)) for j in range(n)
    )
    own = np.linalg.norm(P[i] - C[i])
    out, seen = [], set()
    for d, _, j in cands:
        if keys[j] in seen:
            continue
        seen.add(keys[j])
        if keys[j] in (pk[i], ck[i]) or (margin is not None and d < own - margin):
            continue
        out.append(j)
    return out


@pytest.fixture
def dup_emb():
    rng = np.random.default_rng(4)
    P, C = rng.normal(size=(40, 4)), rng.normal(size=(40, 4))
    pk, ck = np.arange(40), np.arange(100, 140)
    P[5], pk[5] = P[6], pk[6]  # a repeated point text
    C[7], ck[7] = C[8], ck[8]  # a repeated counter text
    C[9], ck[9] = P[3], pk[3]  # a counter whose text is also a point
    return P, C, pk, ck


@pytest.mark.parametrize("rank", [1, 3, 7])
def test_fixed_rank_is_the_brute_force_rank(dup_emb, rank):
    P, C, pk, ck = dup_emb
    res = mine(
        P, C, 0.0, np.random.default_rng(0), point_keys=pk, counter_keys=ck, neg_rank=(rank, rank), num_negatives=2
    )
    expect = [ranked_brute_force(P, C, pk, ck, i)[rank - 1] for i in range(len(P))]
    np.testing.assert_array_equal(res.negatives, np.repeat(np.array(expect)[:, None], 2, axis=1))
    np.testing.assert_array_equal(res.keys, np.concatenate([pk, ck])[res.negatives])


def test_rank_window_draws_cover_exactly_the_window(dup_emb):
    P, C, pk, ck = dup_emb
    seen = [set() for _ in P]
    for s in range(40):
        res = mine(
            P, C, 0.0, np.random.default_rng(s), point_keys=pk, counter_keys=ck, neg_rank=(2, 4), num_negatives=3
        )
        assert res.n_random == 0
        for i, row in enumerate(res.negatives):
            seen[i].update(row.tolist())
    for i in range(len(P)):
        assert seen[i] == set(ranked_brute_force(P, C, pk, ck, i)[1:4])


@pytest.mark.parametrize("margin", [0.0, 0.3, -0.2])
def test_margin_guard_against_brute_force(dup_emb, margin):
    P, C, pk, ck = dup_emb
    res = mine(P, C, 0.0, np.random.default_rng(0), point_keys=pk, counter_keys=ck, neg_rank=(1, 1), neg_margin=margin)
    for i in range(len(P)):
        allowed = ranked_brute_force(P, C, pk, ck, i, margin)
        if allowed:
            assert res.negatives[i, 0] == allowed[0] and not res.is_random[i, 0]
        else:  # nothing passes the guard: the random draw stays, and is marked random
            assert res.is_random[i, 0]


def test_reference_rule_unchanged_by_the_general_path(emb):
    P, C = emb
    ref = mine(P, C, 0.3, np.random.default_rng(5))
    gen = mine(P, C, 0.3, np.random.default_rng(5), neg_rank=(1, 1), neg_margin=1e9)
    np.testing.assert_array_equal(ref.negatives, gen.negatives)


def test_dedupe_pairs_against_brute_force():
    rng = np.random.default_rng(3)
    pk, ck = rng.integers(0, 5, 60), rng.integers(0, 4, 60)
    first, seen = [], set()
    for i, key in enumerate(zip(pk, ck)):
        if key not in seen:
            seen.add(key)
            first.append(i)
    np.testing.assert_array_equal(dedupe_pairs(pk, ck), first)


# --------------------------------------------------------------------------- telemetry


def test_telemetry_counts_on_a_hand_built_corpus():
    # 4 pairs: theme 0 holds debate 0 (pairs 0 pro, 1 con) and debate 1 (pair 2); theme 1 holds debate 2 (pair 3)
    debate, theme, side = np.array([0, 0, 1, 2]), np.array([0, 0, 0, 1]), np.array([0, 1, 0, 0])
    n = 4
    # anchor 0: point 1 (same debate, other side), counter 0 is banned, so counter 2 (same theme, other debate)
    # anchor 1: counter 0 (same debate, other side) and point 3 (other theme)
    # anchor 2: point 0 (same theme), random counter 3 (other theme)
    # anchor 3: random point 2 (other theme) twice
    neg = np.array([[1, n + 2], [n + 0, 3], [0, n + 3], [2, 2]])
    rnd = np.array([[False, False], [False, False], [False, True], [True, True]])
    res = MiningResult(negatives=neg, keys=neg, is_random=rnd)
    P = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    C = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 3.0], [3.0, 4.0]])
    eval_texts = np.array([1, n + 0, 0, 99])  # text ids (here: the 2N ids) that validation/test share
    t = mining_telemetry(res, debate, theme, side, P, C, eval_texts=eval_texts)
    assert t["mining/share_points"] == 5 / 8 and t["mining/share_counters"] == 3 / 8
    # same debate same side: anchor 1's counter 0? pair 0 is pro, anchor 1 is con -> other side. none.
    assert t["mining/share_same_debate_same_side"] == 0.0
    assert t["mining/share_same_debate_other_side"] == 2 / 8  # (0: point 1), (1: counter 0)
    assert t["mining/share_same_theme_other_debate"] == 2 / 8  # (0: counter 2), (2: point 0)
    assert t["mining/share_other_theme"] == 4 / 8  # (1: point 3), (2: counter 3), (3: point 2) x2
    assert t["mining/share_hard"] == 5 / 8 and t["mining/share_random"] == 3 / 8
    assert t["mining/share_in_eval_splits"] == 3 / 8  # point 1, counter 0, point 0
    d_neg = [1, 3, np.hypot(1, 1), 2, 2, np.hypot(3, 2), np.hypot(3, 2), np.hypot(3, 2)]
    assert t["mining/dist_negative"] == pytest.approx(np.mean(d_neg))
    assert t["mining/dist_counter"] == pytest.approx(np.mean([1, 1, 1, 4]))
    only = mining_telemetry(res, debate, theme, side, P, C, rows=np.array([3]), eval_texts=eval_texts)
    assert only["mining/share_other_theme"] == 1.0 and only["mining/share_random"] == 1.0
    assert only["mining/share_in_eval_splits"] == 0.0 and "mining/share_in_eval_splits" not in mining_telemetry(
        res, debate, theme, side, P, C
    )


def test_take_gathers_the_negatives_rows_without_the_caller_decoding_ids():
    import torch

    neg = np.array([[1, 3], [2, 0]])  # N = 2: point 1 and counter 1; counter 0 and point 0
    res = MiningResult(negatives=neg, keys=neg, is_random=np.zeros_like(neg, bool))
    P, C = np.array([[10.0], [11.0]]), np.array([[20.0], [21.0]])
    assert res.take(P, C)[..., 0].tolist() == [[11.0, 21.0], [20.0, 10.0]]  # [N, K, 1]
    got = res.take(torch.from_numpy(P), torch.from_numpy(C))
    assert isinstance(got, torch.Tensor) and got[..., 0].tolist() == [[11.0, 21.0], [20.0, 10.0]]
