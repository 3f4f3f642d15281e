"""Text ids -> pooled encoder output ``h`` [B, H]: the three feature modes behind one interface.

``finetune`` decides how much of the encoder trains, and with it what is cached per unique text
(data/feature_cache.py) and what a training step runs:

* ``none`` -> :class:`PooledFeatures`: the frozen encoder's pooled output, computed once and cached;
* ``top:N`` -> :class:`HiddenStateFeatures`: the hidden states that enter the first trainable layer
  are cached; a step runs the top N layers (and the pooler) over them;
* ``all`` -> :class:`EncoderFeatures`: only the token ids are cached; a step runs the whole encoder.

Training, evaluation and ``prepare_features`` use the interface of :class:`TextFeatures` only
(``forward``/``embed`` by text id, token lengths, trainable parameters, checkpoint state), built by
:func:`make_features`; rank, embed and export put a checkpoint's trained part into a whole encoder
through :meth:`TextFeatures.load_into_encoder` of the mode (:func:`feature_class`).

The caches are built at fp32 whatever ``precision`` says: they are made once and shared by every
precision (a ``top:N`` cache of ArguAna is 1.7 GB), so their key holds no precision. Training and
the per-epoch embedding passes run the trainable layers at the configured precision.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..config import CACHE, Config, fields_with
from ..data.corpus import TextTable
from ..data.feature_cache import folder_for, load_or_build
from ..nn.encoder import (
    BertLike,
    clip_texts,
    encode_texts,
    encoder_fingerprint,
    hidden_states,
    load_encoder,
    pool,
    run_layers,
    split_layer,
)
from ..nn.precision import autocast, run_precision


class TextFeatures(nn.Module, ABC):
    """Text ids -> pooled encoder output h [B, H]; holds whatever part of the encoder trains.

    ``trainable`` (a ModuleDict) is that part: its state is the checkpoint's ``encoder`` entry.
    """

    kind: str  # the cache kind: pooled | hidden | tokens
    trains_encoder: bool = True  # False: training reads fixed vectors
    trainable: nn.ModuleDict  # the part of the encoder that trains (set by the mode)

    def __init__(self, config: Config, device: torch.device):
        super().__init__()
        self.config, self.device = config, device
        self.precision = run_precision(config.precision, device)  # fp32 | bf16 | fp16
        self.hidden = 0  # H, set by the mode

    # ------------------------------------------------------------------ the cache
    @classmethod
    def cache_key(cls, config: Config) -> dict:
        """What besides the encoder, max_length and the texts changes this mode's cached arrays."""
        return {}

    @classmethod
    @abstractmethod
    def build_cache(
        cls, folder: Path, config: Config, table: TextTable, model, tokenizer, *, device: torch.device, progress: bool
    ) -> None:
        """Write this mode's arrays for every text of ``table`` into ``folder`` (``.npy`` files)."""

    # ------------------------------------------------------------------ features
    @abstractmethod
    def forward(self, tids: torch.Tensor) -> torch.Tensor:  # [B] -> [B, H]
        """h for text ids, with gradients through the trainable part."""

    @abstractmethod
    def embed(self, tids: np.ndarray, batch_size: int | None = None) -> torch.Tensor:
        """h for many text ids without gradients, in eval mode (dropout off): [U', H]."""

    @abstractmethod
    def text_lengths(self, tids: np.ndarray) -> np.ndarray:
        """Token count of each text id (any shape -> the same shape)."""

    def row_lengths(self, tids: np.ndarray) -> np.ndarray:
        """Token count of each training row: the longest of its texts. tids [N, K] -> [N]."""
        return self.text_lengths(np.asarray(tids)).max(axis=1)

    # ------------------------------------------------------------------ training and checkpoints
    def trainable_parameters(self) -> list[nn.Parameter]:
        """The encoder parameters the optimizer updates (none for a frozen encoder)."""
        return [p for p in self.trainable.parameters() if p.requires_grad]

    def checkpoint_state(self) -> dict:
        """The trained part's weights, as a checkpoint's ``encoder`` entry."""
        return self.trainable.state_dict()

    def load_checkpoint_state(self, state: dict) -> None:
        self.trainable.load_state_dict(state)

    @staticmethod
    @abstractmethod
    def load_into_encoder(model: BertLike, trained: dict, config: Config) -> None:
        """Put a checkpoint's ``encoder`` entry of this mode into a whole encoder (rank, embed, export)."""


