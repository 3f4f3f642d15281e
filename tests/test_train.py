import json
import os

import numpy as np
import pytest
import torch

from counterarg.cli import main
from counterarg.config import REFERENCE_METHOD, Config
from counterarg.train import TrainingError, train


def rows(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def strip_times(rs):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rs]


@pytest.fixture
def cfg(tiny_encoder):
    return Config(encoder=tiny_encoder, epochs=3, schedule="decay", rate_step=0.3, eval_mode="rerank")


@pytest.mark.parametrize("extra", [{}, {"finetune": "top:1", "encoder_lr": 1e-3, "length_buckets": 4}],
                         ids=["frozen", "top1-length-buckets"])
def test_resume_equals_uninterrupted(cfg, tmp_path, extra):
    cfg = cfg.replace(**extra)
    straight = train(cfg, tmp_path / "a", progress=False)
    train(cfg.replace(epochs=2), tmp_path / "b", progress=False)
    reported = []
    resumed = train(cfg, tmp_path / "b", resume_from=tmp_path / "b" / "checkpoint", progress=False,
                    report=lambda row, ck: reported.append(row["epoch"]))
    assert reported == [3], "a resume trains only the epochs after its checkpoint"
    assert len(rows(tmp_path / "b")) == 3 and len(resumed) == 3
    assert strip_times(rows(tmp_path / "b")) == strip_times(rows(tmp_path / "a")) == strip_times(straight)
    assert "validation/mean/acc@1" in straight[0] and "test/sdoc/acc@1" in straight[0]
    assert [r["mining/rate"] for r in straight] == pytest.approx([0.8, 0.5, 0.2])
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert Config.from_dict(saved) == cfg


def test_best_epoch_ranks_are_kept_in_the_checkpoint_and_survive_resume(cfg, tmp_path):
    from counterarg.selection import best_row
    from counterarg.train import read_best_ranks

    straight = train(cfg, tmp_path / "a", progress=False)
    best = best_row(straight, cfg.select_metric)
    kept = read_best_ranks(tmp_path / "a" / "checkpoint")
    assert int(kept["epoch"]) == best["epoch"]
    for split in ("validation", "test"):
        for task in ("sdoc", "epa"):
            r = kept[f"{split}/{task}"]
            assert float((r <= 1).mean()) == pytest.approx(best[f"{split}/{task}/acc@1"])
            if f"{split}_unseen/{task}/acc@1" in best:  # the demo corpus's texts are all unseen
                unseen = kept[f"{split}/unseen"]
                assert float((r[unseen] <= 1).mean()) == pytest.approx(best[f"{split}_unseen/{task}/acc@1"])
    train(cfg.replace(epochs=1), tmp_path / "b", progress=False)
    train(cfg, tmp_path / "b", resume_from=tmp_path / "b" / "checkpoint", progress=False)
    again = read_best_ranks(tmp_path / "b" / "checkpoint")
    assert sorted(again) == sorted(kept)
    assert all(np.array_equal(again[k], kept[k]) for k in kept)


def test_training_learns_on_demo(cfg, tmp_path):
    ref = {k: v for k, v in REFERENCE_METHOD.items() if k not in ("schedule", "rate", "epochs", "lr")}
    h = train(cfg.replace(**ref, epochs=4, lr=3e-3), tmp_path / "r", progress=False)
    assert h[-1]["train/loss"] < h[0]["train/loss"]
    assert h[-1]["train/ce_pos"] < h[0]["train/ce_pos"]


def test_default_recipe_learns_and_reports_telemetry(cfg, tmp_path):
    h = train(cfg.replace(epochs=3, lr=3e-3, batch_size=16, num_negatives=2, schedule="fixed", rate=0.0), tmp_path / "d",
              progress=False)
    assert h[-1]["train/infonce"] < h[0]["train/infonce"]
    shares = ("same_debate_same_side", "same_debate_other_side", "same_theme_other_debate", "other_theme")
    assert sum(h[0][f"mining/share_{k}"] for k in shares) == pytest.approx(1.0)
    assert h[0]["mining/share_points"] + h[0]["mining/share_counters"] == pytest.approx(1.0)
    assert h[0]["mining/share_hard"] == 1.0  # rate 0: every negative mined


