"""An epoch's batches (counterarg.sampling.batches.batch_order): each row once, fixed by the seed, length buckets."""

from __future__ import annotations

import numpy as np
import pytest

from counterarg.sampling.batches import batch_order


def _padded(batches: np.ndarray, lengths: np.ndarray) -> int:
    """Tokens a batch pays for: its longest row times its size, summed over batches."""
    return int(sum(lengths[b].max() * len(b) for b in batches))


@pytest.mark.parametrize("buckets", [0, 1, 4, 1000])
def test_batch_order_uses_each_row_once_and_is_fixed_by_the_seed(buckets):

    n, bs = 203, 8
    lengths = np.random.default_rng(5).integers(5, 256, n)
    b = batch_order(n, bs, np.random.default_rng([0, 3]), lengths=lengths, buckets=buckets)
    assert b.shape == (n // bs, bs)
    assert len(np.unique(b)) == b.size and b.min() >= 0 and b.max() < n  # each kept row exactly once
    again = batch_order(n, bs, np.random.default_rng([0, 3]), lengths=lengths, buckets=buckets)
    np.testing.assert_array_equal(b, again)
    other = batch_order(n, bs, np.random.default_rng([0, 4]), lengths=lengths, buckets=buckets)
    assert not np.array_equal(b, other), "another epoch draws other batches"


def test_unbucketed_order_is_the_plain_permutation():
    """buckets=0 draws exactly what training drew before buckets existed (old results reproduce)."""

    b = batch_order(50, 8, np.random.default_rng([2, 1]))
    np.testing.assert_array_equal(b.ravel(), np.random.default_rng([2, 1]).permutation(50)[:48])


def test_length_buckets_cut_padding_and_still_shuffle():

    n, bs = 4065, 8
    lengths = np.random.default_rng(1).integers(20, 256, n)
    plain = _padded(batch_order(n, bs, np.random.default_rng(0)), lengths)
    b = batch_order(n, bs, np.random.default_rng(0), lengths=lengths, buckets=64)
    assert _padded(b, lengths) < 0.75 * plain
    first = [int(lengths[r].max()) for r in b[:20]]
    assert first != sorted(first) and first != sorted(first, reverse=True), "batches are shuffled across buckets"
    with pytest.raises(ValueError, match="one length per row"):
        batch_order(n, bs, np.random.default_rng(0), buckets=4)
