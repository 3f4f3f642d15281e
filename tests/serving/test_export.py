"""Export: the sentence-transformers folder encodes exactly like ``counterarg embed``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from counterarg.cli import main
from counterarg.config import Config
from counterarg.training.loop import train

TEXTS = [
    "Homework should be banned because children need time to play.",
    "Play is not lost: homework teaches discipline that play cannot.",
    "A short one.",
    "Ünïcode and a much longer text " * 20,
]


@pytest.mark.slow
@pytest.mark.parametrize("finetune,pooling", [("none", "mean"), ("top:1", "cls"), ("all", "pooler")])
def test_export_encodes_like_embed(tiny_encoder, tmp_path, finetune, pooling):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    cfg = Config(
        encoder=tiny_encoder, epochs=1, finetune=finetune, pooling=pooling, encoder_lr=1e-3, max_length=64, test_every=1
    )
    train(cfg, tmp_path / "run", progress=False)
    inp = tmp_path / "texts.txt"
    inp.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    assert (
        main(
            [
                "embed",
                "--checkpoint",
                str(tmp_path / "run" / "checkpoint"),
                "--input",
                str(inp),
                "--out",
                str(tmp_path / "s.npy"),
                "--quiet",
            ]
        )
        == 0
    )
    ours = np.load(tmp_path / "s.npy")
    hidden = json.loads((Path(tiny_encoder) / "config.json").read_text())["hidden_size"]
    assert ours.shape == (len(TEXTS), cfg.sim_dim or hidden)  # sim_dim 0 = the encoder width
    assert main(["export", "--checkpoint", str(tmp_path / "run" / "checkpoint"), "--out", str(tmp_path / "st")]) == 0
    st = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    theirs = st.encode(TEXTS, convert_to_numpy=True, batch_size=3)
    assert np.abs(theirs - ours).max() < 1e-5
    # the folder carries the classifier, the config and a model card with the metrics
    assert json.loads((tmp_path / "st" / "counterarg_config.json").read_text())["finetune"] == finetune
    card = (tmp_path / "st" / "README.md").read_text()
    assert "Wachsmuth" in card and "| test | all |" in card and "counterarg export" in card
    from safetensors.torch import load_file

    clf = load_file(str(tmp_path / "st" / "pair_classifier.safetensors"))
    assert clf["weight"].shape == (2, 3 * (cfg.sim_dim or hidden) + 3 * hidden)


@pytest.mark.slow
def test_embed_and_export_refuse_bad_input(tiny_encoder, tmp_path, capsys):
    ck = tmp_path / "run" / "checkpoint"
    train(Config(encoder=tiny_encoder, epochs=1, max_length=32), tmp_path / "run", progress=False)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert main(["embed", "--checkpoint", str(ck), "--input", str(empty), "--out", str(tmp_path / "e.npy")]) == 2
    assert "holds no texts" in capsys.readouterr().err
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("fine\nna\xefve\n".encode("latin-1"))
    assert main(["embed", "--checkpoint", str(ck), "--input", str(bad), "--out", str(tmp_path / "e.npy")]) == 2
    assert "line 2: not valid UTF-8" in capsys.readouterr().err
    jl = tmp_path / "t.jsonl"
    jl.write_text('{"text": "a"}\n{"body": "b"}\n')
    assert main(["embed", "--checkpoint", str(ck), "--input", str(jl), "--out", str(tmp_path / "e.npy")]) == 2
    assert "line 2" in capsys.readouterr().err
    exists = tmp_path / "x.npy"
    exists.write_bytes(b"keep")
    good = tmp_path / "good.txt"
    good.write_text("a text\n")
    assert main(["embed", "--checkpoint", str(ck), "--input", str(good), "--out", str(exists)]) == 2
    assert "--force" in capsys.readouterr().err and exists.read_bytes() == b"keep"
    assert main(["embed", "--checkpoint", str(tmp_path), "--input", str(good), "--out", str(tmp_path / "n.npy")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    assert main(["export", "--checkpoint", str(ck), "--out", str(tmp_path / "taken")]) == 2
    assert "--force" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("metric,similarity", [("l2", "euclidean"), ("cosine", "cosine")])
def test_export_declares_the_similarity_it_was_trained_with(
    tiny_encoder, tmp_path, capsys, monkeypatch, metric, similarity
):
    """A model trained with L2 was exported declaring cosine, so `model.similarity()`
    ranked otherwise than `counterarg rank`. its card gave the best epoch as the number
    of epochs trained and held absolute paths."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    from counterarg.core.paths import absolute_paths_in
    from counterarg.evaluation.selection import best_row

    monkeypatch.chdir(tmp_path)
    cfg = Config(
        encoder=tiny_encoder,
        epochs=3,
        patience=0,
        max_length=32,
        eval_metric=metric,
        eval_mode="retrieval",
        loss="combined",
        head="linear",
        sim_dim=16,
        lr=1e-2,
    )
    train(cfg, tmp_path / "run", progress=False)
    out = tmp_path / "st"
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(tmp_path / "run" / "best"), "--out", str(out)]) == 0
    assert "SentenceTransformer('st')" in capsys.readouterr().out  # the printed snippet: no path of this machine
    declared = json.loads((out / "config_sentence_transformers.json").read_text())["similarity_fn_name"]
    assert declared == similarity
    st = SentenceTransformer(str(out), device="cpu")
    assert st.similarity_fn_name == similarity
    cands = tmp_path / "c.txt"
    cands.write_text("\n".join(TEXTS + ["Taxes on banks hurt growth.", "Schools need money."]) + "\n")
    capsys.readouterr()
    assert (
        main(
            [
                "rank",
                "--checkpoint",
                str(tmp_path / "run" / "best"),
                "--text",
                TEXTS[0],
                "--candidates",
                str(cands),
                "--k",
                "6",
                "--json",
                "--quiet",
            ]
        )
        == 0
    )
    ours = [r["id"] for r in json.loads(capsys.readouterr().out)["results"]]
    emb = st.encode([TEXTS[0]] + cands.read_text().splitlines(), convert_to_tensor=True)
    sims = st.similarity(emb[:1], emb[1:])[0]  # [6], higher = nearer
    theirs = sorted(range(6), key=lambda i: (-float(sims[i]), i))
    assert theirs == ours
    # the card: epochs trained, which epoch these weights are, and no path of this machine
    card = (out / "README.md").read_text()
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    best = int(best_row(history, cfg.select_metric)["epoch"])
    assert f"the run trained 3 of its 3 epochs; these weights are epoch {best}, its best by" in card
    assert not absolute_paths_in(card), absolute_paths_in(card)
    assert "from the checkpoint `run/best`" in card and "--out st`" in card
    assert "ranking as `counterarg rank` does with eval_mode=retrieval, this model's own scoring" in card


