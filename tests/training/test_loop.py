import json
import os

import numpy as np
import pytest
import torch
from conftest import rows, strip_times

from counterarg.cli import main
from counterarg.config import REFERENCE_METHOD, Config
from counterarg.training.loop import TrainingError, train


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"finetune": "top:1", "encoder_lr": 1e-3, "length_buckets": 4},
        {"eval_training": True, "eval_mode": "fused", "loss": "infonce+pair_ce", "fused_grid": (0.5, 5.0)},
    ],  # a picked weight that is not 0
    ids=["frozen", "top1-length-buckets", "fused-eval-training"],
)
def test_resume_equals_uninterrupted(cfg, tmp_path, extra):
    cfg = cfg.replace(**extra)
    straight = train(cfg, tmp_path / "a", progress=False)
    train(cfg.replace(epochs=2), tmp_path / "b", progress=False)
    reported = []
    resumed = train(
        cfg,
        tmp_path / "b",
        resume_from=tmp_path / "b" / "checkpoint",
        progress=False,
        report=lambda row, ck: reported.append(row["epoch"]),
    )
    assert reported == [3], "a resume trains only the epochs after its checkpoint"
    assert len(rows(tmp_path / "b")) == 3 and len(resumed) == 3
    assert strip_times(rows(tmp_path / "b")) == strip_times(rows(tmp_path / "a")) == strip_times(straight)
    assert "validation/mean/acc@1" in straight[0] and "test/sdoc/acc@1" in straight[0]
    assert [r["mining/rate"] for r in straight] == pytest.approx([0.8, 0.5, 0.2])
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert Config.from_dict(saved) == cfg


@pytest.mark.slow
def test_training_learns_on_demo(cfg, tmp_path):
    ref = {k: v for k, v in REFERENCE_METHOD.items() if k not in ("schedule", "rate", "epochs", "lr")}
    h = train(cfg.replace(**ref, epochs=4, lr=3e-3), tmp_path / "r", progress=False)
    assert h[-1]["train/loss"] < h[0]["train/loss"]
    assert h[-1]["train/ce_pos"] < h[0]["train/ce_pos"]


@pytest.mark.slow
def test_default_recipe_learns_and_reports_telemetry(cfg, tmp_path):
    h = train(
        cfg.replace(epochs=3, lr=3e-3, batch_size=16, num_negatives=2, schedule="fixed", rate=0.0),
        tmp_path / "d",
        progress=False,
    )
    assert h[-1]["train/infonce"] < h[0]["train/infonce"]
    shares = ("same_debate_same_side", "same_debate_other_side", "same_theme_other_debate", "other_theme")
    assert sum(h[0][f"mining/share_{k}"] for k in shares) == pytest.approx(1.0)
    assert h[0]["mining/share_points"] + h[0]["mining/share_counters"] == pytest.approx(1.0)
    assert h[0]["mining/share_hard"] == 1.0  # rate 0: every negative mined


@pytest.mark.slow
@pytest.mark.parametrize("finetune", ["top:1", "all"])
def test_the_checkpoint_holds_exactly_the_trained_encoder_weights(cfg, tmp_path, finetune):
    """top:1 checkpoints the top layer only, ``all`` the whole encoder; each tensor there moved away
    from the pretrained one (the weights really trained), and nothing else is saved."""
    from transformers import BertModel

    out = tmp_path / finetune.replace(":", "")
    h = train(cfg.replace(epochs=1, finetune=finetune, encoder_lr=1e-3), out, progress=False)
    assert np.isfinite(h[0]["train/loss"])
    saved = torch.load(out / "checkpoint" / "state.pt", weights_only=True)["model"]["encoder"]
    pretrained = BertModel.from_pretrained(cfg.encoder).state_dict()
    if finetune == "top:1":  # the trained part holds the top layer as layers.0 (2-layer tiny BERT)
        mapped = {"encoder.layer.1." + k[len("layers.0.") :]: v for k, v in saved.items()}
        assert set(mapped) == {k for k in pretrained if k.startswith("encoder.layer.1.")}
    else:
        mapped = {k[len("encoder.") :]: v for k, v in saved.items()}
        assert set(mapped) == set(pretrained)
    moved = {k for k, v in mapped.items() if not torch.equal(v, pretrained[k])}
    used = {k for k in mapped if k.endswith("dense.weight") and not k.startswith("pooler.")}  # mean pooling
    assert used and used <= moved, sorted(used - moved)
    assert not any(k.startswith("pooler.") for k in moved)  # no gradient reaches an unused pooler


