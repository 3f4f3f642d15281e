"""The command line (counterarg.cli): train, evaluate, rank and embed as a user runs them, and their
errors (exit status 2 with a message naming the file or value)."""

from __future__ import annotations

import json
import re

import pytest
from conftest import documented_options, heavy_loaded_by, rows, training_loaded_by, walk_options

from counterarg.cli import main


@pytest.fixture(scope="module")
def trained(tiny_encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--out", str(out), "--quiet", "--epochs", "1", "--set", f"encoder={tiny_encoder}"]) == 0
    return out


@pytest.mark.slow
def test_evaluate_checkpoint_gives_the_runs_own_validation_row(trained, tmp_path, capsys):
    """The 1-epoch run's checkpoint, evaluated, reproduces every validation metric of its epoch row
    (both views), and prints the table."""
    js = tmp_path / "m.json"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(trained / "checkpoint"),
                "--split",
                "validation",
                "--json",
                str(js),
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    for task in ("sdoc", "sdoa", "sdc", "sda", "stc", "sta", "epc", "epa", "mean"):
        assert f"\n{task} " in out
    assert "\narguana " in out and "\nvalidation_unseen " in out  # the ArguAna view's table
    metrics = json.loads(js.read_text())
    row = rows(trained)[-1]
    want = {k: v for k, v in row.items() if k.startswith(("validation/", "validation_unseen/")) and "/acc@" in k}
    assert len(want) == 2 * 9 * 3  # 2 views x (8 tasks + mean) x acc@1,5,10
    assert {k: metrics[k] for k in want} == pytest.approx(want, abs=1e-9)
    view = {k: v for k, v in row.items() if "/arguana/" in k and k.startswith("validation")}
    assert sorted(view) == sorted(
        f"{s}/arguana/{m}"
        for s in ("validation", "validation_unseen")
        for m in ("ndcg@10", "ndcg@1", "mrr@10", "recall@100")
    )
    assert {k: metrics[k] for k in view} == pytest.approx(view, abs=1e-9)
    assert row["time/arguana_s"] >= 0 and "test/arguana/ndcg@10" in row  # the last epoch scores test too


def test_evaluate_zero_shot_is_the_mean_pooled_encoder_ranked_by_cosine(tiny_encoder, tmp_path, capsys):
    """--zero-shot equals a direct computation: transformers' BertModel, mean over the attention
    mask, cosine retrieval over the split's pools and, for the ArguAna view, over every text."""
    import torch
    from transformers import AutoTokenizer, BertModel

    from counterarg.data.corpus import TextTable, load_corpus
    from counterarg.evaluation.arguana import view_ranks
    from counterarg.evaluation.evaluate import evaluate_split
    from counterarg.retrieval.arguana import build_view, view_metrics
    from counterarg.retrieval.pools import split_pools

    js = tmp_path / "z.json"
    assert (
        main(
            [
                "evaluate",
                "--zero-shot",
                "--split",
                "test",
                "--quiet",
                "--set",
                f"encoder={tiny_encoder}",
                "--set",
                "pooling=mean",
                "--set",
                "max_length=64",
                "--json",
                str(js),
            ]
        )
        == 0
    )
    assert "zero-shot" in capsys.readouterr().out
    got = json.loads(js.read_text())
    corpus = load_corpus(None)
    table = TextTable.from_corpus(corpus)
    ids = table.splits["test"]
    model, tok = BertModel.from_pretrained(tiny_encoder).eval(), AutoTokenizer.from_pretrained(tiny_encoder)

    def mean_pooled(tids):
        enc = tok([table.texts[t] for t in tids], max_length=64, truncation=True, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state  # [Q, T, H]
        mask = enc["attention_mask"].unsqueeze(-1).float()  # [Q, T, 1]
        return (hidden * mask).sum(1) / mask.sum(1)  # [Q, H]

    want = evaluate_split(
        "test",
        split_pools(corpus, "test"),
        mean_pooled(ids.point),
        mean_pooled(ids.counter),
        mode="retrieval",
        metric="cosine",
    )
    # the ArguAna view: every text of the corpus, cosine
    view = build_view(corpus, table, "test")
    want.update(view_metrics("test", view, view_ranks(view, mean_pooled(view.docs), metric="cosine")))
    assert {k for k in got if "/arguana/" in k} == {
        f"{s}/arguana/{m}" for s in ("test", "test_unseen") for m in ("ndcg@10", "ndcg@1", "mrr@10", "recall@100")
    }
    assert set(got) == set(want)
    assert got == pytest.approx(want, abs=0.01)  # equal here; float noise elsewhere may swap a near-tie


def test_evaluate_errors(trained, tiny_encoder, tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(trained / "checkpoint"), "--set", "sim_dim=64", "--quiet"]) == 2
    assert "another model" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--quiet"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    # a corpus folder that holds only the training split
    from counterarg.data.demo import demo_corpus_path

    only_train = demo_corpus_path() / "02-extracted-arguments" / "training"
    assert (
        main(
            [
                "evaluate",
                "--zero-shot",
                "--corpus",
                str(only_train),
                "--split",
                "test",
                "--quiet",
                "--set",
                f"encoder={tiny_encoder}",
            ]
        )
        == 2
    )
    assert "no split 'test'" in capsys.readouterr().err


def test_rank_new_argument(trained, tmp_path, capsys):
    assert (
        main(["rank", "--checkpoint", str(trained / "checkpoint"), "--text", "Taxes on banks hurt growth", "--k", "3"])
        == 0
    )
    out = capsys.readouterr().out
    assert "best 3 of" in out and out.count("b-counter.txt") == 3
    cands = tmp_path / "c.txt"
    cands.write_text("first counter\n\nsecond counter\nthird\n")
    assert (
        main(
            ["rank", "--checkpoint", str(trained / "checkpoint"), "--text", "x", "--candidates", str(cands), "--k", "5"]
        )
        == 0
    )
    assert "best 3 of 3" in capsys.readouterr().out


# ---------------------------------------------------------------- named errors for bad rank/evaluate input
def test_rank_k_must_be_positive(trained, capsys):
    """--k 0 / --k -3 printed "best 0" / "best 69 of 72"; now a named error, exit 2."""
    for k in ("0", "-3"):
        assert main(["rank", "--checkpoint", str(trained / "checkpoint"), "--text", "x", "--k", k]) == 2
        assert f"--k must be >= 1, got {k}" in capsys.readouterr().err


def test_candidates_keep_their_file_line_numbers(trained, tmp_path, capsys):
    """Line numbers name the file's own lines, empty lines counted."""
    cands = tmp_path / "c.txt"
    cands.write_text("\n\nonly candidate\n")
    assert main(["rank", "--checkpoint", str(trained / "checkpoint"), "--text", "x", "--candidates", str(cands)]) == 0
    assert f"{cands}:3" in capsys.readouterr().out


@pytest.mark.parametrize(
    "kind, match", [("latin1", "not valid UTF-8"), ("folder", "is not a file"), ("missing", "not found")]
)
def test_bad_candidates_files_are_named(trained, tmp_path, capsys, kind, match):
    """--candidates in Latin-1 or a folder gave a traceback."""
    path = tmp_path / "c.txt"
    if kind == "latin1":
        path.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    elif kind == "folder":
        path.mkdir()
    assert main(["rank", "--checkpoint", str(trained / "checkpoint"), "--text", "x", "--candidates", str(path)]) == 2
    err = capsys.readouterr().err
    assert match in err and str(path) in err


def test_rank_text_file(trained, tmp_path, capsys, monkeypatch):
    """--text-file for long texts; a BOM is dropped; over the size limit is a named error."""
    import counterarg.cli as cli

    text = tmp_path / "arg.txt"
    text.write_bytes(b"\xef\xbb\xbfTaxes on banks hurt growth\n")
    assert main(["rank", "--checkpoint", str(trained / "checkpoint"), "--text-file", str(text), "--k", "2"]) == 0
    assert "best 2 of" in capsys.readouterr().out
    monkeypatch.setattr(cli, "MAX_TEXT_FILE_BYTES", 10)
    assert main(["rank", "--checkpoint", str(trained / "checkpoint"), "--text-file", str(text)]) == 2
    assert "over the limit of 10 bytes" in capsys.readouterr().err


def test_evaluate_json_at_a_folder_is_a_named_error(trained, tmp_path, capsys):
    """Evaluate --json at a folder."""
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(trained / "checkpoint"),
                "--split",
                "validation",
                "--json",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 2
    )
    assert "is a folder" in capsys.readouterr().err


