"""The ``sharded-balltree`` index: one BallTree per Ray actor over contiguous shards.

Why: a scikit-learn BallTree query is single-threaded, so on S cores S shard actors answer the
same query-all roughly S times faster. The database is ``ray.put`` once as a float64 C-contiguous
array; each actor receives it as a top-level task argument, i.e. as a zero-copy read-only view
of the object store, and builds its tree on a row slice of it (a view too: sklearn copies nothing
for C-contiguous float64). Queries are put once and fanned out the same way; each actor returns
its shard's exact top-k (ids offset to global), and the driver merges them by (distance, id).
The union of per-shard exact top-k lists contains the global top-k, so the merge is exact.

Scheduling. Outside Ray Tune the actors are plain ``num_cpus=1`` actors (Ray is started locally
if needed). Inside a Tune trial a child actor without a reserved bundle can wait forever once the
trials hold every CPU (two concurrent trials on 2 CPUs deadlock silently). So the convention is:
the trial's placement group has bundle 0 for the trial itself and bundles 1..S, ``{"CPU": 1}``
each, for the shard actors; :func:`shard_bundles` builds that list for the sweep trainable's
``PlacementGroupFactory`` (:func:`counterarg.sweep.trainable.trial_bundles`) and this module pins
actor i to bundle i+1. Whether bundles pack onto one node or spread over several is the trainable's
choice of bundle strategy.

This module and the sweep package (:mod:`counterarg.sweep`) are the only ones that import Ray;
:func:`ensure_ray` is the one way either starts a local Ray.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
import ray
from ray import ObjectRef
from ray.actor import ActorHandle, ActorProxy
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from counterarg.ray_internals import loopback_only
from counterarg.retrieval.neighbours import BallTreeIndex, _check_queries, as_float64, sort_rows


def shard_bundles(
    shards: int, trial: dict[str, float] | None = None, cpu_per_shard: float = 1.0
) -> list[dict[str, float]]:
    """Placement-group bundles for a trial that uses ``shards`` shard actors.

    ``[{"CPU": 1, **trial}, {"CPU": cpu_per_shard}, ... S times]``: bundle 0 is the trial itself
    (``trial`` adds or overrides its resources, e.g. ``{"GPU": 1}``), bundles 1..S one per shard
    actor; each actor asks for exactly its bundle's CPU. Use as
    ``tune.PlacementGroupFactory(shard_bundles(S), strategy="PACK")``.
    """
    if int(shards) < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    if not cpu_per_shard > 0:
        raise ValueError(f"cpu_per_shard must be > 0, got {cpu_per_shard}")
    return [{"CPU": 1, **(trial or {})}] + [{"CPU": float(cpu_per_shard)} for _ in range(int(shards))]


class ShardActor:
    """Holds one shard's BallTree. All arrays arrive as zero-copy object-store views.

    Ray runs it as :data:`RemoteShardActor`; its methods are marked ``@ray.method`` (which changes
    nothing at run time) so that a type checker knows their ``.remote`` calls."""

    def __init__(self) -> None:
        self.indexes: dict[str, BallTreeIndex] = {}  # one tree per database name (points, counters)

    @ray.method
    def build(
        self, name: str, data: np.ndarray, start: int, stop: int, leaf_size: int, block_size: int, slack: int
    ) -> float:
        """(Re)build tree ``name`` over rows [start, stop) of the shared database; returns seconds."""
        import time

        t = time.perf_counter()
        self.indexes.pop(name, None)  # release the previous epoch's object-store view first
        self.indexes[name] = BallTreeIndex(
            data[start:stop], leaf_size=leaf_size, block_size=block_size, slack=slack, id_offset=start
        )
        return time.perf_counter() - t

    @ray.method
    def query(self, name: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """This shard's exact top-k of tree ``name`` with global ids: [Q, min(k, shard rows)] each."""
        assert name in self.indexes, "build() first"
        return self.indexes[name].query(queries, k)

    @ray.method
    def drop(self, name: str) -> None:
        self.indexes.pop(name, None)

    @ray.method
    def where(self) -> dict[str, Any]:
        """Diagnostics: the node, placement group and pid this actor runs in."""
        ctx = ray.get_runtime_context()
        return {"node_id": ctx.get_node_id(), "placement_group_id": ctx.get_placement_group_id(), "pid": os.getpid()}


#: The Ray actor class of :class:`ShardActor`, one CPU each unless pinned to a bundle. Made by a call,
#: not a class decorator: type checkers ignore what a class decorator returns.
RemoteShardActor = ray.remote(num_cpus=1)(ShardActor)


LOOPBACK = "127.0.0.1"