@pytest.mark.slow
def test_index_backends_give_identical_runs(cfg, tmp_path, monkeypatch):
    """Mining is exact whatever the backend, so whole runs agree; the sharded trees share 2 actors."""
    import ray

    import counterarg.retrieval.index as index_mod

    made = []
    real = index_mod.make_index_pair
    monkeypatch.setattr(
        index_mod, "make_index_pair", lambda backend, *a, **kw: made.append(r := real(backend, *a, **kw)) or r
    )
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


# ---------------------------------------------------------------- checkpoints: safe, sealed, recoverable


@pytest.mark.slow
def test_resume_after_a_kill_between_the_swap_renames(cfg, tmp_path, capsys):
    """Checkpoint/ gone, .checkpoint.old (epoch 2) and a sealed
    .checkpoint.XXXX (epoch 3) left; --resume completes the swap and keeps every row."""
    import shutil

    args = [
        "train",
        "--quiet",
        "--set",
        f"encoder={cfg.encoder}",
        "--set",
        "schedule=decay",
        "--set",
        "rate_step=0.3",
        "--set",
        "eval_mode=rerank",
    ]
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
    assert sorted(p.name for p in b.iterdir() if p.name != ".lock") == [
        "best",
        "checkpoint",
        "config.json",
        "machine.jsonl",
        "metrics.jsonl",
    ]


def test_second_train_into_a_locked_run_folder_fails_at_once(cfg, tmp_path, capsys):
    """A second writer of the same --out gets a named error, exit 2, nothing written."""
    from counterarg.core.io import folder_lock

    out = tmp_path / "r"
    with folder_lock(out):
        assert main(["train", "--out", str(out), "--quiet", "--epochs", "1", "--set", f"encoder={cfg.encoder}"]) == 2
    assert "in use by another process" in capsys.readouterr().err
    assert not (out / "metrics.jsonl").exists()


def test_resume_with_fewer_epochs_leaves_config_alone(cfg, tmp_path):
    """--resume --epochs 2 on a 3-epoch run does not rewrite config.json or metrics."""
    run = tmp_path / "r"
    train(cfg, run, progress=False)
    before = (run / "config.json").read_text(), (run / "metrics.jsonl").read_text()
    with pytest.raises(TrainingError, match="already holds 3 epochs"):
        train(cfg.replace(epochs=2), run, resume_latest=True, progress=False)
    assert ((run / "config.json").read_text(), (run / "metrics.jsonl").read_text()) == before


def test_each_start_and_resume_records_its_machine(cfg, tmp_path):
    """machine.jsonl gets a row per session (the epoch it starts from, the CPU, the precision auto
    resolved to, the threads), and a resume keeps the first session's row."""
    run = tmp_path / "r"
    train(cfg.replace(epochs=1), run, progress=False)
    train(cfg.replace(epochs=2), run, resume_latest=True, progress=False)
    machines = [json.loads(line) for line in (run / "machine.jsonl").read_text().splitlines()]
    assert [m["from_epoch"] for m in machines] == [1, 2]
    for m in machines:
        assert m["precision"] == "fp32"  # the suite sets COUNTERARG_CPU_BF16=0 (conftest)
        assert m["device"] == "cpu" and m["threads"] == torch.get_num_threads() and m["cpu"]
        assert m["cpu_bf16"] is False and m["torch"] == torch.__version__


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


