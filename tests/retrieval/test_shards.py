"""The sharded BallTree (counterarg.retrieval.shards): shard bundles for a trial's placement group, exact answers
from Ray actors that are reused across rebuilds. One module-scoped local Ray session (4 logical CPUs,
so a 3-bundle placement group fits on 2 cores)."""

from __future__ import annotations

import pytest
from conftest import DATA, K, check, queries_for, reference

from counterarg.retrieval.index import make_index
from counterarg.retrieval.shards import shard_bundles


def test_shard_bundles():
    assert shard_bundles(2) == [{"CPU": 1}, {"CPU": 1}, {"CPU": 1}]
    assert shard_bundles(1, {"GPU": 1}) == [{"CPU": 1, "GPU": 1}, {"CPU": 1}]
    assert shard_bundles(2, {"CPU": 0.5}, cpu_per_shard=0.25) == [{"CPU": 0.5}, {"CPU": 0.25}, {"CPU": 0.25}]
    with pytest.raises(ValueError):
        shard_bundles(0)


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.slow
def test_sharded_balltree_is_exact_and_reuses_actors(ray_session):
    idx = make_index("sharded-balltree", DATA["gauss"], shards=3)  # uneven shards
    try:
        pids = [w["pid"] for w in idx.where()]
        for name, x in DATA.items():
            idx.rebuild(x)  # in place: same actors, new trees
            check(idx.query(x, K), reference(x, x, K))
            q = queries_for(x, name)
            check(idx.query(q, K), reference(x, q, K))
        assert [w["pid"] for w in idx.where()] == pids
        small = DATA["dups"][:5]  # fewer rows than k, and a shard of only one row
        idx.rebuild(small)
        check(idx.query(small, 50), reference(small, small, 5))
    finally:
        idx.close()


@pytest.mark.slow
def test_sharded_actors_use_the_trials_placement_group_bundles(ray_session):
    """Inside a placement group (a Tune trial), shard i runs in bundle i+1 of that group."""
    ray = ray_session
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    x = DATA["dups"]

    @ray.remote(num_cpus=1)
    def trial(shards):
        idx = make_index("sharded-balltree", x, shards=shards)
        try:
            return idx.query(x, K), idx.where()
        finally:
            idx.close()

    pg = placement_group(shard_bundles(2), strategy="PACK")
    ray.get(pg.ready(), timeout=60)
    try:
        in_bundle0 = PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=0)
        got, where = ray.get(trial.options(scheduling_strategy=in_bundle0).remote(2), timeout=120)
        check(got, reference(x, x, K))
        assert [w["placement_group_id"] for w in where] == [pg.id.hex()] * 2
        # a group without bundles for the shards fails loudly instead of hanging
        with pytest.raises(ray.exceptions.RayTaskError, match="shard_bundles"):
            ray.get(trial.options(scheduling_strategy=in_bundle0).remote(3), timeout=60)
    finally:
        remove_placement_group(pg)