# ---------------------------------------------------------------- rank: order, scores, cache
@pytest.mark.slow
@pytest.mark.parametrize("finetune,mode", [("none", "retrieval"), ("top:1", "retrieval"), ("all", "rerank")])
def test_rank_equals_a_direct_computation_and_caches_candidates(
    tiny_encoder, tmp_path, capsys, monkeypatch, finetune, mode
):
    import json as _json

    import torch

    from counterarg.config import Config
    from counterarg.model.biencoder import BiEncoder
    from counterarg.training.loop import train

    monkeypatch.setenv("COUNTERARG_CACHE", str(tmp_path / "cache"))
    cfg = Config(
        encoder=tiny_encoder,
        epochs=1,
        finetune=finetune,
        eval_mode=mode,
        encoder_lr=1e-3,
        max_length=32,
        rerank_k=3,
        eval_metric="l2",
    )  # the direct computation below is L2
    train(cfg, tmp_path / "run", progress=False)
    capsys.readouterr()  # the demo-corpus notice of training
    ck = tmp_path / "run" / "checkpoint"
    cands = [
        "banks pay more tax",
        "growth needs lower taxes",
        "schools need funding",
        "taxes fund schools",
        "a fifth candidate",
    ]
    f = tmp_path / "c.txt"
    f.write_text("\n".join(cands) + "\n")
    calls = []
    real = BiEncoder.embed
    monkeypatch.setattr(
        BiEncoder, "embed", lambda self, texts, **kw: calls.append(len(texts)) or real(self, texts, **kw)
    )
    args = [
        "rank",
        "--checkpoint",
        str(ck),
        "--text",
        "Taxes on banks hurt growth",
        "--candidates",
        str(f),
        "--k",
        "5",
        "--json",
        "--quiet",
    ]
    assert main(args) == 0
    first = _json.loads(capsys.readouterr().out)
    assert calls == [1, 5]  # the query, then the 5 candidates
    assert main(args) == 0
    second = _json.loads(capsys.readouterr().out)
    assert calls == [1, 5, 1], "the second rank against the same collection re-encoded it"
    assert second == first
    # the same order and scores, computed directly from the model
    model = BiEncoder.from_checkpoint(ck)
    with torch.no_grad():
        hq, sq = real(model, ["Taxes on banks hurt growth"])
        hc, sc = real(model, cands)
        d = torch.cdist(sq.double(), sc.double())[0]  # [5]
        if mode == "retrieval":
            want = sorted(range(5), key=lambda i: (float(d[i]), i))
            scores = [float(d[i]) for i in want]
        else:
            near = sorted(range(5), key=lambda i: (float(d[i]), i))
            top = near[:3]
            p = torch.softmax(model.heads.classify(sq.expand(3, -1), sc[top], hq.expand(3, -1), hc[top]), 1)[:, 1]
            order = sorted(range(3), key=lambda j: (-float(p[j]), j))
            want = [top[j] for j in order] + near[3:]
            scores = [float(p[j]) for j in order] + [None, None]
    assert [r["id"] for r in first["results"]] == want
    for r, s in zip(first["results"], scores):
        assert (r["score"] is None and s is None) or r["score"] == pytest.approx(s, abs=1e-5)
    assert [r["text"] for r in first["results"]] == [cands[i] for i in want]


