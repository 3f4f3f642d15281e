"""Checkpoints: the plain format of a run's state, writing it and reading it back safely.

A checkpoint folder holds ``state.pt``::

    {"epoch": N, "history": [metric rows],
     "model": {"config", "heads", "encoder", "fused_w"},  # model.biencoder.BiEncoder.state()
     "trainer": {"optimizer", "scaler", "rng"}}  # training.trainer.Trainer.state(); not in a model-only save

``model`` is all inference needs (biencoder.BiEncoder.from_checkpoint); ``trainer`` is what a resumed run
needs besides, so it gives the same metrics as an uninterrupted one on CPU. It holds tensors and plain
data only and is read with ``torch.load(weights_only=True)``, so a planted ``state.pt`` cannot run code;
each checkpoint folder carries a sha256 manifest (io.py) checked on load. Reading imports nothing of
training. Which config fields may change on resume is their ``resume`` role (config.py,
:func:`counterarg.config.fields_with`).
"""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path

import numpy as np
import torch

from ..config import HYPER, MODEL, RESUME, Config, fields_with
from ..core.io import MANIFEST, bad_files, read_manifest

STATE_FILE = "state.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, cannot be trusted (unsafe to load, cut short, failing its sha256
    manifest) or does not fit the model or run reading it.

    The message names the file and, where a run folder's metrics.jsonl tells it, the last good epoch.
    """


def make_state(epoch: int, history: list[dict], model: dict, trainer: dict | None = None) -> dict:
    """The checkpoint of a model state (and a trainer state) after ``epoch`` epochs of ``history``."""
    state = {"epoch": epoch, "history": _plain(history), "model": model}
    if trainer is not None:
        state["trainer"] = trainer
    return state


def write_state(folder: Path, state: dict) -> None:
    """``state.pt`` of ``state`` into ``folder`` (a folder the caller swaps in: io.atomic_replace_dir)."""
    torch.save(state, Path(folder) / STATE_FILE)


def _plain(obj):
    """numpy scalars -> Python numbers, recursively (they would need unsafe unpickling)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _last_good_epoch(folder: Path) -> str:
    """'epoch N (metrics.jsonl)' from the run folder above a checkpoint, for error messages."""
    metrics = folder.parent / "metrics.jsonl"
    try:
        lines = [ln for ln in metrics.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return f"the last epoch recorded in {metrics} is {int(json.loads(lines[-1])['epoch'])}"
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return f"no epoch is recorded beside it ({metrics} is missing or empty)"


def _repair_interrupted_swap(path: Path) -> None:
    """A checkpoint folder (``checkpoint/``, ``best/``) that a kill left between its swap's two
    renames: complete or roll back the swap (io.recover_dir) under its run folder's lock, saying so."""
    from ..core.io import FolderLockedError, folder_lock, recover_dir

    if not any(path.parent.glob(f".{path.name}.*")):
        return
    try:
        with folder_lock(path.parent):
            for line in recover_dir(path):
                print(f"[counterarg] {line}", flush=True)
    except FolderLockedError as e:
        raise CheckpointError(
            f"{path} is being replaced by a running training ({e}); try again when it has finished its epoch"
        ) from None


def read_checkpoint(folder: str | Path) -> dict:
    """Load a checkpoint folder's state safely, or raise :class:`CheckpointError` naming the file.

    Only tensors and plain data are unpickled (``weights_only=True``); the sha256 manifest written
    with the checkpoint is checked first, so a bit flip or a cut-short file is named, not loaded.
    """
    path = Path(folder)
    if not path.exists():
        _repair_interrupted_swap(path)
    f = path / STATE_FILE if path.is_dir() else path
    if not f.exists():
        raise CheckpointError(f"no checkpoint at {path} (expected {STATE_FILE}; a run's checkpoint is OUT/checkpoint)")
    manifest = read_manifest(f.parent)
    if manifest is not None:
        bad = bad_files(f.parent, manifest)
        if bad:
            raise CheckpointError(
                f"checkpoint file(s) {', '.join(str(f.parent / b) for b in bad)} fail their sha256 check "
                f"against {f.parent / MANIFEST} (checkpoint of epoch {manifest.get('epoch', '?')}): the file was "
                f"damaged after it was written; {_last_good_epoch(f.parent)}. Restore the folder from a copy, "
                "or move it away and train again"
            )
    try:
        state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure to unpickle becomes one named error
        text = str(e)
        if "Weights only load failed" in text or "Unsupported global" in text:
            first = next((ln.strip() for ln in text.splitlines() if "Unsupported global" in ln), "")
            raise CheckpointError(
                f"refusing to load {f}: it holds objects other than tensors and plain data, "
                f"which could run code when loaded ({first or type(e).__name__}); "
                "only checkpoints written by counterarg are accepted"
            ) from None
        raise CheckpointError(
            f"cannot read checkpoint {f}: {type(e).__name__}: {text.splitlines()[0] if text else ''} "
            f"(cut short or not a checkpoint); {_last_good_epoch(f.parent)}"
        ) from None
    if (
        not isinstance(state, dict)
        or not {"epoch", "history", "model"} <= set(state)
        or not isinstance(state["model"], dict)
        or not {"config", "heads", "encoder"} <= set(state["model"])
    ):
        old = isinstance(state, dict) and "heads" in state
        raise CheckpointError(
            f"{f} is not a counterarg checkpoint (no epoch/history/model)"
            + (
                ": it was written by an older counterarg (heads and config at the top level); train it again"
                if old
                else ""
            )
        )
    epoch = state["epoch"]
    if (
        isinstance(epoch, bool)
        or not isinstance(epoch, int)
        or epoch < 0
        or not isinstance(state["history"], list)
        or not isinstance(state["model"]["config"], dict)
    ):
        raise CheckpointError(
            f"{f} is not a checkpoint counterarg wrote: its epoch is {epoch!r} (a count of epochs "
            "expected), with history and config as lists and mappings; train it again"
        )
    _check_sealed_config(state["model"]["config"], f)
    return state


def _check_sealed_config(saved: dict, f: Path) -> None:
    """The model config in ``state.pt`` must be the one its folder's ``config.json`` (sealed with it in the
    manifest) records, by the rule a resume applies (:func:`config_differences`): a state.pt edited to
    another pooling, say, would otherwise be read as that model."""
    sealed = f.parent / "config.json"
    if f.name != STATE_FILE or not sealed.is_file():
        return
    try:
        recorded = json.loads(sealed.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {sealed}, the config sealed with {f}: {e}") from None
    if not isinstance(recorded, dict):
        raise CheckpointError(f"{sealed}, the config sealed with {f}, is not a JSON object")
    diffs = config_differences(saved, recorded)
    if diffs:
        detail = ", ".join(f"{k}: state.pt {a!r} vs config.json {b!r}" for k, (a, b) in sorted(diffs.items()))
        raise CheckpointError(
            f"{f} does not match the config sealed beside it in {sealed} ({detail}){_why(diffs)}; "
            "one of them was changed after training: restore the folder, or train again"
        )


def config_differences(saved: dict, now: dict) -> dict[str, tuple]:
    """``{field: (saved value, value now)}`` of the fields outside the ``resume`` role (those may differ
    between a checkpoint and a run resuming it) in which two configs differ; a field one of them lacks
    (newer than the checkpoint) counts as its default."""
    allowed = set(fields_with(RESUME))  # the hyperparameters among them: Trainer.apply_hyperparameters
    defaults = Config().to_dict()
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731 - JSON and state.pt keep lists
    return {
        k: (saved.get(k, d), now.get(k, d))
        for k, d in defaults.items()
        if k not in allowed and norm(saved.get(k, d)) != norm(now.get(k, d))
    }


def _why(diffs: dict) -> str:
    model = [k for k in fields_with(MODEL) if k in diffs]
    return f"; {', '.join(model)}: the architecture, its weights fit no other value" if model else ""


def check_resumable(config: Config, saved: dict, source: Path) -> None:
    diffs = config_differences(saved, config.to_dict())
    if diffs:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(diffs.items()))
        raise CheckpointError(f"checkpoint {source} was made with a different config ({detail}){_why(diffs)}")


def resumed_changes(config: Config, saved: dict) -> str:
    """``rate 0.8 -> 0.6, lr 0.001 -> 0.0008``: the training fields a resume changed ('' if none)."""
    now = config.to_dict()
    keys = [k for k in fields_with(HYPER) if k in saved and saved[k] != now[k]]
    return ", ".join(f"{k} {saved[k]!r} -> {now[k]!r}" for k in keys)


def checkpoint_index(folder: str) -> int | None:
    """``.../checkpoint_000012`` -> 12 (the numbered checkpoint folders Tune writes for a trial); None
    for any other name."""
    m = re.fullmatch(r"checkpoint_(\d+)", posixpath.basename(folder.rstrip("/")))
    return int(m.group(1)) if m else None