def test_nan_loss_names_epoch_and_step(cfg, tmp_path):
    with pytest.raises(TrainingError, match=r"epoch 1, step \d+"):
        train(cfg.replace(lr=1e30, grad_clip=0.0, optimizer="adam", margin=1e30, loss="combined", head="linear",
                          sim_dim=128), tmp_path / "n", progress=False)


def test_resume_with_other_model_is_refused(cfg, tmp_path):
    train(cfg.replace(epochs=1), tmp_path / "a", progress=False)
    with pytest.raises(TrainingError, match="different config.*sim_dim"):
        train(cfg.replace(sim_dim=16), tmp_path / "a", resume_from=tmp_path / "a" / "checkpoint", progress=False)


@pytest.mark.parametrize("finetune", ["top:1", "all"])
def test_partial_and_full_finetuning_run(cfg, tmp_path, finetune):
    h = train(cfg.replace(epochs=1, finetune=finetune, encoder_lr=1e-3), tmp_path / finetune.replace(":", ""),
              progress=False)
    assert np.isfinite(h[0]["train/loss"])
    state = torch.load(tmp_path / finetune.replace(":", "") / "checkpoint" / "state.pt", weights_only=True)
    assert state["encoder"], "trained encoder weights are checkpointed"


@pytest.mark.parametrize("finetune", ["none", "top:1", "all"])
def test_finetuning_changes_exactly_the_trainable_weights(cfg, finetune):
    from counterarg.train import Run

    run = Run(cfg.replace(finetune=finetune, encoder_lr=1e-2, lr=1e-2), progress=False)
    base = run.features._base[0] if getattr(run.features, "_base", None) else None
    trainable = {id(p) for p in run.features.trainable.parameters()}
    before = {n: p.detach().clone() for n, p in (base.named_parameters() if base is not None else [])}
    heads_before = {n: p.detach().clone() for n, p in run.heads.named_parameters()}
    run.train_epoch(0)
    assert all(not torch.equal(p, heads_before[n]) for n, p in run.heads.named_parameters()), "heads must train"
    if base is None:  # finetune=none: only the heads exist
        return
    changed = {n for n, p in base.named_parameters() if not torch.equal(p, before[n])}
    frozen = {n for n, p in base.named_parameters() if id(p) not in trainable}
    assert not (changed & frozen), f"frozen weights changed: {sorted(changed & frozen)[:3]}"
    if finetune == "top:1":
        assert frozen and any(".layer.1." in n for n in changed) and not any(".layer.0." in n for n in changed)
    else:
        assert any(".layer.0." in n for n in changed) and any("embeddings" in n for n in changed)


