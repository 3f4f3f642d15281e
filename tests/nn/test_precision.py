"""Mixed precision (precision.py): the default's resolution, bf16 agreeing with fp32 on the tiny
encoder after a few training steps, and fp16 through the gradient scaler without NaN, all on CPU."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from counterarg.config import Config, ConfigError
from counterarg.nn.precision import grad_scaler, resolve_precision
from counterarg.training.trainer import Trainer

#: bf16 vs fp32 after STEPS steps on the tiny encoder: the loss of every step within this relative
#: tolerance (observed: 2e-5), the encoder's output h within this absolute tolerance (observed 2e-3
#: for |h| up to 1.6; bf16 keeps 8 mantissa bits, a relative error of 4e-3 per rounding).
LOSS_RTOL = 1e-3
H_ATOL = 2e-2
STEPS = 4


def test_auto_precision_is_bf16_only_where_the_device_has_bf16_units(monkeypatch):
    from counterarg.nn.precision import cpu_bf16_native

    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "cpu", bf16_supported=True) == "bf16"
    monkeypatch.delenv("COUNTERARG_CPU_BF16", raising=False)
    assert cpu_bf16_native("flags : fpu avx2 avx512f avx512_bf16 sse") is True  # AMD Zen 4
    assert cpu_bf16_native("flags : fpu avx2 amx_bf16 amx_tile") is True  # Intel Sapphire Rapids
    assert cpu_bf16_native("flags : fpu avx2 avx512f avx512bw") is False  # AVX-512 without bf16
    monkeypatch.setenv("COUNTERARG_CPU_BF16", "0")
    assert cpu_bf16_native("flags : avx512_bf16") is False  # the override wins (the test suite's setting)
    monkeypatch.setenv("COUNTERARG_CPU_BF16", "1")
    assert cpu_bf16_native("flags : avx2") is True
    assert resolve_precision("auto", "cuda", bf16_supported=True) == "bf16"
    assert resolve_precision("auto", "cuda", bf16_supported=False) == "fp32"
    assert resolve_precision("fp16", "cpu") == "fp16"
    with pytest.raises(ConfigError, match="'fp8'"):
        resolve_precision("fp8", "cpu")
    with pytest.raises(ConfigError, match="precision.*'half'"):
        Config(precision="half")


def _steps(run: Trainer, precision: str, start: dict) -> tuple[np.ndarray, np.ndarray]:
    """STEPS training steps from the state ``start`` at ``precision``: (losses [STEPS], h [64, H])."""
    run.model.load_state(start["model"])
    run.optimizer.load_state_dict(start["trainer"]["optimizer"])
    run.model.features.precision = precision
    run.scaler = grad_scaler(precision, run.device)
    ids = run.table.splits["training"]
    rng = np.random.default_rng(0)
    torch.manual_seed(1)  # dropout
    run.model.train()
    losses = []
    for _ in range(STEPS):
        rows = rng.choice(len(ids.point), 8, replace=False)
        neg = ids.counter[rng.choice(len(ids.point), 8)]
        tids = torch.from_numpy(np.concatenate([ids.point[rows], ids.counter[rows], neg]))  # [3B]
        h = run.model.features(tids)  # [3B, H]
        assert h.dtype == torch.float32, "pooled output, heads and loss are fp32"
        total = _loss(run, h, tids)
        assert torch.isfinite(total), f"{precision}: loss {total.item()}"
        run.backward_step(total)
        losses.append(total.item())
    return np.array(losses), run.model.features.embed(ids.point[:64]).numpy()  # [STEPS], [64, H]


def _loss(run, h, tids):
    """The run's objective for a batch laid out as [points; counters; one negative each]."""
    h_p, h_c, h_n = h.split(8)  # [B, H] each
    t = tids.view(3, 8)  # [3, B]
    return run.loss(h_p, h_c, h_n[:, None], (t[0], t[1], t[2][:, None]))[0]


@pytest.mark.slow
@pytest.mark.parametrize("finetune", ["top:1", "all"])
def test_bf16_and_fp32_training_agree_within_tolerance(tiny_encoder, finetune):
    run = Trainer(
        Config(encoder=tiny_encoder, finetune=finetune, precision="bf16", encoder_lr=1e-3, device="cpu"), progress=False
    )
    assert run.model.features.precision == "bf16"
    start = copy.deepcopy({"model": run.model.state(), "trainer": run.state()})
    l16, h16 = _steps(run, "bf16", start)
    l32, h32 = _steps(run, "fp32", start)
    np.testing.assert_allclose(l16, l32, rtol=LOSS_RTOL)
    np.testing.assert_allclose(h16, h32, atol=H_ATOL)
    assert np.abs(h16 - h32).max() > 1e-6, "bf16 autocast had no effect: outputs are bit-identical to fp32"


@pytest.mark.slow
@pytest.mark.parametrize("finetune", ["top:1", "all"])
def test_fp16_with_the_gradient_scaler_gives_no_nan(tiny_encoder, finetune):
    """fp16 autocast runs on CPU in torch 2.13. A scale of 2**40 makes the first steps' scaled
    gradients overflow: the scaler must skip those steps and back off, leaving finite weights."""
    run = Trainer(
        Config(encoder=tiny_encoder, finetune=finetune, precision="fp16", encoder_lr=1e-3, device="cpu"), progress=False
    )
    assert run.scaler.is_enabled() and run.model.features.precision == "fp16"
    start = copy.deepcopy({"model": run.model.state(), "trainer": run.state()})
    losses, h = _steps(run, "fp16", start)
    assert np.isfinite(losses).all() and np.isfinite(h).all()
    run.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    run.model.features.train()
    ids = run.table.splits["training"]
    tids = torch.from_numpy(np.concatenate([ids.point[:8], ids.counter[:8], ids.counter[8:16]]))  # [3B]
    for _ in range(3):
        total = _loss(run, run.model.features(tids), tids)
        run.backward_step(total)
    assert run.scaler.get_scale() < 2.0**40, "overflowing steps must lower the scale"
    weights = [*run.model.heads.parameters(), *run.model.features.trainable_parameters()]
    assert all(torch.isfinite(p).all() for p in weights), "a step with inf gradients must be skipped"
    assert run.state()["scaler"]["scale"] == run.scaler.get_scale(), "the scale is checkpointed"
