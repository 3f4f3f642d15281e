"""``counterarg bench train`` and ``bench gpu`` (counterarg.bench.train) on tiny inputs."""

from __future__ import annotations

import json
import tempfile

import pytest

from counterarg.cli import main


@pytest.mark.slow
def test_bench_train_on_the_demo_with_the_tiny_encoder(tiny_encoder, tmp_path, capsys):
    out = tmp_path / "train.json"
    assert (
        main(
            [
                "bench",
                "train",
                "--demo",
                "--modes",
                "none",
                "top:1",
                "--precisions",
                "fp32",
                "bf16",
                "--batches",
                "2",
                "--warmup",
                "1",
                "--embed-texts",
                "16",
                "--buckets",
                "2",
                "--set",
                f"encoder={tiny_encoder}",
                "--set",
                "max_length=64",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    got = {(r["finetune"], r["precision"], r["length_buckets"]) for r in res["rows"]}
    assert got == {
        ("none", "fp32", 0),
        ("none", "bf16", 0),
        ("top:1", "fp32", 0),
        ("top:1", "fp32", 2),
        ("top:1", "bf16", 0),
        ("top:1", "bf16", 2),
    }
    for r in res["rows"]:
        assert r["train_seq_per_s"] > 0 and r["embed_seq_per_s"] > 0 and r["rss_peak_mb"] > 50
        # the same work per CPU-second of this process (the figures ratios are read from under load)
        assert 0 < r["train_seq_per_cpu_s"] and 0 < r["embed_seq_per_cpu_s"]
        assert r["load_start"] >= 0 and r["load_end"] >= 0
    top = {r["length_buckets"]: r for r in res["rows"] if r["finetune"] == "top:1" and r["precision"] == "fp32"}
    assert top[2]["epoch_padded_tokens"] < top[0]["epoch_padded_tokens"]  # same epoch, less padding
    assert top[0]["epoch_real_tokens"] == top[2]["epoch_real_tokens"]  # the same rows
    assert len(res["bucket_savings"]) == 2
    assert "| top:1 | bf16 | 2 |" in capsys.readouterr().out


def test_bench_train_names_a_bad_mode(capsys):
    assert main(["bench", "train", "--demo", "--modes", "top:x"]) == 2
    assert "top:x" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_gpu_falls_back_to_a_tiny_cpu_run_without_cuda(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # CI machines with a GPU test the fallback too
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert main(["bench", "gpu", "--json", str(tmp_path / "gpu.json")]) == 0
    assert list(scratch.iterdir()) == []  # its run folders and tiny BERT (52 MB) are removed
    out = capsys.readouterr().out
    assert "no CUDA device found; running the CPU fallback: a tiny random BERT" in out
    rows = json.loads((tmp_path / "gpu.json").read_text())["rows"]
    assert [r["precision"] for r in rows] == ["bf16", "fp32"]
    assert all(r["train_seq_per_s"] > 0 and r["train/loss"] > 0 for r in rows)
