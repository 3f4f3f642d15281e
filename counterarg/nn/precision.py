"""Mixed precision for the encoder: the autocast context of its forward passes and the fp16 gradient scaler.

Only the encoder runs under autocast (in training and in the embedding passes); its output is cast
back to float32 before pooling, so pooling, the heads, the loss and the optimizer all work in fp32.
bf16 keeps fp32's exponent range and needs no scaler; fp16 does: a :class:`torch.amp.GradScaler`
multiplies the loss before ``backward`` and skips a step whose gradients overflowed. On CPU, torch
2.13 autocasts both bf16 and fp16 (tests run both there). torch is imported where it is used: Config
validation reads :data:`PRECISIONS` here, and ``counterarg --help`` loads no torch.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.fieldvalues import ConfigError

if TYPE_CHECKING:
    import torch

#: ``precision`` values; "auto" resolves through :func:`resolve_precision`.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: each precision's autocast dtype, by its torch name (None: no autocast)
DTYPES = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}


def resolve_precision(precision: str, device_type: str, bf16_supported: bool = False) -> str:
    """The precision a run uses on ``device_type`` ("cpu", "cuda", ...): fp32 | bf16 | fp16.

    ``auto`` is bf16 where the device computes bf16 natively (``bf16_supported``: CUDA from Ampere on;
    CPUs with AVX512-BF16 or AMX-BF16, see :func:`cpu_bf16_native`) and fp32 everywhere else: without
    bf16 units, bf16 autocast is often slower than fp32, and fp16 needs a gradient scaler, so neither
    is picked without being asked for. Explicit values pass through.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if device_type in ("cuda", "cpu") and bf16_supported else "fp32"


#: CPU flags (Linux /proc/cpuinfo) of native bf16 arithmetic: AMD Zen 4+, Intel Cooper Lake+ / AMX.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_native(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 natively (one of :data:`CPU_BF16_FLAGS`; Linux only, else False).
    ``$COUNTERARG_CPU_BF16=0`` (or 1) overrides the check: the test suite sets 0 so that its numbers
    do not depend on the machine. On the 2-core AMD EPYC (Zen 4) these figures were measured on, the
    top-layer default trains 1.2x faster at bf16 with length buckets (docs/results.md, "Measured on a
    2-core CPU machine")."""
    forced = os.environ.get("COUNTERARG_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    flags = set(cpuinfo.split())
    return any(f in flags for f in CPU_BF16_FLAGS)


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 natively (CUDA: compute capability 8.0 and later; CPU: see
    :func:`cpu_bf16_native`)."""
    if device.type == "cpu":
        return cpu_bf16_native()
    if device.type != "cuda":
        return False
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))


def run_precision(precision: str, device: torch.device) -> str:
    """``precision`` ("auto" resolved, see :func:`resolve_precision`) on ``device``."""
    return resolve_precision(precision, device.type, bf16_supported(device))


def autocast(precision: str, device: torch.device):
    """The context the encoder's forward runs in: ``torch.autocast`` at bf16/fp16, nothing at fp32."""
    dtype = DTYPES[precision]
    if dtype is None:
        return nullcontext()
    import torch

    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler that is active for fp16 only (disabled, it passes every call through)."""
    import torch

    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
