"""A real two-node Ray cluster on this machine: sweep with file:// storage, SIGKILL the driver
mid-sweep, restore from a new driver to completion.

Both nodes and both drivers run with token authentication (RAY_AUTH_MODE=token and a shared
RAY_AUTH_TOKEN), as the README's cluster recipe does.
"""

from __future__ import annotations

import os
import secrets

import pytest

from conftest import kill_and_resume, unique_name


def _auth_env(values: dict[str, str | None]) -> None:
    """Set the auth env vars and make this process's Ray core re-read them (it caches both)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@pytest.mark.slow
def test_two_node_cluster_kill_driver_and_restore(tiny, tmp_path):
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    _auth_env({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    cluster = None
    try:
        cluster = Cluster(initialize_head=True,
                          head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        epochs = 30
        storage = f"file://{tmp_path / 'shared'}"
        name = unique_name("cluster")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        args = ["--address", cluster.address, "--storage", storage, "--name", name,
                "--strategies", "fixed;decay;random", "--seeds", "0",
                "--encoder", tiny["encoder"], "--epochs", str(epochs),
                "--set", f"cache_dir={tiny['cache_dir']}", "--set", "device=cpu",
                "--set", "max_length=32"]
        at_kill, after = kill_and_resume(args, tmp_path / "shared" / name, epochs, env,
                                         tmp_path / "driver.log", n_trials=3)
        # the trials ran on both nodes (each result row names its Ray node)
        import json

        from counterarg.tune import NODE_KEY

        nodes = set()
        for trial in after:
            for line in (tmp_path / "shared" / name / trial / "result.json").read_text().splitlines():
                row = json.loads(line)
                if NODE_KEY in row:  # rows a resumed finished trial reports from its checkpoint have none
                    nodes.add(row[NODE_KEY])
        cluster_nodes = {n.node_id for n in cluster.list_all_nodes()}
        assert nodes == cluster_nodes and len(nodes) == 2, (nodes, cluster_nodes)
    finally:
        if cluster is not None:
            cluster.shutdown()
        _auth_env(saved)
