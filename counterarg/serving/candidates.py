"""``counterarg rank``'s work: where its candidates come from, their embeddings, one new argument ranked.

A :class:`CandidateSource` says where the candidates are, as rank's flags do:

* a corpus split's counters (``corpus``, default the checkpoint's; ``split``): each distinct text once
  (debates filed under several themes repeat counters), its copies named in its source. With a
  frozen encoder their pooled outputs come from the feature cache training built
  (inference.cached_pooled), so only the heads run; else they are encoded;
* a text file, one candidate per line, or a ``.jsonl`` file (``field``): encoded, and cached by the
  checkpoint's weights and the texts (inference.candidate_embeddings);
* a ``.npy`` of similarity embeddings from ``counterarg embed`` with the texts it was made from
  (``texts``): ranked as given; it holds no encoder output, so only a scorer without the classifier
  can rank it.

:func:`rank_text` ranks one argument against them the way the checkpoint's config says
(biencoder.BiEncoder.rank). The command line only parses the flags and prints the :class:`Ranking`.
Bad input is a ConfigError naming the file or flag.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..config import ConfigError
from ..data.inputs import MAX_CANDIDATES_BYTES, read_input_text, read_texts
from ..model.over_corpus import OverCorpus, over_corpus
from .inference import cached_pooled, candidate_embeddings

if TYPE_CHECKING:
    from ..model.biencoder import BiEncoder


@dataclass(frozen=True)
class CandidateSource:
    """Where rank's candidates are: ``path`` (a text, ``.jsonl`` or ``.npy`` file; None: the counters of
    ``split`` of ``corpus``, default the model's corpus), ``texts`` (the texts a ``.npy`` was made
    from), ``field`` (the text field of a ``.jsonl`` file)."""

    path: str | None = None
    texts: str | None = None
    field: str = "text"
    corpus: str | None = None
    split: str = "test"


@dataclass(frozen=True)
class Candidates:
    """The candidates read from a source: their texts, where each is from (``file:line``, or a corpus
    file and its copies), the similarity embeddings a ``.npy`` gave (``given`` ``[C, d]``) or the corpus
    they are counters of (``base``), else neither."""

    texts: list[str]
    sources: list[str]
    given: np.ndarray | None = None
    base: OverCorpus | None = None


@dataclass(frozen=True)
class Ranking:
    """One argument ranked: the best ``ids`` (index ``candidates.texts``) with their ``scores``, best
    first (NaN past the scorer's ``rerank_k``); ``how`` the candidates' embeddings were had
    ("from the feature cache", "from the .npy", "from cache", "encoded"); ``seconds`` to embed and rank."""

    candidates: Candidates
    ids: np.ndarray
    scores: np.ndarray
    how: str
    seconds: float


def read_candidates(model: BiEncoder, source: CandidateSource) -> Candidates:
    """The candidates of ``source`` for ``model`` (a ``.npy``'s width checked against its similarity space)."""
    if not source.path:
        return _corpus_counters(model, source)
    path = Path(source.path)
    if path.suffix == ".npy":
        return _npy(model, path, source)
    if path.suffix == ".jsonl":
        texts = read_texts(path, source.field, MAX_CANDIDATES_BYTES, "candidates file")
        return Candidates(texts, [f"{path}:{i + 1}" for i in range(len(texts))])
    lines = read_input_text(path, "candidates file", MAX_CANDIDATES_BYTES).splitlines()
    numbered = [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]
    if not numbered:
        raise ConfigError(f"candidates file {path} holds no non-empty lines")
    return Candidates([c for _, c in numbered], [f"{path}:{n}" for n, _ in numbered])  # the file's own line numbers


def _corpus_counters(model: BiEncoder, source: CandidateSource) -> Candidates:
    config = model.config.replace(corpus=source.corpus) if source.corpus else model.config
    base = over_corpus(config, device=model.device, announce=False)  # rank's output is data: nothing said
    split = base.corpus.split(source.split)
    copies: dict[str, list[str]] = {}  # each distinct counter text once (debates filed under several themes)
    for p in split.pairs:
        copies.setdefault(p.counter.text, []).append(p.counter.source)
    sources = [src[0] + (f" (and {len(src) - 1} verbatim copies)" if len(src) > 1 else "") for src in copies.values()]
    return Candidates(list(copies), sources, base=base)


def _npy(model: BiEncoder, path: Path, source: CandidateSource) -> Candidates:
    if not source.texts:
        raise ConfigError(
            f"--candidates {path} is a .npy of embeddings: give the texts it was made from "
            "with --candidate-texts FILE (the --input of counterarg embed)"
        )
    texts = read_texts(source.texts, source.field, what="--candidate-texts file")
    try:
        s = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--candidates {path} is not a readable .npy file: {e}") from None
    sim_dim = model.heads.sim_dim  # 0 in the config means the encoder width; the heads know it
    if s.ndim != 2 or s.shape[0] != len(texts) or s.shape[1] != sim_dim:
        raise ConfigError(
            f"--candidates {path} holds an array of shape {s.shape}; expected "
            f"[{len(texts)}, {sim_dim}] for the {len(texts)} texts of {source.texts} "
            "and this checkpoint's similarity space"
        )
    if model.scorer.needs_classifier:
        raise ConfigError(
            f"--candidates {path}: a .npy of similarity embeddings has no encoder outputs for the "
            f"classifier of eval_mode={model.config.eval_mode}: rank the texts themselves, or pass "
            "--set eval_mode=retrieval"
        )
    return Candidates(texts, [f"{source.texts}:{i + 1}" for i in range(len(texts))], given=s)


def embed_candidates(
    model: BiEncoder, candidates: Candidates, *, progress: bool = True
) -> tuple[torch.Tensor | None, torch.Tensor, str]:
    """``(h [C, H] or None, s [C, d], how)``: the candidates' pooled encoder outputs and similarity
    embeddings, from the cheapest place that has them (see the module doc)."""
    with torch.no_grad():
        if candidates.base is not None:
            h = cached_pooled(model, candidates.base, candidates.texts)  # frozen encoder: heads only
            if h is not None:
                return h, model.heads.similarity(h), "from the feature cache"
        if candidates.given is not None:
            return None, torch.from_numpy(np.asarray(candidates.given, dtype=np.float32)), "from the .npy"
        h, s, hit = candidate_embeddings(model, candidates.texts, progress=progress)
        return h, s, "from cache" if hit else "encoded"


def rank_text(model: BiEncoder, text: str, candidates: Candidates, k: int, *, progress: bool = True) -> Ranking:
    """The best ``k`` of ``candidates`` for the argument ``text``, scored as ``model``'s config says."""
    t0 = time.perf_counter()
    with torch.no_grad():
        hq, sq = model.embed([text])  # [1, H], [1, d]
        hc, sc, how = embed_candidates(model, candidates, progress=progress)
        ids, scores = model.rank((hq[0], sq[0]), (hc, sc), k=k)
    return Ranking(candidates, ids, scores, how, time.perf_counter() - t0)
