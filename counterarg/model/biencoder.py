"""The trained model's one home: the encoder's features, the heads and how the model scores.

A :class:`BiEncoder` is what training trains and what every command that uses a model loads: the
config fields that define it, the encoder (through a feature mode over a corpus's texts, or whole
for any text), the similarity head and pair classifier (nn.heads.Heads), and its scoring settings: the
scorer of ``eval_mode`` (retrieval/scorers.py) and ``fused_w``, the weight a weight-picking scorer uses, picked
on validation each epoch and kept in the model's state. As tevatron's ``EncoderModel``:
:meth:`BiEncoder.build` makes a fresh model for training, :meth:`BiEncoder.from_checkpoint` loads
one for inference, :meth:`BiEncoder.save` writes a model-only checkpoint. Training's optimizer,
mining and batches are training.trainer.Trainer's; nothing here imports training.

Over a corpus (``table`` given), texts are looked up by id in the feature cache the model trained
with (``evaluate``, training); without, texts go through the whole encoder with the checkpoint's
trained part put in (features.TextFeatures.load_into_encoder), in float32, longest first
(``rank``, ``embed``, ``export``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import Config, ConfigError
from ..data.corpus import TextTable
from ..nn.encoder import EncoderError, encode_texts, load_encoder, pick_device
from ..nn.heads import Heads
from ..retrieval.scorers import Scorer, get_scorer, rank_candidates
from .checkpoint import STATE_FILE, CheckpointError, make_state, read_checkpoint, write_state
from .features import TextFeatures, feature_class, make_features


class BiEncoder:
    """Features or whole encoder + :class:`~counterarg.nn.heads.Heads` + scoring settings; see the module doc."""

    def __init__(
        self,
        config: Config,
        heads: Heads,
        device: torch.device,
        *,
        features: TextFeatures | None = None,
        table: TextTable | None = None,
        encoder=None,
        tokenizer=None,
        trained: dict | None = None,
        fused_w: float | None = None,
        epoch: int = 0,
        history: list[dict] | None = None,
        source: Path | None = None,
    ):
        self.config, self.heads, self.device = config, heads, device
        self.features, self.table = features, table  # over a corpus: texts by id
        self.encoder, self.tokenizer = encoder, tokenizer  # whole encoder: any text
        self._trained = trained or {}  # the trained part of the encoder, when no features hold it
        self.fused_w = fused_w  # the weight picked on validation (None: none picked)
        self.epoch, self.history, self.source = epoch, list(history or []), source

    # ------------------------------------------------------------------ build, load, save
    @classmethod
    def build(cls, config: Config, table: TextTable, device: torch.device, *, progress: bool = True) -> BiEncoder:
        """A fresh model for training over ``table``'s texts: features (their cache built once) and
        heads drawn from ``config.seed``."""
        torch.manual_seed(config.seed)
        features = make_features(config, table, device, progress=progress)
        torch.manual_seed(config.seed)
        heads = Heads(features.hidden, config.sim_dim, config.head).to(device)
        return cls(config, heads, device, features=features, table=table)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        *,
        table: TextTable | None = None,
        progress: bool = False,
        forward_only: bool = False,
    ) -> BiEncoder:
        """The checkpoint's model on this machine (its config less config.MACHINE_FIELDS, which take
        this machine's defaults); over ``table``'s texts when given, else with the whole encoder
        (``forward_only``: one for inference passes only, see nn.encoder.load_encoder)."""
        return cls.from_state(
            read_checkpoint(path),
            device=device,
            table=table,
            progress=progress,
            source=Path(path),
            forward_only=forward_only,
        )

    @classmethod
    def from_state(
        cls,
        state: dict,
        *,
        config: Config | None = None,
        device: str | torch.device = "cpu",
        table: TextTable | None = None,
        progress: bool = False,
        source: Path | None = None,
        forward_only: bool = False,
    ) -> BiEncoder:
        """A checkpoint's model (checkpoint.read_checkpoint) with ``config`` (default: the checkpoint's
        on this machine; a caller changes only scoring and machine fields)."""
        saved = state["model"]
        config = config or Config.from_checkpoint(saved["config"])
        device = pick_device(device) if isinstance(device, str) else device
        features = encoder = tokenizer = None
        if table is not None:
            features = make_features(config, table, device, progress=progress)
            hidden = features.hidden
        else:
            encoder, tokenizer = load_encoder(config.encoder, config.pooling, forward_only=forward_only)
            if saved["encoder"]:  # the feature mode it trained with knows where its trained part goes
                feature_class(config).load_into_encoder(encoder, saved["encoder"], config)
            encoder.to(device).eval()
            hidden = int(encoder.config.hidden_size)
        model = cls(
            config,
            Heads(hidden, config.sim_dim, config.head).to(device),
            device,
            features=features,
            table=table,
            encoder=encoder,
            tokenizer=tokenizer,
            epoch=int(state["epoch"]),
            history=state["history"],
            source=source,
        )
        model.load_state(saved)
        model.eval()
        return model

    def state(self) -> dict:
        """The checkpoint's ``model`` entry: config, heads, the encoder's trained part, ``fused_w``."""
        return {
            "config": self.config.to_dict(),
            "heads": self.heads.state_dict(),
            "encoder": self.trained_state(),
            "fused_w": self.fused_w,
        }

    def trained_state(self) -> dict:
        """The trained part of the encoder (features.TextFeatures.checkpoint_state)."""
        return self.features.checkpoint_state() if self.features is not None else self._trained

    def load_state(self, saved: dict) -> None:
        """Put a checkpoint's ``model`` entry into this model; a checkpoint of another shape is named."""
        try:
            self.heads.load_state_dict(saved["heads"])
            if self.features is not None:
                self.features.load_checkpoint_state(saved["encoder"])
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            if self.features is None:
                raise EncoderError(
                    f"the checkpoint's heads do not fit encoder {self.config.encoder!r} "
                    f"(hidden size {self.hidden}): {first}"
                ) from None
            raise CheckpointError(
                f"checkpoint does not fit this model (encoder {self.config.encoder!r}): {first}"
            ) from None
        self._trained = saved["encoder"] if self.features is None else {}
        self.fused_w = saved["fused_w"]

    def save(self, folder: str | Path) -> Path:
        """A model-only checkpoint folder (``state.pt`` without a trainer part, ``config.json``),
        swapped in whole (io.atomic_replace_dir); :meth:`from_checkpoint` reads it."""
        from ..core.io import atomic_replace_dir

        folder = Path(folder)
        state = make_state(self.epoch, self.history, self.state())

        def fill(tmp: Path) -> None:
            write_state(tmp, state)
            self.config.save(tmp / "config.json")

        atomic_replace_dir(folder, fill, epoch=self.epoch)
        return folder

    def fingerprint(self) -> str:
        """sha256 of the checkpoint's weights file (what the model computes depends on nothing else
        but the config, which is inside it)."""
        if self.source is None:
            raise EncoderError("this model was not loaded from a checkpoint folder; nothing to fingerprint")
        from ..core.io import sha256_file

        return sha256_file(self.source / STATE_FILE if self.source.is_dir() else self.source)

    # ------------------------------------------------------------------ modes
    @property
    def hidden(self) -> int:
        return self.heads.hidden

    def train(self) -> None:
        self.heads.train()
        if self.features is not None:
            self.features.train()

    def eval(self) -> None:
        self.heads.eval()
        if self.features is not None:
            self.features.eval()

    # ------------------------------------------------------------------ embeddings
    def embed_pairs(self, split: str) -> dict[str, torch.Tensor]:
        """h and s for every pair's point and counter of a corpus split (eval mode, no gradients)."""
        if self.features is None or self.table is None:
            raise EncoderError("embed_pairs needs a model built over a corpus (BiEncoder.build or table=)")
        ids = self.table.splits[split]
        with torch.no_grad():
            h_p = self.features.embed(ids.point)  # [Q, H]
            h_c = self.features.embed(ids.counter)  # [Q, H]
            return {"h_p": h_p, "h_c": h_c, "s_p": self.heads.similarity(h_p), "s_c": self.heads.similarity(h_c)}

    @torch.no_grad()
    def encode(self, texts: list[str], *, progress: bool = False, batch_size: int | None = None) -> torch.Tensor:
        """Pooled encoder output ``h`` ``[N, H]`` (float32) of any ``texts``, through the whole encoder."""
        if self.encoder is None:
            raise EncoderError("encode needs the whole encoder: load the model without a table")
        h = encode_texts(
            self.encoder,
            self.tokenizer,
            list(texts),
            pooling=self.config.pooling,
            max_length=self.config.max_length,
            batch_size=batch_size or self.config.embed_batch_size,
            device=self.device,
            progress=progress,
            desc="embedding",
        )
        return torch.from_numpy(h).to(self.device)

    @torch.no_grad()
    def embed(self, texts: list[str], *, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h [N, H], s [N, sim_dim])``: encoder output and its similarity-space embedding."""
        h = self.encode(texts, progress=progress)
        return h, self.heads.similarity(h)

    def similarity_as_affine(self, atol: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
        """The similarity head as ``(W [sim_dim, H], b [sim_dim])`` with ``s = h @ W.T + b``.

        Read off the head itself (its value at 0 and at the unit vectors), so any affine head works;
        a head that is not affine raises :class:`EncoderError` (it cannot be exported as a Dense layer).
        """
        with torch.no_grad():
            eye = torch.eye(self.hidden, device=self.device)  # [H, H]
            b = self.heads.similarity(torch.zeros(1, self.hidden, device=self.device))[0]  # [sim_dim]
            w = (self.heads.similarity(eye) - b).T  # [sim_dim, H]
            x = torch.randn(8, self.hidden, generator=torch.Generator().manual_seed(0)).to(self.device)  # [8, H]
            err = (self.heads.similarity(x) - (x @ w.T + b)).abs().max().item()
        if err > atol * max(1.0, float(x.abs().max())):
            raise EncoderError(
                f"the similarity head is not affine (max deviation {err:.2e}); it cannot be "
                "exported as a sentence-transformers Dense layer"
            )
        return w.cpu(), b.cpu()

    # ------------------------------------------------------------------ scoring
    @property
    def scorer(self) -> Scorer:
        """The :class:`scorers.Scorer` of ``config.eval_mode``."""
        return get_scorer(self.config.eval_mode)

    def scoring_weight(self, strict: bool = False) -> float:
        """The weight the scorer uses: ``config.fused_w`` when set, else the one picked on validation
        (0 before any; with ``strict`` a ConfigError saying to pass one); 0 for a scorer without one."""
        if not self.scorer.picks_weight:
            return 0.0
        if self.config.fused_w is not None:
            return self.config.fused_w
        if self.fused_w is None and strict:
            mode = self.config.eval_mode
            raise ConfigError(
                f"eval_mode={mode}: this checkpoint was not trained with eval_mode={mode}, so no "
                "weight was picked on validation; pass --set fused_w=W"
            )
        return 0.0 if self.fused_w is None else float(self.fused_w)

    def rank(
        self,
        query: tuple[torch.Tensor, torch.Tensor],
        candidates: tuple[torch.Tensor | None, torch.Tensor],
        k: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` candidates for one query, scored as the config says (scorers.rank_candidates):
        ``query = (h [H], s [d])``, ``candidates = (h [C, H] or None, s [C, d])``; ``(ids, scores)``."""
        c = self.config
        (hq, sq), (hc, sc) = query, candidates
        return rank_candidates(
            sq,
            sc,
            hq,
            hc,
            self.heads.classify,
            mode=c.eval_mode,
            metric=c.eval_metric,
            rerank_k=c.rerank_k,
            k=k,
            fused_w=self.scoring_weight(strict=True),
        )
