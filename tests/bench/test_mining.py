"""``counterarg bench mining`` (counterarg.bench.mining): every backend on a tiny set agrees with exact."""

from __future__ import annotations

import json
import re

import pytest

from counterarg.cli import main
from counterarg.core.paths import absolute_paths_in


@pytest.mark.slow
def test_bench_mining_tiny(tmp_path, monkeypatch, capsys):
    import ray

    out = tmp_path / "mining.md"
    args = ["bench", "mining", "--n", "300", "--repeat", "1", "--shards", "2", "--out", str(out)]
    try:
        assert main(args + ["--json", str(tmp_path / "m.json")]) == 0
        rows = json.loads((tmp_path / "m.json").read_text())["rows"]
        assert {r["backend"] for r in rows} >= {"exact", "balltree", "sharded-balltree"}
        assert all(r["ids_agree_with_exact"] == 1.0 for r in rows if r["backend"] != "faiss-flat")
        assert "sharded-balltree" in out.read_text()
        assert not absolute_paths_in(out.read_text()), out.read_text()  # no path of this machine
        # a backend that returns other neighbours makes the bench fail, naming it
        import numpy as np

        from counterarg.retrieval.index import BallTreeIndex

        real = BallTreeIndex.query

        def shifted(self, x, k):  # each query gets the next query's neighbours
            d, i = real(self, x, k)
            return d, np.roll(i, 1, axis=0)

        monkeypatch.setattr(BallTreeIndex, "query", shifted)
        capsys.readouterr()
        assert main(args + ["--json", str(tmp_path / "bad.json")]) == 1
        assert "ids differ from the exact index for balltree at n=300" in capsys.readouterr().err
    finally:  # the sharded backend started a Ray in this process: later tests (a cluster) need none
        ray.shutdown()


def _object_array(path):
    import numpy as np

    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


@pytest.mark.parametrize(
    "make, match",
    [
        (None, "no such file"),
        (_object_array, "is not a .npy array of numbers"),  # a pickled object array: never unpickled
        (lambda p: p.write_bytes(b"not a numpy file"), "is not a .npy array of numbers"),
        (lambda p: __import__("numpy").save(p, __import__("numpy").zeros(5)), r"holds a float64 array of shape \(5,\)"),
        (lambda p: __import__("numpy").save(p, __import__("numpy").full((3, 2), float("nan"))), "NaN or infinite"),
    ],
)
def test_bench_mining_refuses_unusable_embeddings_before_running(make, match, tmp_path, capsys):
    """``--embeddings`` missing or holding an object array was a traceback; it is exit 2 naming the file,
    before any backend runs (nothing written)."""
    path = tmp_path / "e.npy"
    if make is not None:
        make(path)
    out = tmp_path / "mining.md"
    assert main(["bench", "mining", "--n", "300", "--embeddings", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--embeddings {path}" in err and re.search(match, err) and "Traceback" not in err, err
    assert not out.exists()