# ----------------------------------------------------------------------------- changed on resume
def test_resume_with_changed_rate_lr_margin_applies_them(cfg, tmp_path):
    """PBT's exploit/explore: a run resumed with another rate, lr and margin trains with them from
    the resumed epoch on; the history keeps every epoch's realised values, inherited ones included."""
    base = cfg.replace(
        epochs=2, schedule="fixed", rate=0.8, lr=1e-3, margin=1.0, eval_mode="retrieval", loss="combined"
    )  # the margin is a term of the reference loss
    train(base, tmp_path / "donor", progress=False)
    changed = base.replace(epochs=3, rate=0.3, lr=4e-4, margin=0.5)
    hist = train(changed, tmp_path / "taker", resume_from=tmp_path / "donor" / "checkpoint", progress=False)
    assert [r["mining/rate"] for r in hist] == pytest.approx([0.8, 0.8, 0.3])
    assert [r["optim/lr"] for r in hist] == pytest.approx([1e-3, 1e-3, 4e-4])
    assert [r["loss/margin"] for r in hist] == pytest.approx([1.0, 1.0, 0.5])
    assert strip_times(rows(tmp_path / "taker")) == strip_times(hist)  # inherited rows written out
    state = torch.load(tmp_path / "taker" / "checkpoint" / "state.pt", weights_only=True)
    assert [g["lr"] for g in state["trainer"]["optimizer"]["param_groups"]] == pytest.approx([4e-4])
    assert state["model"]["config"]["rate"] == 0.3
    n = len(json.loads((tmp_path / "donor" / "config.json").read_text()))
    assert n == len(Config().to_dict())
    # the margin reaches the loss: the same resume with the old margin trains differently
    same_margin = train(
        changed.replace(margin=1.0), tmp_path / "m", progress=False, resume_from=tmp_path / "donor" / "checkpoint"
    )
    assert same_margin[2]["train/loss"] != pytest.approx(hist[2]["train/loss"])
    assert same_margin[2]["loss/margin"] == 1.0


@pytest.mark.slow
def test_resume_with_a_changed_schedule_and_encoder_lr(cfg, tmp_path):
    """Any schedule (and its fields) may change on resume; encoder_lr reaches the encoder's group."""
    base = cfg.replace(epochs=1, finetune="top:1", encoder_lr=1e-4, eval_mode="retrieval")
    train(base, tmp_path / "a", progress=False)
    table = base.replace(epochs=3, schedule="table", rate_table=(0.1, 0.2), encoder_lr=2e-4)
    hist = train(table, tmp_path / "a", resume_from=tmp_path / "a" / "checkpoint", progress=False)
    assert [r["mining/rate"] for r in hist] == pytest.approx([0.8, 0.2, 0.2])  # decay at epoch 0, then the table
    state = torch.load(tmp_path / "a" / "checkpoint" / "state.pt", weights_only=True)
    assert [g["lr"] for g in state["trainer"]["optimizer"]["param_groups"]] == pytest.approx([table.lr, 2e-4])


# ---------------------------------------------------------------- pooling, test_every, eval_training, NaN metrics


def test_non_finite_metric_names_metric_and_epoch(cfg, tmp_path, monkeypatch):
    """A NaN evaluation metric stops the run with a TrainingError naming it and the epoch; the
    epochs before it stay recorded and checkpointed."""
    import counterarg.evaluation.evaluate as evaluate_mod

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


def test_training_and_evaluation_modules_never_import_ray():
    """Training code is Ray-free: only the sweep code and the sharded index backend import it."""
    import subprocess
    import sys

    code = (
        "import sys, counterarg, counterarg.training.loop, counterarg.evaluation.evaluate, counterarg.cli, "
        "counterarg.serving.inference; "
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_prepare_features_builds_the_cache_a_run_then_reads_and_says_nothing(cfg, tmp_path, monkeypatch, capsys):
    """What a sweep driver runs before its trials: the feature cache of the config's corpus, built once,
    quietly (its corpus is not announced: the driver's console says what it prepares)."""
    from counterarg.data.feature_cache import load_built
    from counterarg.model.features import cache_folder
    from counterarg.model.over_corpus import over_corpus
    from counterarg.training.loop import prepare_features

    monkeypatch.setenv("COUNTERARG_CACHE", str(tmp_path / "cache"))
    config = cfg.replace(max_length=24)
    table = over_corpus(config, announce=False).table
    assert load_built(*cache_folder(config, table)) is None
    prepare_features(config, progress=False)
    assert capsys.readouterr().out == ""
    assert "pooled" in load_built(*cache_folder(config, table))