class PooledFeatures(TextFeatures):
    """``finetune=none``: the frozen encoder's pooled output of every text, from the cache."""

    kind = "pooled"
    trains_encoder = False
    pooled: torch.Tensor  # [U, H] a buffer (register_buffer below)

    def __init__(self, config: Config, table: TextTable, device: torch.device, *, progress: bool = True):
        super().__init__(config, device)
        model = tokenizer = None
        if config.pooling == "pooler":  # the pooler check needs the loaded weights
            model, tokenizer = load_encoder(config.encoder, config.pooling)
        inputs = cached_inputs(config, table, device=device, progress=progress, model=model, tokenizer=tokenizer)
        self.register_buffer("pooled", torch.from_numpy(np.array(inputs["pooled"])).to(device), persistent=False)
        self.hidden = self.pooled.shape[1]
        self.trainable = nn.ModuleDict()

    @classmethod
    def cache_key(cls, config: Config) -> dict:
        return {"pooling": config.pooling}

    @classmethod
    def build_cache(cls, folder, config, table, model, tokenizer, *, device, progress) -> None:
        feats = encode_texts(
            model,
            tokenizer,
            table.texts,
            pooling=config.pooling,
            max_length=config.max_length,
            batch_size=config.embed_batch_size,
            device=device,
            progress=progress,
            desc="caching features",
        )  # [U, H]
        np.save(folder / "pooled.npy", feats)

    def forward(self, tids: torch.Tensor) -> torch.Tensor:  # [B] -> [B, H]
        return self.pooled[tids.to(self.device)]

    def embed(self, tids: np.ndarray, batch_size: int | None = None) -> torch.Tensor:
        return self.pooled[torch.as_tensor(tids, device=self.device)]  # [U', H]

    def text_lengths(self, tids: np.ndarray) -> np.ndarray:
        raise ValueError("finetune=none trains on cached pooled vectors: its texts have no lengths here")

    @staticmethod
    def load_into_encoder(model: BertLike, trained: dict, config: Config) -> None:
        """Nothing trained: the encoder as loaded is the model."""


class _TokenFeatures(TextFeatures):
    """A mode that runs encoder layers per batch: token lengths, padding trimmed per batch, and the
    embedding pass longest first."""

    def _load(self, table: TextTable, progress: bool) -> tuple[BertLike, dict[str, np.ndarray]]:
        """The whole encoder and this mode's cached arrays (built on first use); sets the lengths."""
        model, tokenizer = load_encoder(self.config.encoder, self.config.pooling)
        inputs = cached_inputs(
            self.config, table, device=self.device, progress=progress, model=model, tokenizer=tokenizer
        )
        self.lengths = torch.from_numpy(np.array(inputs["lengths"])).long()  # [U]
        self.progress = progress  # a bar over each embedding pass (a minute or two on CPU for ArguAna)
        self.hidden = model.config.hidden_size
        self._base = [model]  # outside the module tree: only the trainable part is saved
        return model, inputs

    def _mask(self, ids: torch.Tensor) -> tuple[int, torch.Tensor]:
        """``(t, mask [B, t])`` for CPU text ids: the batch's longest text and its attention mask."""
        t = int(self.lengths[ids].max())  # trim padding to the batch's longest text
        return t, (torch.arange(t)[None, :] < self.lengths[ids][:, None]).long().to(self.device)  # [B, T]

    def _pooler(self):
        return self.trainable["pooler"] if "pooler" in self.trainable else getattr(self._base[0], "pooler", None)

    def text_lengths(self, tids: np.ndarray) -> np.ndarray:
        return self.lengths.numpy()[np.asarray(tids)]

    def embed(self, tids: np.ndarray, batch_size: int | None = None) -> torch.Tensor:
        was = self.training
        self.eval()
        bs = batch_size or self.config.embed_batch_size
        tids = np.asarray(tids)
        order = np.argsort(-self.lengths[torch.as_tensor(tids)].numpy(), kind="stable")
        out = torch.empty(len(tids), self.hidden, device=self.device)  # [U', H]
        starts = range(0, len(tids), bs)
        with torch.no_grad():
            for s in tqdm(
                starts,
                desc=f"embedding {len(tids)} texts",
                unit="batch",
                leave=False,
                disable=not self.progress or len(starts) < 8,
            ):
                rows = order[s : s + bs]
                out[torch.as_tensor(rows, device=self.device)] = self(torch.as_tensor(tids[rows]))
        self.train(was)
        return out


