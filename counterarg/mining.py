"""Hard-negative mining: the seed's rule over two neighbour indexes (points, counters).

For anchor point i, the candidates are the nearest point that is not the anchor and the nearest
counter that is not its own counter; the closer of the two becomes the negative (a tie goes to the
point). With probability ``rate`` a uniformly random point or counter is taken instead, never the
anchor itself nor its own counter.

Duplicate texts are common in ArguAna (debates are filed under several themes), so exclusion is by
text identity when ``point_keys``/``counter_keys`` are given: a candidate whose text equals the
anchor's or its counter's is never a negative. Without keys each item is its own identity, which is
the seed's rule exactly.

Negative ids live in one space of 2N: ``j < N`` is point j, ``N + j`` is counter j.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class MiningResult:
    negatives: np.ndarray  # [N] int64 ids in [0, 2N)
    is_random: np.ndarray  # [N] bool
    distances: np.ndarray  # [N] float, anchor-to-hard-negative distance (nan for random rows)

    @property
    def n_random(self) -> int:
        return int(self.is_random.sum())

    @property
    def n_hard(self) -> int:
        return int((~self.is_random).sum())


def _keys(keys: np.ndarray | None, n: int, offset: int) -> np.ndarray:
    if keys is None:
        return np.arange(offset, offset + n, dtype=np.int64)
    keys = np.asarray(keys, dtype=np.int64)
    if keys.shape != (n,):
        raise ValueError(f"keys must have shape ({n},), got {keys.shape}")
    return keys


def nearest_allowed(
    index: Any,
    queries: np.ndarray,  # [N, d]
    cand_keys: np.ndarray,  # [M] text identity of each indexed item
    banned: np.ndarray,  # [N, 2] text identities each query may not take
    k: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query, the nearest indexed item whose key is not banned: (ids [N], distances [N]).

    Queries with k = 3 as the seed did; rows whose k hits are all banned (duplicate-heavy data) are
    asked again with a doubled k until an allowed hit appears or the index is exhausted (id -1).
    """
    n, m = len(queries), len(cand_keys)
    ids = np.full(n, -1, dtype=np.int64)
    dist = np.full(n, np.inf, dtype=np.float64)
    todo = np.arange(n)
    k = min(k, m)
    while len(todo) and k > 0:
        d_k, i_k = index.query(queries[todo], k)  # [T, k], [T, k]
        i_k = np.asarray(i_k, dtype=np.int64)
        ck = cand_keys[i_k]  # [T, k]
        ok = (ck != banned[todo, :1]) & (ck != banned[todo, 1:2]) & (i_k >= 0)  # [T, k]
        has = ok.any(axis=1)
        first = ok.argmax(axis=1)
        rows = todo[has]
        ids[rows] = i_k[has, first[has]]
        dist[rows] = np.asarray(d_k, dtype=np.float64)[has, first[has]]
        todo = todo[~has]
        if k >= m:
            break
        k = min(2 * k, m)
    return ids, dist


def mine_negatives(
    point_emb: np.ndarray,  # [N, d]
    counter_emb: np.ndarray,  # [N, d] counter j is the true counter of point j
    rate: float,
    rng: np.random.Generator,
    *,
    point_index: Any = None,
    counter_index: Any = None,
    point_keys: np.ndarray | None = None,
    counter_keys: np.ndarray | None = None,
    index_backend: str = "exact",
    index_options: dict | None = None,
    k: int = 3,
) -> MiningResult:
    """Pick one negative per anchor point (see module docstring). Pure given ``rng`` and the inputs.

    Pass ready ``point_index``/``counter_index`` objects (anything with ``.query(x, k)``) to reuse
    index actors across epochs; otherwise they are built with ``make_index(index_backend, ...)``.
    """
    point_emb = np.asarray(point_emb)
    counter_emb = np.asarray(counter_emb)
    n = len(point_emb)
    if counter_emb.shape != point_emb.shape:
        raise ValueError(f"point and counter embeddings differ in shape: {point_emb.shape} vs {counter_emb.shape}")
    if n < 2:
        raise ValueError(f"mining needs at least 2 pairs, got {n}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must lie in [0, 1], got {rate}")
    pk = _keys(point_keys, n, 0)
    ck = _keys(counter_keys, n, n)
    banned = np.stack([pk, ck], axis=1)  # [N, 2]
    all_keys = np.concatenate([pk, ck])  # [2N]

    # the random draws come first and always, so a seed gives the same stream whatever the rate
    take_random = rng.random(n) < rate  # [N]
    rand_ids = rng.integers(0, 2 * n, size=n)  # [N]
    bad = (all_keys[rand_ids] == pk) | (all_keys[rand_ids] == ck)
    rounds = 0
    while bad.any():  # rejection sampling; more than a few rounds only on degenerate data
        rounds += 1
        if rounds > 1000:
            raise ValueError("some anchor has no allowed random negative: every text equals its point or counter")
        rand_ids[bad] = rng.integers(0, 2 * n, size=int(bad.sum()))
        bad = (all_keys[rand_ids] == pk) | (all_keys[rand_ids] == ck)

    negatives = rand_ids.copy()
    distances = np.full(n, np.nan)
    hard_rows = np.flatnonzero(~take_random)
    if len(hard_rows):
        if point_index is None or counter_index is None:
            from .index import make_index

            opts = index_options or {}
            point_index = point_index or make_index(index_backend, point_emb, **opts)
            counter_index = counter_index or make_index(index_backend, counter_emb, **opts)
        q = point_emb[hard_rows]
        p_ids, p_d = nearest_allowed(point_index, q, pk, banned[hard_rows], k)
        c_ids, c_d = nearest_allowed(counter_index, q, ck, banned[hard_rows], k)
        if ((p_ids < 0) & (c_ids < 0)).any():
            raise ValueError("some anchor has no allowed hard negative: every text equals its point or counter")
        use_point = p_d <= c_d  # a tie goes to the point
        negatives[hard_rows] = np.where(use_point, p_ids, n + c_ids)
        distances[hard_rows] = np.where(use_point, p_d, c_d)
    return MiningResult(negatives=negatives.astype(np.int64), is_random=take_random, distances=distances)