def test_cached_hidden_states_plus_top_layers_equal_full_encoder(tiny_encoder):
    from counterarg.model import encode_texts, load_encoder, pool, run_layers

    model, tok = load_encoder(tiny_encoder)
    texts = ["a short one", "a much longer text about taxes and the rich " * 5, "middle length text here"]
    full = encode_texts(model, tok, texts, pooling="mean", max_length=64, batch_size=2, device=torch.device("cpu"))
    states, lengths = encode_texts(model, tok, texts, pooling="mean", max_length=64, batch_size=2,
                                   device=torch.device("cpu"), upto_layer=1)
    t = int(lengths.max())
    mask = (torch.arange(t)[None] < torch.as_tensor(lengths)[:, None]).long()
    with torch.no_grad():
        h = run_layers(model, model.encoder.layer[1:], torch.from_numpy(states[:, :t].astype(np.float32)), mask)
        top = pool(h, mask, "mean")
    np.testing.assert_allclose(top.numpy(), full, atol=2e-2)  # float16 cache


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
def test_index_backends_give_identical_runs(cfg, tmp_path, monkeypatch):
    """Mining is exact whatever the backend, so whole runs agree; the sharded trees share 2 actors."""
    import ray

    import counterarg.index as index_mod

    made = []
    real = index_mod.make_index_pair
    monkeypatch.setattr(index_mod, "make_index_pair",
                        lambda backend, *a, **kw: made.append(r := real(backend, *a, **kw)) or r)
    base = cfg.replace(epochs=2, schedule="fixed", rate=0.3)
    ref = strip_times(train(base, tmp_path / "exact", progress=False))
    try:
        for backend in ("balltree", "sharded-balltree"):
            got = strip_times(train(base.replace(index=backend, shards=2), tmp_path / backend, progress=False))
            assert got == ref, backend
        kinds = [type(pair[0]).__name__ for pair in made]  # training's pair first in each run
        assert "BallTreeIndex" in kinds and "ShardedBallTree" in kinds, kinds  # the backends were really used
    finally:
        if ray.is_initialized():
            ray.shutdown()


def test_train_prints_corpus_counts(tiny_encoder, tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--epochs", "1", "--set", f"encoder={tiny_encoder}"]) == 0
    out = capsys.readouterr().out
    assert "points" in out and "unpaired" in out and "training" in out


def test_feature_cache_key_follows_encoder_content_not_location(tiny_encoder, tmp_path):
    """A copied or reinstalled encoder (new folder, new file times) reuses the cache; new weights
    of the same size saved in place do not."""
    import os
    import shutil

    from counterarg.model import encoder_fingerprint

    copy = tmp_path / "copy"
    shutil.copytree(tiny_encoder, copy)
    for f in copy.iterdir():
        os.utime(f, (1_000_000_000, 1_000_000_000))
    assert encoder_fingerprint(str(copy)) == encoder_fingerprint(tiny_encoder)
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte changed
    weights.write_bytes(bytes(data))
    assert encoder_fingerprint(str(copy)) != encoder_fingerprint(tiny_encoder)
    assert encoder_fingerprint("some-org/not-local") != encoder_fingerprint("other-org/not-local")


# ---------------------------------------------------------------- checkpoints: safe, sealed, recoverable
class _Planted:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_planted_pickle_checkpoint_is_refused_not_run(tiny_encoder, tmp_path, capsys):
    """Finding 1: a state.pt whose unpickling would run a command is refused with a named error."""
    marker = tmp_path / "ran"
    folder = tmp_path / "evil"
    folder.mkdir()
    torch.save({"epoch": 1, "config": {}, "heads": {}, "history": [], "x": _Planted(marker)}, folder / "state.pt")
    assert main(["rank", "--checkpoint", str(folder), "--text", "anything"]) == 2
    err = capsys.readouterr().err
    assert "refusing to load" in err and "state.pt" in err
    assert not marker.exists()
    assert main(["evaluate", "--checkpoint", str(folder), "--quiet"]) == 2
    assert not marker.exists()


def test_checkpoint_holds_tensors_and_plain_data_only(cfg, tmp_path):
    train(cfg.replace(epochs=1), tmp_path / "r", progress=False)
    state = torch.load(tmp_path / "r" / "checkpoint" / "state.pt", weights_only=True)  # no allowlist needed
    assert state["epoch"] == 1 and isinstance(state["history"][0]["mining/hard"], int)


def test_cut_short_and_bit_flipped_checkpoints_are_named(cfg, tmp_path, capsys):
    """Finding 8: truncated/garbage checkpoints and bit flips give a named error with file and last epoch."""
    from counterarg.train import CheckpointError, read_checkpoint

    run = tmp_path / "r"
    train(cfg.replace(epochs=2), run, progress=False)
    state = run / "checkpoint" / "state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0x01
    state.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"state\.pt.*sha256.*epoch 2.*last epoch recorded .* is 2"):
        read_checkpoint(run / "checkpoint")
    args = ["train", "--out", str(run), "--quiet", "--resume", "--epochs", "3", "--set", f"encoder={cfg.encoder}"]
    assert main(args + ["--set", "schedule=decay", "--set", "rate_step=0.3", "--set", "eval_mode=rerank"]) == 2
    assert "sha256" in capsys.readouterr().err
    assert len(rows(run)) == 2  # nothing already written is lost
    (run / "checkpoint" / "manifest.json").unlink()  # without a manifest: cut short / garbage
    state.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*state\.pt.*last epoch recorded .* is 2"):
        read_checkpoint(run / "checkpoint")
    state.write_bytes(b"garbage, not a checkpoint at all")
    with pytest.raises(CheckpointError, match="state.pt"):
        read_checkpoint(run / "checkpoint")