class HiddenStateFeatures(_TokenFeatures):
    """``finetune=top:N``: the top N layers (and the pooler) run over cached hidden states."""

    kind = "hidden"

    def __init__(self, config: Config, table: TextTable, device: torch.device, *, progress: bool = True):
        super().__init__(config, device)
        model, inputs = self._load(table, progress)
        self.states = inputs["hidden"]  # memmap [U, T, H] float16
        first = split_layer(model, config.trainable_layers)
        parts: dict[str, nn.Module] = {"layers": nn.ModuleList(model.encoder.layer[first:])}
        if config.pooling == "pooler" and getattr(model, "pooler", None) is not None:
            parts["pooler"] = model.pooler
        self.trainable = nn.ModuleDict(parts)
        self.to(device)

    @classmethod
    def cache_key(cls, config: Config) -> dict:
        return {"top": config.trainable_layers}

    @classmethod
    def build_cache(cls, folder, config, table, model, tokenizer, *, device, progress) -> None:
        layer = split_layer(model, config.trainable_layers)
        states, lengths = hidden_states(
            model,
            tokenizer,
            table.texts,
            layer=layer,
            max_length=config.max_length,
            batch_size=config.embed_batch_size,
            device=device,
            progress=progress,
            desc=f"caching layer-{layer} states",
        )  # [U, T, H], [U]
        np.save(folder / "hidden.npy", states)
        np.save(folder / "lengths.npy", lengths)

    def forward(self, tids: torch.Tensor) -> torch.Tensor:  # [B] -> [B, H]
        ids = tids.cpu()
        t, mask = self._mask(ids)
        rows = np.sort(ids.numpy())
        states = torch.from_numpy(np.asarray(self.states[rows, :t], dtype=np.float32))  # [B, T, H]
        back = torch.from_numpy(np.searchsorted(rows, ids.numpy()))
        states = states[back].to(self.device)  # [B, T, H] in the order asked
        with autocast(self.precision, self.device):
            hidden = run_layers(self._base[0], self.trainable["layers"], states, mask)  # [B, T, H]
        return pool(hidden.float(), mask, self.config.pooling, self._pooler())  # [B, H] fp32

    @staticmethod
    def load_into_encoder(model: BertLike, trained: dict, config: Config) -> None:
        """``layers.<i>.<name>`` -> layer ``first + i`` of the encoder; ``pooler.<name>`` -> its pooler."""
        first = split_layer(model, config.trainable_layers)
        layers: dict[int, dict[str, torch.Tensor]] = {}
        pooler: dict[str, torch.Tensor] = {}
        for k, v in trained.items():
            part, rest = k.split(".", 1)
            if part == "layers":
                i, name = rest.split(".", 1)
                layers.setdefault(int(i), {})[name] = v
            elif part == "pooler":
                pooler[rest] = v
        for i, sd in layers.items():
            model.encoder.layer[first + i].load_state_dict(sd)
        if pooler:
            model.pooler.load_state_dict(pooler)