@pytest.mark.slow
def test_cli_train_resume_and_errors(tiny_encoder, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "--out", str(out), "--quiet", "--set", f"encoder={tiny_encoder}", "--set", "schedule=fixed"]
    assert main(args + ["--epochs", "2"]) == 0
    assert "DEMO corpus" in capsys.readouterr().out
    assert len(rows(out)) == 2
    assert main(args + ["--epochs", "3"]) == 2  # refuses to overwrite a run
    assert "--resume" in capsys.readouterr().err
    assert main(args + ["--epochs", "3", "--resume"]) == 0
    assert [r["epoch"] for r in rows(out)] == [1, 2, 3]
    assert str(out.resolve()) in capsys.readouterr().out
    assert main(args + ["--set", "shedule=fixed"]) == 2
    assert "shedule" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "x"), "--corpus", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_train_with_a_rate_table(tiny_encoder, tmp_path, capsys):
    out = tmp_path / "table"
    assert (
        main(
            [
                "train",
                "--out",
                str(out),
                "--quiet",
                "--epochs",
                "4",
                "--set",
                f"encoder={tiny_encoder}",
                "--set",
                "schedule=table",
                "--set",
                "rate_table=0.8,0.6,0.4",
            ]
        )
        == 0
    )
    assert [r["mining/rate"] for r in rows(out)] == pytest.approx([0.8, 0.6, 0.4, 0.4])
    assert (
        main(["train", "--out", str(tmp_path / "bad"), "--set", "schedule=table", "--set", "rate_table=0.8,1.5"]) == 2
    )
    assert "rate_table" in capsys.readouterr().err


