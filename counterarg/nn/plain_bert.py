"""A saved BERT encoder's inference pass in plain torch: what ``rank`` and ``embed`` run a few texts through.

transformers 5.x spends about 5 s of CPU on import before a BertModel exists (the ``transformers.models``
package reads every model's source file to build its lazy index, and ``modeling_utils`` pulls in
torch._dynamo, torch.distributed.tensor, scipy and an HTTP client), while the model itself loads in a
fraction of a second. A ``counterarg rank`` that embeds one argument and scores cached candidates paid
that import every time. Here the same weights run the same operations as transformers' ``BertModel`` in
eval mode (embeddings, post-LayerNorm self-attention layers, the tanh pooler), tokenised by the
folder's own ``tokenizer.json`` through the ``tokenizers`` library that transformers' fast tokenizer
wraps; tests/nn/test_plain_bert.py checks tokens, hidden states and rankings against transformers.

Only what is reproduced exactly loads here: a ``bert`` config with absolute positions and a known
activation, float32 safetensors holding every weight under BertModel's names (the pooler's included),
a ``tokenizer.json`` and a pad token. :func:`load_plain_bert` returns None for anything else, and the
caller loads the folder through transformers as before (its errors and checks included). The
parameter names are BertModel's, so a checkpoint's trained layers load into it as into BertModel
(features.TextFeatures.load_into_encoder).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

#: the activations reproduced here, by their name in a BERT config.json (transformers.activations)
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "relu": F.relu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}
#: weights a saved BERT may hold that the encoder does not use: buffers and the pre-training heads
UNUSED_PREFIXES = ("embeddings.position_ids", "cls.")


class _Linear(nn.Linear):
    """nn.Linear whose weights are left uninitialised: they are all loaded (:func:`load_plain_bert`), and
    drawing MiniLM's random weights first cost 0.4 s of CPU."""

    def reset_parameters(self) -> None:
        pass


class _Embedding(nn.Embedding):
    """nn.Embedding left uninitialised, as :class:`_Linear`."""

    def reset_parameters(self) -> None:
        pass


class _Embeddings(nn.Module):
    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.word_embeddings = _Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = _Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = _Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, T, H]
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # [T]
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x + self.position_embeddings(positions)[None])


