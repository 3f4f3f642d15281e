"""Corpus → text table → device → model, built one way for everything that uses a model over a corpus.

Training (training.trainer.Trainer), the feature cache a sweep builds before its trials
(training.loop.prepare_features), ``counterarg evaluate``, the zero-shot baseline and ``rank``'s
corpus candidates all start from the same three things: the corpus a config names (loaded, and
said), its table of distinct texts, and the device the config asks for. :func:`over_corpus` makes
them in that order; :class:`OverCorpus` then builds the fresh model, loads a checkpoint's, or builds
the features alone, over that table on that device. A new step of that setup (a thread count, a
check of the corpus) is then made once, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import Config
from ..data.corpus import Corpus, TextTable, load_corpus
from ..nn.encoder import pick_device, set_threads_from_env
from .biencoder import BiEncoder
from .features import TextFeatures, make_features


@dataclass(frozen=True)
class OverCorpus:
    """A corpus, its text table (texts by id, what the feature cache is keyed by) and the device a model
    over them runs on (:func:`over_corpus`)."""

    corpus: Corpus
    table: TextTable
    device: torch.device

    def build(self, config: Config, *, progress: bool = True) -> BiEncoder:
        """A fresh model over the table (biencoder.BiEncoder.build: features, heads from ``config.seed``)."""
        return BiEncoder.build(config, self.table, self.device, progress=progress)

    def load(
        self, state: dict, config: Config | None = None, *, source: Path | None = None, progress: bool = True
    ) -> BiEncoder:
        """A checkpoint's model (model.checkpoint.read_checkpoint's ``state``) over the table, with
        ``config`` (default: the checkpoint's on this machine); ``source`` the folder it was read from."""
        return BiEncoder.from_state(
            state, config=config, device=self.device, table=self.table, progress=progress, source=source
        )

    def features(self, config: Config, *, progress: bool = True) -> TextFeatures:
        """The feature mode of ``config`` over the table: its on-disk cache built when missing."""
        return make_features(config, self.table, self.device, progress=progress)


def over_corpus(
    config: Config,
    *,
    corpus: Corpus | None = None,
    device: str | torch.device | None = None,
    announce: bool = True,
    progress: bool = True,
) -> OverCorpus:
    """``config.corpus`` loaded (or ``corpus``, already loaded), its text table, and ``device`` (default
    ``config.device``; nn.encoder.pick_device) with torch's threads as the environment says
    (``COUNTERARG_THREADS``). With ``announce`` the corpus is said (data.corpus.Corpus.announce: its
    counts with ``progress``, and always that it is the demo corpus); a command whose output is data
    (``rank --json``) passes False. A missing or malformed corpus raises data.corpus.CorpusError."""
    set_threads_from_env()
    corpus = corpus if corpus is not None else load_corpus(config.corpus)
    if announce:
        corpus.announce(progress)
    where = device if device is not None else config.device
    return OverCorpus(corpus, TextTable.from_corpus(corpus), pick_device(where) if isinstance(where, str) else where)