@pytest.mark.slow
def test_train_prints_corpus_counts(tiny_encoder, tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--epochs", "1", "--set", f"encoder={tiny_encoder}"]) == 0
    out = capsys.readouterr().out
    assert "points" in out and "unpaired" in out and "training" in out


@pytest.mark.slow
def test_rank_against_a_frozen_checkpoint_reads_the_cached_features(tiny_encoder, tmp_path, capsys, monkeypatch):
    """The first `rank` against a frozen-encoder checkpoint re-encoded every counter of
    the split although training had cached their pooled features; it now runs only the heads over
    the cache (the encoder sees the query alone) and ranks exactly as encoding them does."""
    import counterarg.model.biencoder as biencoder_mod
    import counterarg.nn.encoder as model_mod
    import counterarg.serving.candidates as candidates_mod
    from counterarg.config import Config
    from counterarg.training.loop import train

    monkeypatch.setenv("COUNTERARG_CACHE", str(tmp_path / "cache"))
    cfg = Config(encoder=tiny_encoder, epochs=1, max_length=32, finetune="none")  # eval_mode=fused (default)
    train(cfg, tmp_path / "run", progress=False)
    capsys.readouterr()
    encoded = []
    real = model_mod.encode_texts
    monkeypatch.setattr(
        biencoder_mod, "encode_texts", lambda m, t, texts, **kw: encoded.append(len(texts)) or real(m, t, texts, **kw)
    )
    args = [
        "rank",
        "--checkpoint",
        str(tmp_path / "run" / "best"),
        "--text",
        "Taxes on banks hurt growth",
        "--split",
        "test",
        "--k",
        "1000",
        "--quiet",
    ]
    assert main(args + ["--json"]) == 0
    fast = json.loads(capsys.readouterr().out)
    assert encoded == [1], f"the encoder ran over {encoded} texts; only the query should be encoded"
    assert main(args) == 0
    assert "candidates from the feature cache" in capsys.readouterr().out
    # before: the same checkpoint with no feature cache to read encodes every candidate
    monkeypatch.setattr(candidates_mod, "cached_pooled", lambda *a: None)
    encoded.clear()
    assert main(args + ["--json"]) == 0
    slow = json.loads(capsys.readouterr().out)
    assert encoded == [1, fast["candidates"]] and fast["candidates"] > 10
    assert [r["id"] for r in fast["results"]] == [r["id"] for r in slow["results"]]
    assert [r["score"] for r in fast["results"]] == pytest.approx([r["score"] for r in slow["results"]], abs=1e-5)


# ---------------------------------------------------------------- machine fields, named errors, full disk
@pytest.mark.slow
def test_evaluate_and_rank_use_this_machines_cache_not_the_checkpoints(tiny_encoder, tmp_path, capsys, monkeypatch):
    """A checkpoint trained with --set cache_dir=/their/cache wrote evaluate's and rank's
    caches there (or failed where it does not exist); they go to $COUNTERARG_CACHE now."""
    import shutil

    theirs = tmp_path / "their-node" / "cache"
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--out",
                str(run),
                "--quiet",
                "--epochs",
                "1",
                "--set",
                f"encoder={tiny_encoder}",
                "--set",
                f"cache_dir={theirs}",
                "--set",
                "max_length=32",
            ]
        )
        == 0
    )
    shutil.rmtree(tmp_path / "their-node")
    monkeypatch.setenv("COUNTERARG_CACHE", str(tmp_path / "mine"))
    cands = tmp_path / "c.txt"  # a file of candidates: rank caches their embeddings
    cands.write_text("first counter\nsecond counter\n")
    assert main(["evaluate", "--checkpoint", str(run / "checkpoint"), "--split", "validation", "--quiet"]) == 0
    assert main(["rank", "--checkpoint", str(run / "checkpoint"), "--text", "x", "--quiet"]) == 0  # the corpus
    assert (
        main(["rank", "--checkpoint", str(run / "checkpoint"), "--text", "x", "--quiet", "--candidates", str(cands)])
        == 0
    )
    assert not (tmp_path / "their-node").exists()
    assert {"features", "rank"} <= {p.name for p in (tmp_path / "mine").iterdir()}
    other = tmp_path / "chosen"
    assert (
        main(
            [
                "rank",
                "--checkpoint",
                str(run / "checkpoint"),
                "--text",
                "x",
                "--quiet",
                "--candidates",
                str(cands),
                "--set",
                f"cache_dir={other}",
            ]
        )
        == 0
    )  # --set wins
    assert (other / "rank").is_dir()


