"""Helpers for tests and smoke runs: a tiny random BERT that loads like any checkpoint."""

from __future__ import annotations

from pathlib import Path


def make_tiny_encoder(folder: str | Path, *, layers: int = 2, hidden: int = 32, seed: int = 0) -> str:
    """Save a randomly initialised BERT with the bert-base-uncased vocabulary into ``folder``.

    The tokenizer comes from the embedded all-MiniLM-L6-v2 package (same vocabulary), so no hub is
    needed. Returns the folder as a string, usable as ``Config.encoder``. A folder made earlier is
    reused only when its files still match the sha256 manifest written with them (a save cut short
    or files changed since are made again).
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from ..core.io import bad_files, read_manifest, write_manifest
    from .encoder import resolve_encoder

    folder = Path(folder)
    manifest = read_manifest(folder)
    if (
        manifest is not None
        and manifest.get("tiny_encoder") == [layers, hidden, seed]
        and not bad_files(folder, manifest)
    ):
        return str(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(resolve_encoder(None))
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=512,
    )
    torch.manual_seed(seed)
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    write_manifest(folder, tiny_encoder=[layers, hidden, seed])
    return str(folder)