class EncoderFeatures(_TokenFeatures):
    """``finetune=all``: the whole encoder runs over cached token ids."""

    kind = "tokens"

    def __init__(self, config: Config, table: TextTable, device: torch.device, *, progress: bool = True):
        super().__init__(config, device)
        model, inputs = self._load(table, progress)
        self.input_ids = torch.from_numpy(np.array(inputs["input_ids"])).long()  # [U, T]
        self.trainable = nn.ModuleDict({"encoder": model})
        self.to(device)

    @classmethod
    def build_cache(cls, folder, config, table, model, tokenizer, *, device, progress) -> None:
        enc = tokenizer(
            clip_texts(table.texts, config.max_length),
            truncation=True,
            max_length=config.max_length,
            padding="max_length",
            return_tensors="np",
        )
        np.save(folder / "input_ids.npy", enc["input_ids"].astype(np.int32))
        np.save(folder / "lengths.npy", enc["attention_mask"].sum(1).astype(np.int32))

    def forward(self, tids: torch.Tensor) -> torch.Tensor:  # [B] -> [B, H]
        ids = tids.cpu()
        t, mask = self._mask(ids)
        with autocast(self.precision, self.device):
            out = self.trainable["encoder"](input_ids=self.input_ids[ids, :t].to(self.device), attention_mask=mask)
        hidden = out.last_hidden_state.float()  # [B, T, H] fp32: pooling and heads run in fp32
        return pool(hidden, mask, self.config.pooling, self._pooler())

    @staticmethod
    def load_into_encoder(model: BertLike, trained: dict, config: Config) -> None:
        """``encoder.<name>`` -> the encoder's ``<name>``."""
        model.load_state_dict({k.split(".", 1)[1]: v for k, v in trained.items()})


def feature_class(config: Config) -> type[PooledFeatures | HiddenStateFeatures | EncoderFeatures]:
    """The feature mode of ``config.finetune`` (none, top:N, all)."""
    top = config.trainable_layers
    if top == 0:
        return PooledFeatures
    return EncoderFeatures if top is None else HiddenStateFeatures


def make_features(config: Config, table: TextTable, device: torch.device, *, progress: bool = True) -> TextFeatures:
    """The feature module ``config`` trains with, over the texts of ``table`` (its cache built once)."""
    return feature_class(config)(config, table, device, progress=progress)


def cache_folder(config: Config, table: TextTable) -> tuple[Path, dict]:
    """The cache folder for this config's encoder inputs, and the key that names it: read from the
    fields whose role is ``cache`` alone (the rest at their defaults), so no other field can change it."""
    config = dataclasses.replace(Config(), **{f: getattr(config, f) for f in fields_with(CACHE)})
    mode = feature_class(config)
    key = {
        "kind": mode.kind,
        "weights": encoder_fingerprint(config.encoder),  # by content: folder moves keep the cache
        "max_length": config.max_length,
        "texts": table.fingerprint,
        "n_texts": len(table.texts),
        **mode.cache_key(config),
    }
    return folder_for(key, config.cache_dir), key


def cached_inputs(
    config: Config, table: TextTable, *, device: torch.device, progress: bool = True, model=None, tokenizer=None
) -> dict[str, np.ndarray]:
    """Load (or compute once, under a file lock) the encoder inputs this config trains on."""
    folder, key = cache_folder(config, table)
    mode = feature_class(config)

    def build(tmp: Path) -> None:  # a fresh folder, swapped in as ``folder`` when complete
        nonlocal model, tokenizer
        if model is None:
            model, tokenizer = load_encoder(config.encoder, config.pooling)
        if progress:
            print(
                f"[counterarg] building the {mode.kind} feature cache for {len(table.texts)} unique texts "
                f"-> {folder} (once; later runs load it)",
                flush=True,
            )
        mode.build_cache(tmp, config, table, model, tokenizer, device=device, progress=progress)

    return load_or_build(folder, key, build)