def test_rank_a_npy_of_a_default_checkpoint(trained, tmp_path, capsys):
    """With sim_dim=0 (the encoder width) rank --candidates X.npy said "expected [2, 0]";
    the width is resolved, and a fused checkpoint is told to score with --set eval_mode=retrieval."""
    texts = tmp_path / "t.txt"
    texts.write_text("first counter\nsecond counter\n")
    npy = tmp_path / "c.npy"
    ck = str(trained / "checkpoint")
    assert main(["embed", "--checkpoint", ck, "--input", str(texts), "--out", str(npy), "--quiet"]) == 0
    base = ["rank", "--checkpoint", ck, "--text", "first", "--candidates", str(npy), "--candidate-texts", str(texts)]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "expected" not in err and "eval_mode=fused" in err and "--set eval_mode=retrieval" in err
    assert main(base + ["--set", "eval_mode=retrieval", "--json"]) == 0
    from_npy = json.loads(capsys.readouterr().out)["results"]
    assert (
        main(
            [
                "rank",
                "--checkpoint",
                ck,
                "--text",
                "first",
                "--candidates",
                str(texts),
                "--set",
                "eval_mode=retrieval",
                "--json",
                "--quiet",
            ]
        )
        == 0
    )
    from_texts = json.loads(capsys.readouterr().out)["results"]
    assert [r["text"] for r in from_npy] == [r["text"] for r in from_texts]
    assert [r["score"] for r in from_npy] == pytest.approx([r["score"] for r in from_texts], abs=1e-5)


