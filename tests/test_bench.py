"""The benchmarks run on tiny inputs and their consistency checks fail loudly (exit 1)."""

from __future__ import annotations

import json

import pytest

from counterarg.cli import main


def test_bench_eval_on_a_small_synthetic_split(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["bench", "eval", "--synthetic", "--reference-queries", "3", "--repeats", "1",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["ranks_agree_tasks"] == 8 and res["ours_all_s"]["rerank"] > 0


def test_bench_eval_fails_when_ranks_disagree(tmp_path, monkeypatch, capsys):
    import counterarg.bench_eval as be

    real = be.reference_style_ranks
    monkeypatch.setattr(be, "reference_style_ranks", lambda *a, **kw: [r + 1 for r in real(*a, **kw)])
    assert main(["bench", "eval", "--synthetic", "--reference-queries", "2", "--repeats", "1"]) == 1


@pytest.mark.slow
def test_bench_mining_tiny(tmp_path, monkeypatch):
    import ray

    out = tmp_path / "mining.md"
    try:
        assert main(["bench", "mining", "--n", "300", "--repeat", "1", "--shards", "2", "--out", str(out),
                     "--json", str(tmp_path / "m.json")]) == 0
    finally:  # the sharded backend started a Ray in this process: later tests (a cluster) need none
        ray.shutdown()
    rows = json.loads((tmp_path / "m.json").read_text())["rows"]
    assert {r["backend"] for r in rows} >= {"exact", "balltree", "sharded-balltree"}
    assert all(r["ids_agree_with_exact"] == 1.0 for r in rows if r["backend"] != "faiss-flat")
    assert "sharded-balltree" in out.read_text()
