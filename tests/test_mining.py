import numpy as np
import pytest

from counterarg.mining import mine_negatives


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
    res = mine_negatives(P, C, 0.0, np.random.default_rng(1))
    assert res.n_hard == 60 and res.n_random == 0
    np.testing.assert_array_equal(res.negatives, brute_force(P, C))


def test_never_self_or_own_counter(emb):
    P, C = emb
    # make each point's own counter its nearest neighbour, and the point itself is at distance 0
    C = P + 1e-3
    for rate in (0.0, 0.5, 1.0):
        res = mine_negatives(P, C, rate, np.random.default_rng(2))
        n = len(P)
        assert not np.any(res.negatives == np.arange(n))
        assert not np.any(res.negatives == n + np.arange(n))


def test_rate_one_is_all_random_and_uniformish(emb):
    P, C = emb
    res = mine_negatives(P, C, 1.0, np.random.default_rng(3))
    assert res.n_random == 60 and res.n_hard == 0
    assert np.isnan(res.distances).all()
    many = np.concatenate([mine_negatives(P, C, 1.0, np.random.default_rng(s)).negatives for s in range(50)])
    assert (many < 60).mean() == pytest.approx(0.5, abs=0.05)  # points and counters equally likely


def test_reproducible_under_seed(emb):
    P, C = emb
    a = mine_negatives(P, C, 0.5, np.random.default_rng(7))
    b = mine_negatives(P, C, 0.5, np.random.default_rng(7))
    c = mine_negatives(P, C, 0.5, np.random.default_rng(8))
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
    res = mine_negatives(P, C, 0.0, np.random.default_rng(0), point_keys=pk, counter_keys=ck)
    np.testing.assert_array_equal(res.negatives, brute_force(P, C, pk, ck))
    keys = np.concatenate([pk, ck])
    chosen = keys[res.negatives]
    assert not np.any(chosen == pk) and not np.any(chosen == ck)  # never the same text as anchor/counter
    # pair 0's nearest point (distance 0) is pair 1's identical text: skipped
    assert res.negatives[0] not in (0, 1)
    # random draws also avoid duplicates of the anchor and of its counter
    for s in range(20):
        r = mine_negatives(P, C, 1.0, np.random.default_rng(s), point_keys=pk, counter_keys=ck)
        ch = keys[r.negatives]
        assert not np.any(ch == pk) and not np.any(ch == ck)


def test_all_hits_banned_requeries_deeper():
    # 5 pairs whose first four points are copies of one text: k=3 hits are all banned for them
    P = np.array([[0, 0]] * 4 + [[9, 9]], dtype=float)
    C = np.array([[0, 0.1]] * 4 + [[9, 9.5]], dtype=float)
    pk = np.array([1, 1, 1, 1, 2])
    ck = np.array([3, 3, 3, 3, 4])
    res = mine_negatives(P, C, 0.0, np.random.default_rng(0), point_keys=pk, counter_keys=ck)
    np.testing.assert_array_equal(res.negatives[:4], [4, 4, 4, 4])  # the only other point text
    np.testing.assert_array_equal(res.negatives, brute_force(P, C, pk, ck))


def test_bad_inputs():
    P = np.zeros((3, 2))
    with pytest.raises(ValueError, match="shape"):
        mine_negatives(P, np.zeros((4, 2)), 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="rate"):
        mine_negatives(P, P, 1.5, np.random.default_rng(0))
