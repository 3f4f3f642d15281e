"""An epoch's training batches: a seeded permutation of the rows, optionally in length buckets.

Why its own module: the batch order is the one piece of an epoch's randomness that decides which
rows meet; it depends only on ``rng`` (seeded from (seed, epoch)) and the rows' token lengths, so a
resumed run draws the same batches, and ``bench train`` measures padding on exactly these batches.
"""

from __future__ import annotations

import numpy as np


def batch_order(
    n: int, batch_size: int, rng: np.random.Generator, *, lengths: np.ndarray | None = None, buckets: int = 0
) -> np.ndarray:
    """An epoch's training batches as row indices [n // batch_size, batch_size] (the rest dropped).

    ``buckets=0``: one random permutation cut in order (exactly the draws training made before
    buckets existed). ``buckets=N``: the permuted rows are cut into spans of N * batch_size, each
    span sorted by ``lengths`` (ties in permuted order) and cut into batches, and the batches are
    shuffled: similar lengths share a batch, so little is padded, while which rows meet and the order
    of batches stay random. All randomness comes from ``rng`` (seeded from (seed, epoch)), so a
    resumed run draws the same batches. Each kept row occurs exactly once.
    """
    if batch_size < 1 or n < batch_size:
        raise ValueError(f"cannot cut {n} rows into batches of {batch_size}")
    steps = n // batch_size
    perm = rng.permutation(n)[: steps * batch_size]  # [steps * B]
    if not buckets:
        return perm.reshape(steps, batch_size)
    if lengths is None or len(lengths) != n:
        raise ValueError(
            f"length buckets need one length per row ({n}), got {None if lengths is None else len(lengths)}"
        )
    span = buckets * batch_size
    lengths = np.asarray(lengths)
    spans = [perm[s : s + span] for s in range(0, len(perm), span)]
    sorted_rows = np.concatenate([c[np.argsort(-lengths[c], kind="stable")] for c in spans])  # [steps * B]
    batches = sorted_rows.reshape(steps, batch_size)  # spans are whole batches: len(perm) % B == 0
    return batches[rng.permutation(steps)]
