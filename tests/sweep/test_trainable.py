"""The Tune trainable (counterarg.sweep.trainable): trial resources, and training that never imports Ray."""

from __future__ import annotations

import subprocess
import sys

import pytest

from counterarg.sweep.trainable import trial_bundles

from .conftest import REPO


def test_placement_bundles():
    assert trial_bundles({"index": "exact"}, cpus=1) == [{"CPU": 1.0}]
    b = trial_bundles({"index": "sharded-balltree", "shards": 3}, cpus=1, gpus=0.5)
    assert len(b) == 4 and b[0]["GPU"] == 0.5
    assert b[0]["CPU"] == 0.5 and [x["CPU"] for x in b[1:]] == pytest.approx([1 / 6] * 3)
    assert sum(x["CPU"] for x in b) == pytest.approx(1.0)  # a sharded trial reserves what a plain one does


@pytest.mark.slow
def test_gpu_fractions_pack_two_trials_on_one_gpu_and_fall_back_to_cpu(tmp_path):
    """A CPU-only Ray cluster declared with one logical GPU: with --gpus-per-trial 0.5 two trials run
    at once on the same GPU, each holding half of it, and device=auto trains on the CPU there."""
    import ray
    import torch
    from ray import tune
    from ray.tune import RunConfig

    from counterarg.sweep.runner import REPO_ROOT
    from counterarg.sweep.trainable import trial_resources

    def probe(config):
        import time as _time
        from pathlib import Path as _Path

        import ray as _ray
        from ray import tune as _tune

        from counterarg.nn.encoder import pick_device

        folder = _Path(config["folder"])
        (folder / f"{config['i']}.start").write_text("")
        deadline = _time.time() + 120
        while len(list(folder.glob("*.start"))) < 2 and _time.time() < deadline:  # wait for the other trial
            _time.sleep(0.05)
        bundles = _tune.get_context().get_trial_resources().bundles
        _tune.report(
            {
                "gpu": sum(b.get("GPU", 0) for b in bundles),
                "gpu_ids": [str(g) for g in _ray.get_gpu_ids()],
                "both_running": len(list(folder.glob("*.start"))) == 2,
                "device": str(pick_device("auto")),
            }
        )

    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
    )
    try:
        (tmp_path / "marks").mkdir()
        tuner = tune.Tuner(
            tune.with_resources(probe, trial_resources(cpus=1, gpus=0.5)),
            param_space={"i": tune.grid_search([0, 1]), "folder": str(tmp_path / "marks")},
            run_config=RunConfig(storage_path=str(tmp_path / "store"), verbose=0),
        )
        results = [r.metrics for r in tuner.fit()]
    finally:
        ray.shutdown()
    assert len(results) == 2
    for m in results:
        assert m["gpu"] == 0.5 and m["gpu_ids"] == ["0"], m  # half of the one GPU each
        assert m["both_running"], "the two trials did not run at the same time"
        if not torch.cuda.is_available():
            assert m["device"] == "cpu", m  # a logical GPU without CUDA: device=auto trains on the CPU


def test_training_never_imports_ray():
    """Training code never imports Ray: only the sweep's trainable adapts a run to Tune. Checked in a
    fresh interpreter (this one has Ray loaded by other tests); the summary modules are Ray-free too."""
    modules = [
        "counterarg",
        "counterarg.training.loop",
        "counterarg.evaluation.evaluate",
        "counterarg.cli",
        "counterarg.serving.export",
        "counterarg.evaluation.selection",
        "counterarg.sweep",
        "counterarg.analysis.trials",
        "counterarg.analysis.summary",
        "counterarg.analysis.plots",
        "counterarg.analysis.significance",
        "counterarg.sweep.lineage",
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    assert 'ray' not in sys.modules, f'importing {name} imported ray'\n"
        "print('no ray')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "no ray", out.stderr[-3000:]
    # the check can fail: the trainable's own module does import Ray
    out = subprocess.run(
        [sys.executable, "-c", "import sys, counterarg.sweep.trainable; print('ray' in sys.modules)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.stdout.strip() == "True", out.stderr[-3000:]
