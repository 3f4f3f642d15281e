"""Hard-negative mining: the reference implementation's rule over two neighbour indexes (points, counters).

For anchor point i, the candidates are the nearest point that is not the anchor and the nearest
counter that is not its own counter; the closer of the two becomes the negative (a tie goes to the
point). With probability ``rate`` a uniformly random point or counter is taken instead, never the
anchor itself nor its own counter.

Duplicate texts are common in ArguAna (debates are filed under several themes), so exclusion is by
text identity when ``point_keys``/``counter_keys`` are given: a candidate whose text equals the
anchor's or its counter's is never a negative. Without keys each item is its own identity, which is
the reference implementation's rule exactly.

Negative ids live in one space of 2N: ``j < N`` is point j, ``N + j`` is counter j.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class MiningResult:
    """K negatives per anchor, as ids in the 2N space and as text ids."""

    negatives: np.ndarray  # [N, K] int64 ids in [0, 2N)
    keys: np.ndarray  # [N, K] int64 text identity of each negative (its point/counter key)
    is_random: np.ndarray  # [N, K] bool

    def take(self, point_rows: Any, counter_rows: Any) -> Any:
        """Each anchor's negatives' rows, [N, K, ...], from per-pair ``point_rows`` and ``counter_rows``
        ([N, ...] each, numpy or torch): callers never decode the 2N id layout."""
        if isinstance(point_rows, np.ndarray):
            return np.concatenate([point_rows, counter_rows])[self.negatives]  # [2N, ...] -> [N, K, ...]
        import torch

        both = torch.cat([point_rows, counter_rows])  # [2N, ...]
        return both[torch.as_tensor(self.negatives, device=both.device)]  # [N, K, ...]

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


def ranked_allowed(
    point_index: Any,
    counter_index: Any,
    queries: np.ndarray,  # [T, d]
    pk: np.ndarray,  # [N] point text ids
    ck: np.ndarray,  # [N] counter text ids
    banned: np.ndarray,  # [T, 2] text ids each query may not take
    depth: int,
    floor: np.ndarray | None = None,  # [T] smallest allowed distance (the false-negative guard), or None
) -> np.ndarray:
    """Each query's ``depth`` nearest allowed candidates over points and counters, one per distinct text.

    Returns ``ids [T, depth]`` in the 2N space, nearest first, -1 past the end; equal distances put
    points before counters, then lower ids first (the reference tie rule). A candidate is allowed
    when its text is not banned, is the first of its text in the order, and (with ``floor``) lies at
    distance >= ``floor``. At depth 1 this is the reference rule (module doc), asked with k = 3 as the 2018
    scripts did. The indexes are asked for k hits each; rows without ``depth`` allowed
    candidates inside the exactly-known region are asked again with 2k.
    """
    n = len(pk)
    t = len(queries)
    out_i = np.full((t, depth), -1, dtype=np.int64)
    todo = np.arange(t)
    k = min(n, depth + 2)
    while len(todo):
        dp, ip = point_index.query(queries[todo], k)  # [T', k] each
        dc, ic = counter_index.query(queries[todo], k)
        ids = np.concatenate([np.asarray(ip, dtype=np.int64), n + np.asarray(ic, dtype=np.int64)], 1)  # [T', 2k]
        dist = np.concatenate([np.asarray(dp, dtype=np.float64), np.asarray(dc, dtype=np.float64)], 1)
        order = np.lexsort((ids, ids >= n, dist), axis=-1)  # by distance, then points first, then id
        ids, dist = np.take_along_axis(ids, order, 1), np.take_along_axis(dist, order, 1)  # [T', 2k]
        keys = np.concatenate([pk, ck])[ids]  # [T', 2k]
        # exact region: nothing beyond the k-th hit of either index can be closer than this
        limit = np.full(len(todo), np.inf) if k >= n else np.minimum(dp[:, -1], dc[:, -1])  # [T']
        known = dist <= limit[:, None]  # [T', 2k]
        ok = known & (keys != banned[todo, :1]) & (keys != banned[todo, 1:2])
        if floor is not None:
            ok &= dist >= floor[todo, None]
        # the first occurrence of each text in the row
        by_key = np.lexsort((np.arange(keys.shape[1])[None].repeat(len(todo), 0), keys), axis=-1)  # [T', 2k]
        sk = np.take_along_axis(keys, by_key, 1)
        dup_sorted = np.zeros_like(sk, dtype=bool)
        dup_sorted[:, 1:] = sk[:, 1:] == sk[:, :-1]
        dup = np.empty_like(dup_sorted)
        np.put_along_axis(dup, by_key, dup_sorted, 1)
        ok &= ~dup
        done = (ok.sum(1) >= depth) | (k >= n)
        for r in np.flatnonzero(done):  # at most `depth` per row: cheap
            sel = np.flatnonzero(ok[r])[:depth]
            out_i[todo[r], : len(sel)] = ids[r, sel]
        todo = todo[~done]
        k = min(n, 2 * k)
    return out_i


def dedupe_pairs(point_keys: np.ndarray, counter_keys: np.ndarray) -> np.ndarray:
    """Rows of the first occurrence of each distinct (point text, counter text) pair, in order. [M].

    ArguAna files debates under several themes, so 1,862 of the 4,065 training counters have a
    verbatim copy; training on every copy weights those pairs up to several times.
    """
    pairs = np.stack([np.asarray(point_keys, dtype=np.int64), np.asarray(counter_keys, dtype=np.int64)], 1)
    _, first = np.unique(pairs, axis=0, return_index=True)
    return np.sort(first)


def mine_negatives(
    point_emb: np.ndarray,  # [N, d]
    counter_emb: np.ndarray,  # [N, d] counter j is the true counter of point j
    rate: float,
    rng: np.random.Generator,
    *,
    point_index: Any,
    counter_index: Any,
    point_keys: np.ndarray | None = None,
    counter_keys: np.ndarray | None = None,
    num_negatives: int = 1,
    neg_rank: tuple[int, int] = (1, 1),
    neg_margin: float | None = None,
) -> MiningResult:
    """Pick ``num_negatives`` negatives per anchor point. Pure given ``rng`` and the inputs.

    Each negative is, with probability ``rate``, a uniformly random point or counter (never the
    anchor's nor its counter's text); otherwise a hard one, drawn uniformly from the anchor's allowed
    candidates (points and counters, one per distinct text) of ranks ``neg_rank = (lo, hi)``
    (1 = nearest; fewer than ``lo`` allowed: the farthest allowed one). With ``neg_margin`` set, a
    candidate closer to the anchor than its own counter minus ``neg_margin`` is not allowed: in
    ArguAna such a candidate is often an argument for the same conclusion (a false negative).
    The defaults (one negative, rank 1, no guard) are the reference rule of the module docstring.

    ``point_index``/``counter_index`` are neighbour indexes over ``point_emb``/``counter_emb``
    (anything with ``.query(x, k)``, e.g. :func:`index.make_index_pair`), kept across epochs by the caller.
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
    lo, hi = (int(v) for v in neg_rank)
    if not 1 <= lo <= hi:
        raise ValueError(f"neg_rank must be (lo, hi) with 1 <= lo <= hi, got {neg_rank}")
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    kk = int(num_negatives)
    pk = _keys(point_keys, n, 0)
    ck = _keys(counter_keys, n, n)
    banned = np.stack([pk, ck], axis=1)  # [N, 2]
    all_keys = np.concatenate([pk, ck])  # [2N]

    # the random draws come first and always, so a seed gives the same stream whatever the rate
    take_random = (rng.random(n * kk) < rate).reshape(n, kk)  # [N, K]
    rand_ids = rng.integers(0, 2 * n, size=n * kk)  # [N*K]
    apk, ack = np.repeat(pk, kk), np.repeat(ck, kk)  # [N*K] anchor keys per draw
    bad = (all_keys[rand_ids] == apk) | (all_keys[rand_ids] == ack)
    rounds = 0
    while bad.any():  # rejection sampling; more than a few rounds only on degenerate data
        rounds += 1
        if rounds > 1000:
            raise ValueError("some anchor has no allowed random negative: every text equals its point or counter")
        rand_ids[bad] = rng.integers(0, 2 * n, size=int(bad.sum()))
        bad = (all_keys[rand_ids] == apk) | (all_keys[rand_ids] == ack)

    negatives = rand_ids.reshape(n, kk).copy()  # [N, K]
    hard_rows = np.flatnonzero(~take_random.all(axis=1))
    if len(hard_rows):
        q = point_emb[hard_rows]
        floor = None  # the reference rule is rank 1 of these: the nearest allowed point or counter
        if neg_margin is not None:
            own = np.linalg.norm(q - counter_emb[hard_rows], axis=1)  # [H] distance to the own counter
            floor = own - neg_margin
        ids = ranked_allowed(point_index, counter_index, q, pk, ck, banned[hard_rows], hi, floor)  # [H, hi]
        count = (ids >= 0).sum(1)  # [H] allowed candidates found (<= hi)
        # window of ranks [lo, hi] clipped to what exists; fewer than lo: the farthest found
        start = np.minimum(lo, np.maximum(count, 1)) - 1  # [H]
        width = np.maximum(count - start, 1)  # [H]
        if lo == hi:
            pick = np.repeat(start[:, None], kk, axis=1)  # [H, K]
        else:
            pick = start[:, None] + np.floor(rng.random((len(hard_rows), kk)) * width[:, None]).astype(np.int64)
        hard = np.take_along_axis(ids, pick, 1)  # [H, K]
        none = hard < 0  # the guard left nothing: keep the random draw
        take_random[hard_rows] |= none
        hard = np.where(none, negatives[hard_rows], hard)
        use_hard = ~take_random[hard_rows]  # [H, K]
        negatives[hard_rows] = np.where(use_hard, hard, negatives[hard_rows])
    negatives = negatives.astype(np.int64)
    return MiningResult(negatives=negatives, keys=all_keys[negatives], is_random=take_random)