def test_resume_after_a_kill_between_the_swap_renames(cfg, tmp_path, capsys):
    """Finding 2 end to end: checkpoint/ gone, .checkpoint.old (epoch 2) and a sealed
    .checkpoint.XXXX (epoch 3) left; --resume completes the swap and keeps every row."""
    import shutil

    args = ["train", "--quiet", "--set", f"encoder={cfg.encoder}", "--set", "schedule=decay", "--set",
            "rate_step=0.3", "--set", "eval_mode=rerank"]
    assert main(args + ["--out", str(tmp_path / "a"), "--epochs", "4"]) == 0
    assert main(args + ["--out", str(tmp_path / "c"), "--epochs", "3"]) == 0
    assert main(args + ["--out", str(tmp_path / "b"), "--epochs", "2"]) == 0
    b = tmp_path / "b"
    os.replace(b / "checkpoint", b / ".checkpoint.old")  # the first rename happened ...
    shutil.copytree(tmp_path / "c" / "checkpoint", b / ".checkpoint.x7q2m0ab")  # ... the second did not
    capsys.readouterr()
    assert main(args + ["--out", str(b), "--epochs", "4", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "completed the swap" in out and "starting fresh" not in out
    assert strip_times(rows(b)) == strip_times(rows(tmp_path / "a"))
    assert sorted(p.name for p in b.iterdir() if p.name != ".lock") == ["best", "checkpoint", "config.json",
                                                                         "metrics.jsonl"]


def test_second_train_into_a_locked_run_folder_fails_at_once(cfg, tmp_path, capsys):
    """Finding 4: a second writer of the same --out gets a named error, exit 2, nothing written."""
    from counterarg.io import folder_lock

    out = tmp_path / "r"
    with folder_lock(out):
        assert main(["train", "--out", str(out), "--quiet", "--epochs", "1", "--set", f"encoder={cfg.encoder}"]) == 2
    assert "in use by another process" in capsys.readouterr().err
    assert not (out / "metrics.jsonl").exists()


def test_resume_with_fewer_epochs_leaves_config_alone(cfg, tmp_path):
    """Finding 9: --resume --epochs 2 on a 3-epoch run does not rewrite config.json or metrics."""
    run = tmp_path / "r"
    train(cfg, run, progress=False)
    before = (run / "config.json").read_text(), (run / "metrics.jsonl").read_text()
    with pytest.raises(TrainingError, match="already holds 3 epochs"):
        train(cfg.replace(epochs=2), run, resume_latest=True, progress=False)
    assert ((run / "config.json").read_text(), (run / "metrics.jsonl").read_text()) == before


def test_checkpoint_of_the_previous_format_still_loads(tmp_path):
    """Safe loading allows exactly what the earlier format stored beside tensors: numpy arrays
    (the RNG state) and numpy scalars (metric values)."""
    from counterarg.train import _numpy_state_in, read_checkpoint

    state = {"epoch": 1, "config": {}, "heads": {}, "rng": {"numpy": np.random.get_state()},
             "history": [{"epoch": 1, "train/loss": np.float64(0.5), "mining/hard": np.int64(3)}]}
    torch.save(state, tmp_path / "state.pt")
    back = read_checkpoint(tmp_path)
    assert back["history"][0]["train/loss"] == 0.5 and back["history"][0]["mining/hard"] == 3
    np.random.set_state(_numpy_state_in(back["rng"]["numpy"]))


def test_resume_without_a_checkpoint_keeps_recorded_rows(cfg, tmp_path):
    """--resume where rows exist but no checkpoint (nor an interrupted swap) refuses to start fresh,
    which would empty metrics.jsonl."""
    import shutil

    run = tmp_path / "r"
    train(cfg.replace(epochs=1), run, progress=False)
    shutil.rmtree(run / "checkpoint")
    before = (run / "metrics.jsonl").read_text()
    with pytest.raises(TrainingError, match="holds 1 epoch row.*no checkpoint"):
        train(cfg, run, resume_latest=True, progress=False)
    assert (run / "metrics.jsonl").read_text() == before


def test_patience_stops_and_best_holds_the_best_epoch(cfg, tmp_path, monkeypatch):
    from counterarg import train as train_mod
    from counterarg.train import read_checkpoint

    script = iter([0.1, 0.3, 0.2, 0.25, 0.9, 0.9])  # best at epoch 2; epochs 3 and 4 do not beat it
    monkeypatch.setattr(train_mod.Run, "evaluate", lambda self, epoch: {cfg.select_metric: next(script)})
    h = train(cfg.replace(epochs=6, patience=2), tmp_path / "p", progress=False)
    assert [r["epoch"] for r in h] == [1, 2, 3, 4]
    assert [r["select/best_epoch"] for r in h] == [1, 2, 2, 2]
    assert read_checkpoint(tmp_path / "p" / "best")["epoch"] == 2
    assert read_checkpoint(tmp_path / "p" / "checkpoint")["epoch"] == 4
    # resuming with more patience goes on from epoch 5 and keeps the best
    script2 = iter([0.35, 0.1])
    monkeypatch.setattr(train_mod.Run, "evaluate", lambda self, epoch: {cfg.select_metric: next(script2)})
    h2 = train(cfg.replace(epochs=6, patience=3), tmp_path / "p", resume_from=tmp_path / "p" / "checkpoint",
               progress=False)
    assert [r["epoch"] for r in h2] == [1, 2, 3, 4, 5, 6] and h2[-1]["select/best_epoch"] == 5
    assert read_checkpoint(tmp_path / "p" / "best")["epoch"] == 5


def test_patience_needs_the_selection_metric(cfg, tmp_path, monkeypatch):
    from counterarg import train as train_mod

    monkeypatch.setattr(train_mod.Run, "evaluate", lambda self, epoch: {})
    with pytest.raises(TrainingError, match="select"):
        train(cfg.replace(epochs=2, patience=1, select_metric="validation_unseen/mean/acc@1"), tmp_path / "q",
              progress=False)


def test_fused_weight_is_picked_on_validation_and_used_by_evaluate(cfg, tmp_path, capsys):
    c = cfg.replace(epochs=2, batch_size=16, loss="infonce+pair_ce", eval_mode="fused", fused_grid=(0.0, 0.5, 5.0))
    h = train(c, tmp_path / "f", progress=False)
    assert all(r["eval/fused_w"] in (0.0, 0.5, 5.0) for r in h)
    assert main(["evaluate", "--checkpoint", str(tmp_path / "f" / "checkpoint"), "--split", "test", "--quiet",
                 "--json", str(tmp_path / "t.json")]) == 0
    assert "test/mean/acc@1" in json.loads((tmp_path / "t.json").read_text())
    # a checkpoint trained without fused needs an explicit weight
    train(cfg.replace(epochs=1, batch_size=16), tmp_path / "r", progress=False)
    assert main(["evaluate", "--checkpoint", str(tmp_path / "r" / "checkpoint"), "--split", "test", "--quiet",
                 "--set", "eval_mode=fused"]) == 2
    assert "fused_w" in capsys.readouterr().err


# ----------------------------------------------------------------------------- changed on resume
def test_resume_with_changed_rate_lr_margin_applies_them(cfg, tmp_path):
    """PBT's exploit/explore: a run resumed with another rate, lr and margin trains with them from
    the resumed epoch on; the history keeps every epoch's realised values, inherited ones included."""
    base = cfg.replace(epochs=2, schedule="fixed", rate=0.8, lr=1e-3, margin=1.0, eval_mode="retrieval",
                       loss="combined")  # the margin is a term of the reference loss
    train(base, tmp_path / "donor", progress=False)
    changed = base.replace(epochs=3, rate=0.3, lr=4e-4, margin=0.5)
    hist = train(changed, tmp_path / "taker", resume_from=tmp_path / "donor" / "checkpoint", progress=False)
    assert [r["mining/rate"] for r in hist] == pytest.approx([0.8, 0.8, 0.3])
    assert [r["optim/lr"] for r in hist] == pytest.approx([1e-3, 1e-3, 4e-4])
    assert [r["loss/margin"] for r in hist] == pytest.approx([1.0, 1.0, 0.5])
    assert strip_times(rows(tmp_path / "taker")) == strip_times(hist)  # inherited rows written out
    state = torch.load(tmp_path / "taker" / "checkpoint" / "state.pt", weights_only=True)
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == pytest.approx([4e-4])
    assert state["config"]["rate"] == 0.3
    n = len(json.loads((tmp_path / "donor" / "config.json").read_text()))
    assert n == len(Config().to_dict())
    # the margin reaches the loss: the same resume with the old margin trains differently
    same_margin = train(changed.replace(margin=1.0), tmp_path / "m", progress=False,
                        resume_from=tmp_path / "donor" / "checkpoint")
    assert same_margin[2]["train/loss"] != pytest.approx(hist[2]["train/loss"])
    assert same_margin[2]["loss/margin"] == 1.0


def test_resume_with_a_changed_schedule_and_encoder_lr(cfg, tmp_path):
    """Any schedule (and its fields) may change on resume; encoder_lr reaches the encoder's group."""
    base = cfg.replace(epochs=1, finetune="top:1", encoder_lr=1e-4, eval_mode="retrieval")
    train(base, tmp_path / "a", progress=False)
    table = base.replace(epochs=3, schedule="table", rate_table=(0.1, 0.2), encoder_lr=2e-4)
    hist = train(table, tmp_path / "a", resume_from=tmp_path / "a" / "checkpoint", progress=False)
    assert [r["mining/rate"] for r in hist] == pytest.approx([0.8, 0.2, 0.2])  # decay at epoch 0, then the table
    state = torch.load(tmp_path / "a" / "checkpoint" / "state.pt", weights_only=True)
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == pytest.approx([table.lr, 2e-4])


def test_cli_train_with_a_rate_table(tiny_encoder, tmp_path, capsys):
    out = tmp_path / "table"
    assert main(["train", "--out", str(out), "--quiet", "--epochs", "4", "--set", f"encoder={tiny_encoder}",
                 "--set", "schedule=table", "--set", "rate_table=0.8,0.6,0.4"]) == 0
    assert [r["mining/rate"] for r in rows(out)] == pytest.approx([0.8, 0.6, 0.4, 0.4])
    assert main(["train", "--out", str(tmp_path / "bad"), "--set", "schedule=table",
                 "--set", "rate_table=0.8,1.5"]) == 2
    assert "rate_table" in capsys.readouterr().err


# ---------------------------------------------------------------- pooling, test_every, eval_training, NaN metrics
@pytest.mark.parametrize("pooling", ["cls", "pooler"])
def test_cls_and_pooler_pooling_give_their_own_features_and_train(cfg, tmp_path, pooling):
    """The cached features are the [CLS] vector / BERT's pooler output, computed here directly with
    transformers, and differ from mean pooling; a run (frozen and top:1) trains with them."""
    from transformers import AutoTokenizer, BertModel

    from counterarg.train import Run

    feats = {}
    for p in ("mean", pooling):
        run = Run(cfg.replace(pooling=p), progress=False)
        tids = run.table.splits["validation"].point[:6]
        feats[p] = run.features.embed(tids).cpu()
        run.close()
    texts = [run.table.texts[t] for t in tids]
    model = BertModel.from_pretrained(cfg.encoder).eval()
    tok = AutoTokenizer.from_pretrained(cfg.encoder)
    with torch.no_grad():
        out = model(**tok(texts, max_length=cfg.max_length, truncation=True, padding=True, return_tensors="pt"))
    want = out.last_hidden_state[:, 0] if pooling == "cls" else out.pooler_output
    np.testing.assert_allclose(feats[pooling].numpy(), want.numpy(), atol=5e-3)
    assert (feats[pooling] - feats["mean"]).abs().max() > 0.1, "pooling made no difference"
    for finetune in ("none", "top:1"):
        h = train(cfg.replace(pooling=pooling, epochs=1, finetune=finetune), tmp_path / finetune.replace(":", ""),
                  progress=False)
        assert np.isfinite(h[0]["train/loss"]) and 0 <= h[0]["validation/mean/acc@1"] <= 1


@pytest.mark.parametrize("epochs, every, due", [(3, 2, [2, 3]), (4, 3, [3, 4]), (3, 0, []), (2, 1, [1, 2])])
def test_test_split_is_scored_only_on_due_epochs_and_the_last(cfg, tmp_path, epochs, every, due):
    h = train(cfg.replace(epochs=epochs, test_every=every, schedule="fixed"), tmp_path / "r", progress=False)
    assert [r["epoch"] for r in h if "test/sdoc/acc@1" in r] == due
    assert [r["epoch"] for r in h if "test/mean/acc@1" in r] == due
    assert all("validation/mean/acc@1" in r for r in h)  # validation every epoch regardless


def test_eval_training_adds_training_split_metrics(cfg, tmp_path):
    off = train(cfg.replace(epochs=1), tmp_path / "off", progress=False)
    on = train(cfg.replace(epochs=1, eval_training=True), tmp_path / "on", progress=False)
    assert not any(k.startswith("training") for k in off[0])
    for task in ("sdoc", "sdc", "epa", "mean"):
        assert 0 <= on[0][f"training/{task}/acc@1"] <= 1, sorted(on[0])
    assert on[0]["validation/mean/acc@1"] == off[0]["validation/mean/acc@1"]  # scoring does not change training


def test_non_finite_metric_names_metric_and_epoch(cfg, tmp_path, monkeypatch):
    """A NaN evaluation metric stops the run with a TrainingError naming it and the epoch; the
    epochs before it stay recorded and checkpointed."""
    import counterarg.evaluate as evaluate_mod

    real = evaluate_mod.evaluate_split
    calls = []

    def nan_on_second_epoch(split, *a, **kw):
        metrics, ranks = real(split, *a, **kw)
        calls.append(split)
        if split == "validation" and calls.count("validation") == 2:
            metrics = {**metrics, "validation/epa/acc@1": float("nan")}
        return metrics, ranks

    monkeypatch.setattr(evaluate_mod, "evaluate_split", nan_on_second_epoch)
    with pytest.raises(TrainingError, match=r"metric validation/epa/acc@1 is nan at epoch 2"):
        train(cfg, tmp_path / "r", progress=False)
    assert [r["epoch"] for r in rows(tmp_path / "r")] == [1]
    assert torch.load(tmp_path / "r" / "checkpoint" / "state.pt", weights_only=True)["epoch"] == 1
