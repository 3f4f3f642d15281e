"""Exact k-nearest-neighbour indexes (L2) shared by hard-negative mining and evaluation.

Three backends, one contract (:func:`make_index`):

* ``exact`` (the default): blocked matrix-multiply brute force with ``torch.topk`` on CPU or GPU.
  It is the fast choice at every size we use (0.1 s for the 4k training pairs on 2 cores).
* ``balltree``: one scikit-learn BallTree, the 2018 scripts' method (``leaf_size=2``).
* ``sharded-balltree``: the database split into contiguous shards, one BallTree per Ray actor,
  queried in parallel (see :mod:`counterarg.retrieval.shards`, the only module here that imports Ray).

Every backend returns the *same* answer: for each query the ``k`` database rows with the smallest
Euclidean distance, sorted ascending by distance with ties broken by the smaller id. This is
what makes backends interchangeable inside a sweep (a trial's mined negatives must not depend on
the index it ran with) and it needs care in two places:

1. Tie order. A BallTree (and ``topk``) returns tied neighbours in an arbitrary order, and on
   duplicate-heavy data the k-th boundary often falls inside a group of tied rows, so a backend
   may even return a different *member* of the tie group. We therefore never trust a backend's
   own top-k: each backend only proposes ``k + slack`` candidates, whose distances are recomputed
   directly as ``||q - x||`` in float64 (:func:`counterarg.retrieval.neighbours.canonical_query`),
   re-sorted by (distance, id) and cut to ``k``.
2. Completeness at the boundary. The candidates are only good enough if no non-candidate could
   sort before the k-th. Each backend also reports a lower bound on the squared distance of any
   row it did *not* propose (its (k+slack)-th approximate value minus its worst-case rounding
   error). Rows whose bound does not clear the k-th exact distance are re-queried with four times
   as many candidates, up to the whole database; on random data this almost never happens, on
   duplicate-heavy data it collects the whole tie group.

The float32 matrix-multiply form ``||q||^2 - 2 q.x + ||x||^2`` loses all relative precision for
near-duplicates (a true distance of 0 can come out as 5e-3), which is a second reason for the
float64 recomputation: the returned distances agree with the BallTree's within 1e-5.

No Ray import at module level: the sharded backend imports :mod:`counterarg.retrieval.shards` lazily.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from .neighbours import BallTreeIndex, ExactIndex

BACKENDS = ("exact", "balltree", "sharded-balltree")

#: The defaults of every option :func:`make_index` accepts. The run config's index fields
#: (``leaf_size``, ``shards``, ``block_size``) take their defaults from here (config.py reads them).
DEFAULT_OPTIONS: dict[str, Any] = {
    "leaf_size": 2,  # BallTree leaf size; the 2018 scripts' value
    "shards": 2,  # sharded-balltree: number of Ray actors / contiguous shards
    "block_size": 4096,  # query rows per block (exact, balltree): bounds memory
    "col_block": 16384,  # exact: database rows per column block; bounds the [block, col] matrix
    "device": "cpu",  # exact: "cpu", "cuda", "cuda:N" or "auto" (cuda when available)
    "slack": None,  # extra candidates per query beyond k (see module doc); None -> per backend
}

#: Default slack: BallTree distances are float64, so one extra candidate suffices to detect a tie
#: at the k-th boundary (and k+1 keeps the tree query nearly as cheap as k); the float32 matmul
#: needs room for its rounding error, and topk barely costs more for 11 than for 4.
DEFAULT_SLACK = {"balltree": 1, "sharded-balltree": 1, "exact": 8}


class NeighbourIndex(Protocol):
    """What :func:`make_index` returns."""

    n: int  # database rows

    def query(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def rebuild(self, embeddings: Any) -> None: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------- factory


def _resolve_options(backend: str, options: dict[str, Any]) -> dict[str, Any]:
    """All options with defaults filled in; an unknown name raises TypeError naming it."""
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise TypeError(f"unknown index option(s) {', '.join(unknown)}; known: {', '.join(DEFAULT_OPTIONS)}")
    o = {**DEFAULT_OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    if o["slack"] is None:
        o["slack"] = DEFAULT_SLACK.get(backend, 8)
    return o


def make_index(backend: str, embeddings: Any, **options: Any) -> NeighbourIndex:
    """Build a neighbour index over ``embeddings`` [N, d] (numpy array or torch tensor).

    ``backend`` is one of :data:`BACKENDS`. ``options`` (all optional, see
    :data:`DEFAULT_OPTIONS`): ``leaf_size``, ``shards``, ``block_size``, ``col_block``, ``device``,
    ``slack``; options a backend does not use are ignored, so callers may pass the whole run
    config's index settings. An unknown option name raises TypeError, an unknown backend
    ValueError, both naming it.

    The result has ``.query(queries, k) -> (distances [Q, k], ids [Q, k])`` with k clipped to N,
    ``.rebuild(embeddings)`` (reuses Ray actors for the sharded backend) and ``.close()``.
    """
    o = _resolve_options(backend, options)
    if backend == "exact":
        return ExactIndex(
            embeddings, block_size=o["block_size"], col_block=o["col_block"], device=o["device"], slack=o["slack"]
        )
    if backend == "balltree":
        return BallTreeIndex(embeddings, leaf_size=o["leaf_size"], block_size=o["block_size"], slack=o["slack"])
    if backend == "sharded-balltree":
        from counterarg.retrieval.shards import ShardedBallTree

        return ShardedBallTree(
            embeddings, shards=o["shards"], leaf_size=o["leaf_size"], block_size=o["block_size"], slack=o["slack"]
        )
    raise ValueError(f"unknown index backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def make_index_pair(backend: str, first: Any, second: Any, **options: Any) -> tuple[NeighbourIndex, NeighbourIndex]:
    """Two indexes (the miner's point and counter trees) that share one set of shard actors.

    For ``sharded-balltree`` the second tree lives on the first one's actors, so a Tune trial
    reserves ``shards`` bundles, not twice as many; the other backends are simply built twice.
    """
    if backend != "sharded-balltree":
        return make_index(backend, first, **options), make_index(backend, second, **options)
    from counterarg.retrieval.shards import ShardedBallTree

    o = _resolve_options(backend, options)
    a = ShardedBallTree(
        first, shards=o["shards"], leaf_size=o["leaf_size"], block_size=o["block_size"], slack=o["slack"]
    )
    return a, ShardedBallTree(
        second,
        shards=o["shards"],
        leaf_size=o["leaf_size"],
        block_size=o["block_size"],
        slack=o["slack"],
        share_actors_of=a,
    )