class _SelfAttention(nn.Module):
    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = _Linear(c.hidden_size, c.hidden_size)
        self.key = _Linear(c.hidden_size, c.hidden_size)
        self.value = _Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:  # [B, T, H] -> [B, T, H]
        b, t, h = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:  # [B, T, H] -> [B, heads, T, H / heads]
            return y.view(b, t, self.heads, h // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)), mask)
        return out.transpose(1, 2).reshape(b, t, h)


class _DenseNorm(nn.Module):
    """``LayerNorm(dense(x) + residual)``: BertSelfOutput and BertOutput."""

    def __init__(self, width: int, c: SimpleNamespace):
        super().__init__()
        self.dense = _Linear(width, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _DenseNorm(c.hidden_size, c)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.dense = _Linear(c.hidden_size, c.intermediate_size)
        self.act: Callable[[torch.Tensor], torch.Tensor] = ACTIVATIONS[c.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _DenseNorm(c.intermediate_size, c)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        a = self.attention(x, mask)
        return self.output(self.intermediate(a), a)


class _Encoder(nn.Module):
    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))


class _Pooler(nn.Module):
    """tanh(dense(h[CLS])): BertPooler."""

    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.dense = _Linear(c.hidden_size, c.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [B, T, H] -> [B, H]
        return torch.tanh(self.dense(hidden[:, 0]))


class PlainBert(nn.Module):
    """BertModel's inference pass: ``model(input_ids=, attention_mask=, token_type_ids=).last_hidden_state``
    ``[B, T, H]``; ``.config.hidden_size``, ``.encoder.layer``, ``.pooler`` and the parameter names as
    BertModel has them."""

    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)
        self.pooler = _Pooler(config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> SimpleNamespace:
        x = self.embeddings(input_ids, torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids)
        mask = None  # no padding: every token attends to every token
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, T] keys a query may attend to
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return SimpleNamespace(last_hidden_state=x)


class PlainTokenizer:
    """The folder's ``tokenizer.json`` called as ``encode_texts`` calls transformers' fast tokenizer:
    ``tok(texts, truncation=True, max_length=N, padding=..., return_tensors=None | "pt")``."""

    def __init__(self, tokenizer, pad_id: int, pad_token: str):
        self._tok, self.pad_id, self.pad_token = tokenizer, pad_id, pad_token
        self._tok.no_padding()
        self._tok.no_truncation()

    def __call__(
        self,
        texts: list[str],
        *,
        truncation: bool = False,
        max_length: int | None = None,
        padding: bool = False,
        return_tensors: str | None = None,
    ) -> _Batch:
        tok = self._tok
        if truncation and max_length:
            tok.enable_truncation(max_length)
        else:
            tok.no_truncation()
        if padding:
            tok.enable_padding(pad_id=self.pad_id, pad_token=self.pad_token)
        else:
            tok.no_padding()
        encs = tok.encode_batch(list(texts))
        out = {
            "input_ids": [e.ids for e in encs],
            "token_type_ids": [e.type_ids for e in encs],
            "attention_mask": [e.attention_mask for e in encs],
        }
        if return_tensors == "pt":
            return _Batch({k: torch.tensor(v, dtype=torch.long) for k, v in out.items()})
        return _Batch(out)


class _Batch(dict):
    """A tokenised batch: a dict of its fields, ``.to(device)`` as transformers' BatchEncoding."""

    def to(self, device) -> _Batch:
        return _Batch({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()})


def _config(folder: Path) -> SimpleNamespace | None:
    """The BERT config this module reproduces exactly, or None."""
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    keys = (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
    )
    if (
        not isinstance(raw, dict)
        or raw.get("model_type") != "bert"
        or raw.get("position_embedding_type", "absolute") != "absolute"
        or raw.get("hidden_act", "gelu") not in ACTIVATIONS
        or raw.get("is_decoder", False)
        or not all(isinstance(raw.get(k), int) and raw[k] > 0 for k in keys)
        or raw["hidden_size"] % raw["num_attention_heads"]
    ):
        return None
    return SimpleNamespace(
        **{k: raw[k] for k in keys},
        type_vocab_size=int(raw.get("type_vocab_size", 2)),
        layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
        hidden_act=raw.get("hidden_act", "gelu"),
    )


def _weights(folder: Path) -> dict[str, torch.Tensor] | None:
    """The float32 weights of ``model.safetensors`` under BertModel's names (a ``bert.`` prefix
    dropped), less the unused ones; None when there is no such file or it holds anything else."""
    from safetensors.torch import load_file

    path = folder / "model.safetensors"
    if not path.is_file():
        return None
    try:
        raw = load_file(str(path))
    except Exception:  # noqa: BLE001 - a damaged file: transformers' load names it
        return None
    if raw and all(k.startswith("bert.") or k.startswith(UNUSED_PREFIXES) for k in raw):
        raw = {k.removeprefix("bert."): v for k, v in raw.items()}
    weights = {k: v for k, v in raw.items() if not k.startswith(UNUSED_PREFIXES)}
    if any(v.dtype != torch.float32 for v in weights.values()):
        return None
    return weights


def _tokenizer(folder: Path) -> PlainTokenizer | None:
    """The folder's ``tokenizer.json`` with the pad token its tokenizer_config names, or None."""
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        tokenizer = Tokenizer.from_file(str(path))
        settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - unreadable: transformers' load names it
        return None
    pad = settings.get("pad_token") if isinstance(settings, dict) else None
    pad = pad.get("content") if isinstance(pad, dict) else pad
    if not isinstance(pad, str):
        return None
    pad_id = tokenizer.token_to_id(pad)
    if pad_id is None or settings.get("padding_side", "right") != "right":
        return None
    return PlainTokenizer(tokenizer, pad_id, pad)


def load_plain_bert(location: str) -> tuple[PlainBert, PlainTokenizer] | None:
    """``(model, tokenizer)`` of the saved BERT folder ``location`` in eval mode, or None where this
    module does not reproduce it exactly (then load it through transformers): see the module doc."""
    folder = Path(location)
    config = _config(folder) if folder.is_dir() else None
    if config is None:
        return None
    weights = _weights(folder)
    tokenizer = _tokenizer(folder)
    if weights is None or tokenizer is None:
        return None
    model = PlainBert(config)  # a folder without pooler weights: transformers draws one (or refuses, for pooler)
    wanted = model.state_dict()
    if set(weights) != set(wanted) or any(weights[k].shape != wanted[k].shape for k in wanted):
        return None
    model.load_state_dict(weights, assign=True)  # the loaded tensors become the parameters, uncopied
    return model.eval(), tokenizer