def ensure_ray(num_cpus: int | None = None, *, quiet: bool = True, runtime_env: dict[str, Any] | None = None) -> bool:
    """Start a new local Ray, unless Ray is initialised: the one way this project starts a local Ray.

    Never attaches to a cluster another process left running on this machine (``address="local"``),
    listens on 127.0.0.1 only (:func:`counterarg.ray_internals.loopback_only`), no dashboard.
    ``quiet`` (the sharded index): no worker output on the driver and Ray's warnings only; a sweep driver
    (:func:`counterarg.sweep.runner.init_ray`) passes ``quiet=False`` and the ``runtime_env`` its
    workers need.

    Returns True when this call started it (the caller may then ``ray.shutdown()``).
    """
    if ray.is_initialized():
        return False
    init: dict[str, Any] = {"log_to_driver": not quiet}
    if quiet:
        init.update(configure_logging=True, logging_level="warning", ignore_reinit_error=True)
    if runtime_env is not None:
        init["runtime_env"] = runtime_env
    with loopback_only():  # a local Ray: nothing of it listens beyond 127.0.0.1
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address=LOOPBACK, **init)
    return True


class ShardedBallTree:
    """S contiguous shards, one :class:`ShardActor` each; actors survive :meth:`rebuild`.

    ``query(queries, k)`` has the same contract as every index in :mod:`counterarg.retrieval.index`.
    Call :meth:`close` to kill the actors (Ray itself is left running).
    """

    def __init__(
        self,
        embeddings: Any,
        shards: int = 2,
        leaf_size: int = 2,
        block_size: int = 4096,
        slack: int = 1,
        *,
        share_actors_of: ShardedBallTree | None = None,
    ):
        self.shards = int(shards)
        if self.shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self.leaf_size, self.block_size, self.slack = int(leaf_size), int(block_size), int(slack)
        self.actors: list[ActorProxy[ShardActor]]
        if share_actors_of is not None:  # a second tree on the same actors (and bundles)
            self.started_ray = False
            self.actors = share_actors_of.actors
            self.shards = len(self.actors)
            self.owns_actors = False
        else:
            self.started_ray = ensure_ray(num_cpus=max(self.shards, os.cpu_count() or 1))
            self.actors = [RemoteShardActor.options(**self._placement(i)).remote() for i in range(self.shards)]
            self.owns_actors = True
        self.name = f"tree-{id(self):x}"
        self._data_ref: ObjectRef[np.ndarray] | None = None
        self.build_times: list[float] = []
        self.rebuild(embeddings)

    def _placement(self, i: int) -> dict[str, Any]:
        """Actor options: bundle i+1 of the current (trial's) placement group, if there is one."""
        pg = ray.util.get_current_placement_group()
        if pg is None:
            return {"num_cpus": 1}
        if len(pg.bundle_specs) < self.shards + 1:
            raise RuntimeError(
                f"sharded-balltree with shards={self.shards} runs inside a placement group with "
                f"{len(pg.bundle_specs)} bundle(s); it needs {self.shards + 1} "
                f"(build the trial's PlacementGroupFactory from shard_bundles({self.shards}))"
            )
        cpus = float(pg.bundle_specs[i + 1].get("CPU", 1))  # exactly what the bundle reserves
        return {
            "num_cpus": cpus,
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                placement_group=pg, placement_group_bundle_index=i + 1, placement_group_capture_child_tasks=False
            ),
        }

    def rebuild(self, embeddings: Any) -> None:
        """Rebuild every shard's tree over new embeddings [N, d], in parallel, reusing actors."""
        data = as_float64(embeddings)  # [N, d] float64 C-contiguous -> zero-copy in the actors
        self.n, self.dim = data.shape
        bounds = np.linspace(0, self.n, self.shards + 1).round().astype(int)
        self.ranges = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        self._data_ref = ray.put(data)
        self.build_times = ray.get(
            [
                actor.build.remote(self.name, self._data_ref, a, b, self.leaf_size, self.block_size, self.slack)
                for actor, (a, b) in zip(self.actors, self.ranges)
                if b > a
            ]
        )

    def query(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact global top-k: distances [Q, min(k, N)] float64, ids [Q, min(k, N)] int64."""
        q = _check_queries(queries, self.dim, k)
        k = min(int(k), self.n)
        q_ref = ray.put(q)
        parts = ray.get(
            [actor.query.remote(self.name, q_ref, k) for actor, (a, b) in zip(self.actors, self.ranges) if b > a]
        )
        dist = np.concatenate([d for d, _ in parts], axis=1)  # [Q, sum of per-shard k]
        ids = np.concatenate([i for _, i in parts], axis=1)  # [Q, sum of per-shard k]
        return sort_rows(dist, ids, k)  # [Q, k] each

    def where(self) -> list[dict[str, Any]]:
        """Each actor's node, placement group and pid (for tests and debugging)."""
        return ray.get([a.where.remote() for a in self.actors])

    def close(self) -> None:
        """Kill the shard actors and drop the database reference."""
        if getattr(self, "owns_actors", False):
            for actor in self.actors:
                assert isinstance(actor, ActorHandle)  # always; ActorProxy names the class too, for typing only
                ray.kill(actor)
        elif getattr(self, "actors", None):
            for actor in self.actors:
                actor.drop.remote(self.name)
        self.actors = []
        self._data_ref = None

    def __del__(self) -> None:  # best effort; explicit close() is preferred
        try:
            if self.actors and ray.is_initialized():
                self.close()
        except Exception as e:  # noqa: BLE001 - at interpreter exit Ray may be half torn down; say so
            print(f"[index] shard actors of {getattr(self, 'name', '?')} not released at exit: {e!r}", file=sys.stderr)