@pytest.mark.parametrize(
    "case",
    [
        "config_dir",
        "config_binary",
        "seed",
        "embed_out_folder",
        "bench_n",
        "rank_model_field",
        "out_under_a_file",
        "cache_under_a_file",
    ],
)
def test_bad_input_is_a_named_error(trained, tmp_path, capsys, case):
    """Each of these gave a traceback; now exit 2 with one line naming the file or value."""
    ck = str(trained / "checkpoint")
    texts = tmp_path / "t.txt"
    texts.write_text("a text\n")
    binary = tmp_path / "c.json"
    binary.write_bytes(b"\x80\x81\x00\xff" * 8)
    (tmp_path / "D.npy").mkdir()
    argv, named = {
        "config_dir": (["train", "--out", str(tmp_path / "r"), "--config", str(tmp_path)], f"{tmp_path} is a folder"),
        "config_binary": (["train", "--out", str(tmp_path / "r"), "--config", str(binary)], f"{binary} is not UTF-8"),
        "seed": (["train", "--out", str(tmp_path / "r"), "--set", "seed=-1"], "seed must lie in [0, 2**32 - 1]"),
        "embed_out_folder": (
            ["embed", "--checkpoint", ck, "--input", str(texts), "--out", str(tmp_path / "D.npy"), "--force"],
            f"--out {tmp_path / 'D.npy'} is a folder",
        ),
        "bench_n": (["bench", "mining", "--n", "-5"], "argument --n: must be >= 1, got -5"),
        "rank_model_field": (
            ["rank", "--checkpoint", ck, "--text", "x", "--set", "max_length=64"],
            "--set max_length: the checkpoint",
        ),
        "out_under_a_file": (["train", "--out", str(texts / "r"), "--epochs", "1"], f"{texts / 'r'}: Not a directory"),
        "cache_under_a_file": (
            ["rank", "--checkpoint", ck, "--text", "x", "--quiet", "--set", f"cache_dir={texts}"],
            f"{texts / 'rank'}: Not a directory",
        ),
    }[case]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and named in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_full_disk_is_named_by_every_command_and_keeps_what_was_there(
    trained, tiny_encoder, tmp_path, capsys, monkeypatch
):
    """The hook form of a 30 MB tmpfs that fills: train, evaluate, embed and export name
    the full disk in one line (exit 1, no traceback) and the previous checkpoint, best/, export and
    files stay as they were; rank still prints its ranking without its cache."""
    import errno
    import shutil

    pytest.importorskip("sentence_transformers")
    from counterarg.core import io
    from counterarg.model.checkpoint import read_checkpoint

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    texts = tmp_path / "t.txt"
    texts.write_text("a text\nanother text\n")
    ck = str(run / "checkpoint")
    assert main(["export", "--checkpoint", ck, "--out", str(tmp_path / "st")]) == 0
    assert main(["embed", "--checkpoint", ck, "--input", str(texts), "--out", str(tmp_path / "e.npy"), "--quiet"]) == 0
    (tmp_path / "m.json").write_text("{}")
    kept = {p: io.sha256_file(p) for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")}
    capsys.readouterr()

    def full_at(names):
        def fsync(path):
            if names is None or path.name in names:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))

        return fsync

    commands = [
        (
            ["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet", "--set", f"encoder={tiny_encoder}"],
            {"state.pt"},
            "The run folder",
        ),  # the disk fills when epoch 2's state is written
        (
            ["evaluate", "--checkpoint", ck, "--split", "validation", "--json", str(tmp_path / "m.json"), "--quiet"],
            None,
            "m.json",
        ),
        (
            [
                "embed",
                "--checkpoint",
                ck,
                "--input",
                str(texts),
                "--out",
                str(tmp_path / "e.npy"),
                "--force",
                "--quiet",
            ],
            None,
            "e.npy",
        ),
        (["export", "--checkpoint", ck, "--out", str(tmp_path / "st"), "--force"], None, "st"),
    ]
    for argv, names, what in commands:
        monkeypatch.setattr(io, "_fsync_file", full_at(names))
        assert main(argv) == 1, argv[0]
        err = capsys.readouterr().err  # export's library progress bars aside: one line
        last = err.strip().splitlines()[-1]
        assert last.startswith("counterarg: error: disk full: could not write") and what in last, err
        assert err.count("counterarg: error") == 1 and "kept" in last and "Traceback" not in err
    assert main(["rank", "--checkpoint", ck, "--text", "a text", "--candidates", str(texts), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "candidate cache not written (disk full" in out and "best 2 of 2" in out
    monkeypatch.undo()
    now = {p: io.sha256_file(p) for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")}
    assert json.loads((run / "config.json").read_text())["epochs"] == 2  # the resumed run's config (written first)
    kept.pop(run / "config.json"), now.pop(run / "config.json")
    kept.pop(run / "machine.jsonl"), now.pop(run / "machine.jsonl")  # the resumed start's row, appended
    machine_rows = (run / "machine.jsonl").read_text().splitlines()
    assert machine_rows[:-1] == (trained / "machine.jsonl").read_text().splitlines()
    assert json.loads(machine_rows[-1])["from_epoch"] == 2
    assert now == kept  # nothing else written, nothing lost, no leftover
    assert read_checkpoint(run / "checkpoint")["epoch"] == 1 and read_checkpoint(run / "best")["epoch"] == 1


@pytest.mark.slow
def test_commands_that_use_a_model_import_no_training(trained, tmp_path):
    """evaluate --checkpoint, rank, embed and export load biencoder.BiEncoder only: in a fresh
    interpreter none of them imports the trainer, the training loop, mining or batches (loss.py is
    read by Config validation for the loss names)."""
    ck = str(trained / "checkpoint")
    texts = tmp_path / "t.txt"
    texts.write_text("one text\nanother text\n")
    commands = [
        ["evaluate", "--checkpoint", ck, "--split", "validation", "--quiet"],
        ["rank", "--checkpoint", ck, "--text", "a new argument", "--split", "test", "--quiet"],
        ["embed", "--checkpoint", ck, "--input", str(texts), "--out", str(tmp_path / "e.npy"), "--quiet"],
        ["export", "--checkpoint", ck, "--out", str(tmp_path / "st")],
    ]
    printed, loaded = training_loaded_by(
        f"from counterarg.cli import main; print('RESULT', [main(c) for c in {commands!r}])"
    )
    assert (printed.splitlines()[-1], loaded) == ("RESULT [0, 0, 0, 0]", []), printed[-2000:]


# ----------------------------------------------------------------------------- --help: fast, complete, documented
def _subparsers():
    import argparse

    from counterarg.cli import build_parser

    ap = build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    return {name: p for name, p in sub.choices.items() if name != "bench"}


def test_help_imports_no_torch_ray_or_pandas():
    """``counterarg --help`` took 5.5 s, nearly all of it importing torch (Config validation read the
    loss, head and scorer registries from torch modules) and the modules the error handler named. Every
    --help, the benchmarks' included, now imports none of the heavy libraries (a fresh interpreter each)."""
    from counterarg.cli import BENCHES

    commands = [[], *([name] for name in _subparsers()), *(["bench", name] for name in BENCHES)]
    loaded = {
        " ".join(c) or "(top)": heavy_loaded_by(f"from counterarg.cli import main; main({[*c, '--help']!r})")
        for c in commands
    }
    assert not {c: libs for c, libs in loaded.items() if libs}, loaded


def test_rank_and_embed_import_torch_and_no_other_heavy_library(trained, tmp_path):
    """The first ``rank`` took about 10 s of CPU, 0.9 s of it ranking: importing transformers 5.x costs
    about 5 s before a BertModel exists. ``rank`` and ``embed`` run their texts through
    nn/plain_bert.py's pass (the same computation) and load torch and none of the other heavy
    libraries, pyarrow included (the CLI asks every path whether it is remote)."""
    texts = tmp_path / "texts.txt"
    texts.write_text("Taxes on banks hurt growth\nschools need funding\n")
    ck = str(trained / "checkpoint")
    for command in (
        ["rank", "--checkpoint", ck, "--text", "Taxes on banks hurt growth", "--quiet"],
        ["embed", "--checkpoint", ck, "--input", str(texts), "--out", str(tmp_path / "e.npy"), "--quiet"],
    ):
        code = f"from counterarg.cli import main; assert main({command!r}) == 0"
        assert heavy_loaded_by(code) == ["torch"], command[0]


#: options named like a Config field that are not a Config override: the device this command runs on
NOT_CONFIG = {("rank", "--device"), ("embed", "--device")}


def test_every_option_has_help_shows_its_default_and_the_docs_table_agrees():
    """Every option of every command has help; one with a value by default shows it, one that maps to a
    Config field shows Config's default; docs/configuration.md lists the same options with the same
    defaults; --config names every preset (config.PRESETS)."""
    from pathlib import Path

    from counterarg.config import FIELD_NAMES, PRESETS, Config

    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text(encoding="utf-8")
    defaults = Config()
    for name, parser in _subparsers().items():
        options = walk_options(parser)
        assert options, name
        documented = documented_options(doc, f"counterarg {name}")
        assert documented == {flags: shown or "none" for flags, _, shown in options}, name
        for flags, action, shown in options:
            assert action.help, f"counterarg {name} {flags} has no help"
            if action.default is not None and action.default is not False:
                assert shown is not None and str(action.default) in shown, (name, flags, shown)
            if action.dest in FIELD_NAMES and (name, flags) not in NOT_CONFIG:
                value = getattr(defaults, action.dest)
                assert shown, (name, flags)
                if value is not None:
                    assert re.search(rf"(?<![\w.]){re.escape(str(value))}(?![\w.])", shown), (name, flags, shown, value)
    config_help = _subparsers()["train"]._option_string_actions["--config"].help
    assert all(f"{preset} = " in config_help for preset in PRESETS) and "JSON file" in config_help


# ----------------------------------------------------------------------------- edited checkpoints
def _edited_copy(trained, tmp_path, edit):
    """A copy of the trained run's checkpoint whose state.pt ``edit`` changed, its manifest sealed again
    (what an edited or foreign checkpoint looks like to the reader: the sha256 check passes)."""
    import shutil

    import torch

    from counterarg.core.io import write_manifest

    ck = tmp_path / "edited"
    shutil.copytree(trained / "checkpoint", ck)
    state = torch.load(ck / "state.pt", weights_only=True)
    edit(state)
    torch.save(state, ck / "state.pt")
    epoch = json.loads((ck / "manifest.json").read_text())["epoch"]
    (ck / "manifest.json").unlink()
    write_manifest(ck, epoch=epoch)
    return ck


@pytest.mark.parametrize("command", ["evaluate", "rank"])
def test_a_state_whose_pooling_differs_from_its_sealed_config_is_refused(trained, tmp_path, capsys, command):
    """evaluate and rank used a state.pt whose model config said pooling=cls beside a sealed config.json
    saying mean (resume caught it): both now apply the resume check, exit 2 naming both files."""
    ck = _edited_copy(trained, tmp_path, lambda s: s["model"]["config"].update(pooling="cls"))
    args = ["--split", "validation", "--quiet"] + (["--text", "an argument"] if command == "rank" else [])
    assert main([command, "--checkpoint", str(ck), *args]) == 2
    err = capsys.readouterr().err
    assert f"{ck / 'state.pt'} does not match the config sealed beside it in {ck / 'config.json'}" in err
    assert "pooling: state.pt 'cls' vs config.json 'mean'" in err and "Traceback" not in err


@pytest.mark.parametrize("epoch", ["two", -1, 1.5, True])
def test_a_state_whose_epoch_is_not_a_count_is_a_named_error(trained, tmp_path, capsys, epoch):
    ck = _edited_copy(trained, tmp_path, lambda s: s.update(epoch=epoch))
    assert main(["evaluate", "--checkpoint", str(ck), "--split", "validation", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{ck / 'state.pt'} is not a checkpoint counterarg wrote: its epoch is {epoch!r}" in err, err
    assert "Traceback" not in err