def mining_telemetry(
    result: MiningResult,
    debate: np.ndarray,  # [N] debate code of each pair (a point and its counter share the folder)
    theme: np.ndarray,  # [N] theme code
    side: np.ndarray,  # [N] side folder code (0 pro, 1 con)
    point_emb: np.ndarray,  # [N, d] the embeddings mined on
    counter_emb: np.ndarray,  # [N, d]
    rows: np.ndarray | None = None,  # anchors to describe (e.g. the deduplicated training rows); None = all
    eval_texts: np.ndarray | None = None,  # text ids of the evaluation splits (validation, test)
) -> dict[str, float]:
    """What the mined negatives are, as shares of all negatives of ``rows``, and how far they lie.

    Where a negative comes from (point or counter; same debate and same side folder, same debate and
    the other side, same theme in another debate, another theme), whether it was hard or random,
    whether its text also occurs in an evaluation split (``eval_texts``: every training text is seen
    in training, so the seen/unseen boundary shows from this side: a negative shared with validation
    or test is a text the unseen view excludes), and the mean anchor-negative vs anchor-counter
    distance: an epoch whose negatives sit nearer than the true counters is mining false negatives
    or copies.
    """
    n = len(debate)
    rows = np.arange(n) if rows is None else np.asarray(rows)
    neg = result.negatives[rows]  # [R, K]
    pair = neg % n  # [R, K] the pair whose folder the negative sits in
    a = rows[:, None]  # [R, 1]
    same_debate = debate[pair] == debate[a]
    same_side = side[pair] == side[a]
    same_theme = theme[pair] == theme[a]
    out = {
        "mining/share_points": float((neg < n).mean()),
        "mining/share_counters": float((neg >= n).mean()),
        "mining/share_same_debate_same_side": float((same_debate & same_side).mean()),
        "mining/share_same_debate_other_side": float((same_debate & ~same_side).mean()),
        "mining/share_same_theme_other_debate": float((same_theme & ~same_debate).mean()),
        "mining/share_other_theme": float((~same_theme).mean()),
        "mining/share_hard": float((~result.is_random[rows]).mean()),
        "mining/share_random": float(result.is_random[rows].mean()),
    }
    if eval_texts is not None:
        out["mining/share_in_eval_splits"] = float(np.isin(result.keys[rows], eval_texts).mean())
    anchor = point_emb[rows]  # [R, d]
    negative = result.take(point_emb, counter_emb)[rows]  # [R, K, d]
    out["mining/dist_negative"] = float(np.linalg.norm(negative - anchor[:, None], axis=-1).mean())
    out["mining/dist_counter"] = float(np.linalg.norm(counter_emb[rows] - anchor, axis=-1).mean())
    return out
