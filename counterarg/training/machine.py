"""What a run was measured on: ``machine.jsonl`` beside its ``config.json``.

A run's time depends on the machine as much as on its config: ``precision=auto`` trains the
top-layer default in bf16 on a CPU with bf16 units (AVX512-BF16, AMX) and in fp32 elsewhere, and the
same run took 8.5 minutes on one 2-core machine and about 30 on another (docs/results.md). So every
run folder records, one row per start or resume, the CPU, the threads, the device and the precision
the run resolved to, and a time read off ``metrics.jsonl`` says what it was measured on.
Hostnames and paths are left out: run folders are committed and shared.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["MACHINE_FILE", "cpu_model", "machine_record"]

#: the run folder's record of the machines that trained it (training/loop.py appends a row per session)
MACHINE_FILE = "machine.jsonl"


def _read_cpuinfo() -> str | None:
    """Linux ``/proc/cpuinfo``, or None where there is none."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``: its family and model numbers too, which tell
    CPU generations apart where the name is only "AMD EPYC"); ``platform.processor()`` elsewhere."""
    if cpuinfo is None:
        cpuinfo = _read_cpuinfo()
        if cpuinfo is None:
            return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break  # the first processor's block is enough
            continue
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def machine_record(device: Any, precision: str, threads: int) -> dict[str, Any]:
    """The machine facts a run's timings depend on: the CPU, its core count, whether it computes bf16
    natively, the torch threads, the device and the precision ``auto`` resolved to."""
    import torch

    from ..nn.precision import cpu_bf16_native

    cpuinfo = _read_cpuinfo()  # read once for the name and the bf16 flags
    record: dict[str, Any] = {
        "cpu": cpu_model(cpuinfo),
        "cpu_count": os.cpu_count(),
        "cpu_bf16": cpu_bf16_native(cpuinfo),
        "threads": int(threads),
        "device": str(device),
        "precision": precision,
        "torch": torch.__version__,
    }
    if getattr(device, "type", str(device)).startswith("cuda") and torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name(device)
    return record
