"""``counterarg bench eval`` (counterarg.bench.eval) runs on a tiny split and fails loudly (exit 1)
when its ranks disagree with the reference-style loop."""

from __future__ import annotations

import json

import pytest

from counterarg.cli import main


@pytest.mark.slow
def test_bench_eval_on_a_small_synthetic_split(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["bench", "eval", "--synthetic", "--reference-queries", "3", "--repeats", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["ranks_agree_tasks"] == 8 and res["ours_all_s"]["rerank"] > 0


@pytest.mark.slow
def test_bench_eval_fails_when_ranks_disagree(tmp_path, monkeypatch, capsys):
    import counterarg.bench.eval as be

    real = be.reference_style_ranks
    monkeypatch.setattr(be, "reference_style_ranks", lambda *a, **kw: [r + 1 for r in real(*a, **kw)])
    assert main(["bench", "eval", "--synthetic", "--reference-queries", "2", "--repeats", "1"]) == 1