def test_the_card_says_model_similarity_leaves_out_the_classifier_of_a_rerank_or_fused_model():
    """The docs said `model.similarity()` ranks as `counterarg rank`: only under eval_mode=retrieval."""
    from counterarg.serving.export import _similarity_caveat

    assert _similarity_caveat(Config(eval_mode="retrieval")) == ", this model's own scoring"
    for mode in ("rerank", "fused"):
        assert (
            f"scores with eval_mode={mode}, which also reorders the top 10 by the pair classifier"
            in _similarity_caveat(Config(eval_mode=mode))
        )


KILL_AT_RENAME = """
import os, signal, sys
from counterarg.core import io
from counterarg.cli import main
calls = []
def rename(a, b):
    calls.append(b)
    if len(calls) == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
    os.replace(a, b)
io._rename = rename
main(sys.argv[2:])
"""


@pytest.mark.slow
def test_a_kill_inside_export_force_never_loses_the_previous_export(tiny_encoder, tmp_path):
    """Export --force deleted the old folder before renaming the new one in; a
    kill there lost it, and a kill mid-write left .OUT.xxxx. Now a kill before the swap's last rename
    (old export moved aside, new one sealed but not yet in) is completed or rolled back by the next export,
    which leaves one whole folder and no leftover."""
    import os
    import subprocess
    import sys

    pytest.importorskip("sentence_transformers")
    from counterarg.core.io import read_manifest, recover_dir

    train(Config(encoder=tiny_encoder, epochs=1, max_length=32), tmp_path / "run", progress=False)
    ck, st = str(tmp_path / "run" / "checkpoint"), tmp_path / "st"
    assert main(["export", "--checkpoint", ck, "--out", str(st)]) == 0
    first = read_manifest(st)["files"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run(
        [sys.executable, "-c", KILL_AT_RENAME, "3", "export", "--checkpoint", ck, "--out", str(st), "--force"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == -9, p.stderr[-2000:]
    assert not st.exists() and (tmp_path / ".st.old").is_dir()  # the gap the kill hit
    assert recover_dir(st)  # what the next export does first: the sealed new folder goes in
    assert read_manifest(st)["files"]["README.md"] == first["README.md"]  # same checkpoint, same card
    assert main(["export", "--checkpoint", ck, "--out", str(st), "--force"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".st.lock", "run", "st"]
