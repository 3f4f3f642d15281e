"""``counterarg export``: a checkpoint as a sentence-transformers folder that leaves the project.

The folder holds the encoder with the checkpoint's weights (Transformer), the pooling the model
was trained with (Pooling; BERT's tanh pooler becomes a Dense layer after [CLS]), and the
similarity head as a Dense layer with identity activation, so ``SentenceTransformer(FOLDER)``
loads offline and its ``encode(texts)`` gives the similarity-space embeddings that
``counterarg embed`` gives. Beside them: the pair classifier's weights
(``pair_classifier.safetensors``), the resolved config (``counterarg_config.json``) and a model
card (``README.md``: data, citation, metrics at the best epoch, the command that made it).
sentence-transformers is the optional extra ``[export]``.
"""

from __future__ import annotations

import importlib
import json
import tempfile
from pathlib import Path
from typing import Literal

import torch

from ..config import ConfigError
from ..core.paths import portable_command, portable_path
from ..model.biencoder import BiEncoder
from ..retrieval.scorers import METRICS, get_scorer

#: eval_metric -> the sentence-transformers SimilarityFunction that ranks alike, declared in the
#: export's config_sentence_transformers.json so ``model.similarity()`` ranks as ``counterarg rank`` does
#: with eval_mode=retrieval (euclidean = negative L2 distance: the nearest candidate scores highest); rerank
#: and fused also reorder the top rerank_k by the pair classifier, which model.similarity() does not.
SIMILARITY_FN: dict[str, Literal["euclidean", "cosine"]] = {"l2": "euclidean", "cosine": "cosine"}
assert set(SIMILARITY_FN) == set(METRICS), "every eval_metric needs its sentence-transformers similarity"

CITATION = """@inproceedings{wachsmuth-etal-2018-retrieval,
  title     = {Retrieval of the Best Counterargument without Prior Topic Knowledge},
  author    = {Wachsmuth, Henning and Syed, Shahbaz and Stein, Benno},
  booktitle = {Proceedings of the 56th Annual Meeting of the Association for Computational Linguistics},
  year      = {2018},
  pages     = {241--251},
}"""


def _modules(model: BiEncoder, hf_dir: Path) -> list:
    try:
        from sentence_transformers.sentence_transformer import modules as st
    except ImportError:  # sentence-transformers 5.x: the same classes, where 6.x only keeps a deprecated alias
        st = importlib.import_module("sentence_transformers.models")
    cfg = model.config
    model.encoder.save_pretrained(hf_dir)
    model.tokenizer.save_pretrained(hf_dir)
    mods = [st.Transformer(str(hf_dir), max_seq_length=cfg.max_length)]
    if cfg.pooling == "pooler":
        mods.append(st.Pooling(model.hidden, pooling_mode="cls"))
        pooler = model.encoder.pooler.dense
        mods.append(
            st.Dense(
                model.hidden,
                model.hidden,
                activation_function=torch.nn.Tanh(),
                init_weight=pooler.weight.detach().cpu().clone(),
                init_bias=pooler.bias.detach().cpu().clone(),
            )
        )
    else:
        mods.append(st.Pooling(model.hidden, pooling_mode=cfg.pooling))
    w, b = model.similarity_as_affine()
    mods.append(
        st.Dense(model.hidden, model.heads.sim_dim, activation_function=torch.nn.Identity(), init_weight=w, init_bias=b)
    )
    return mods


def _best(history: list[dict], metric: str) -> dict | None:
    from ..evaluation.selection import best_row

    return best_row(history, metric)


def run_history(model: BiEncoder, checkpoint: Path) -> list[dict]:
    """Every epoch row of the run the checkpoint comes from: its run's ``metrics.jsonl`` (beside a
    ``counterarg train`` checkpoint, in ``run/`` beside a sweep trial's) when it holds the
    checkpoint's epochs, else the checkpoint's own history (which ends at the checkpoint's epoch)."""
    for f in (checkpoint.parent / "metrics.jsonl", checkpoint.parent / "run" / "metrics.jsonl"):
        try:
            rows = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, ValueError):
            continue
        epochs = [r.get("epoch") for r in rows]
        if rows and all(r.get("epoch") in epochs for r in model.history):
            return rows
    return list(model.history)


def _training_sentence(model: BiEncoder, history: list[dict]) -> str:
    """How many epochs the run trained and which one these weights are (the best, or not)."""
    cfg = model.config
    ran = max([int(r["epoch"]) for r in history if "epoch" in r] + [model.epoch])
    best = _best(history, cfg.select_metric)
    text = f"the run trained {ran} of its {cfg.epochs} epochs; these weights are epoch {model.epoch}"
    if best is None:
        return text
    if int(best["epoch"]) == model.epoch:
        return text + f", its best by `{cfg.select_metric}`"
    return text + f" (its best by `{cfg.select_metric}` was epoch {int(best['epoch'])})"


def _similarity_caveat(cfg) -> str:
    """What ``model.similarity()`` leaves out of this model's own scoring (nothing when its eval_mode ranks
    by distance alone, as retrieval does)."""
    if not get_scorer(cfg.eval_mode).needs_classifier:
        return ", this model's own scoring"
    return (
        f"; this model scores with eval_mode={cfg.eval_mode}, which also reorders the top {cfg.rerank_k} by "
        "the pair classifier below"
    )


def model_card(model: BiEncoder, checkpoint: Path, command: str) -> str:
    """README.md of the exported folder: what it is, the data, the metrics, how it was made. No
    absolute path of the machine that exported it (paths as :func:`counterarg.core.paths.portable_path` shows them)."""
    cfg = model.config
    best = _best(model.history, cfg.select_metric)
    encoder = portable_path(cfg.encoder) if Path(cfg.encoder).expanduser().exists() else cfg.encoder
    corpus = Path(cfg.corpus).name if cfg.corpus else "generated demo corpus"
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        "tags: [counterargument-retrieval, argument-mining, counterarg]",
        "---",
        "",
        "# Counterargument retrieval model (counterarg)",
        "",
        f"Embeds arguments so that a point's best counterargument is its nearest neighbour ({cfg.eval_metric} "
        f"distance in a {model.heads.sim_dim}-d similarity space; `model.similarity()` uses "
        f"{SIMILARITY_FN[cfg.eval_metric]}, ranking as `counterarg rank` does with eval_mode=retrieval"
        f"{_similarity_caveat(cfg)}). Base encoder: `{encoder}` "
        f"({cfg.pooling} pooling, max_length {cfg.max_length}, finetune={cfg.finetune}); trained with the "
        f"`counterarg` project (schedule {cfg.schedule}, seed {cfg.seed}): "
        f"{_training_sentence(model, run_history(model, checkpoint))}.",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        'model = SentenceTransformer("PATH/TO/THIS/FOLDER")',
        's = model.encode(["An argument ...", "A candidate counter ..."])  # similarity-space embeddings',
        "```",
        "",
        "The pair classifier (`pair_classifier.safetensors`, `Linear(3*sim_dim + 3*H, 2)` over "
        '`[s_p, s_c, |s_p-s_c|, h_p, h_c, |h_p-h_c|]`, softmax column 1 = "is the counter") is kept '
        "beside the encoder for reranking; `counterarg_config.json` is the resolved training config.",
        "",
        "## Training data",
        "",
        f"ArguAna Counterargs corpus (`{corpus}`), its training split; model "
        f"selection on validation by `{cfg.select_metric}`. Cite:",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    if best is not None:
        from ..retrieval.metrics import unseen_split
        from ..retrieval.tasks import task_names

        columns = (*task_names(), "mean")
        lines += [
            f"## Metrics (acc@1 at the best epoch, {int(best['epoch'])}; each distinct text counted once)",
            "",
            "| split | view | " + " | ".join(columns) + " |",
            "|---|---|" + "---|" * len(columns),
        ]
        for split in ("validation", "test"):
            for view, prefix in (("all", split), ("unseen", unseen_split(split))):
                keys = [f"{prefix}/{t}/acc@1" for t in columns]
                if all(k in best for k in keys):
                    lines.append(f"| {split} | {view} | " + " | ".join(f"{best[k]:.3f}" for k in keys) + " |")
        weight = f" (fused_w {model.scoring_weight():g}, the model's)" if model.scorer.picks_weight else ""
        how = (
            f"scored with eval_mode={cfg.eval_mode}{weight}, {cfg.eval_metric} distance; "
            "`SentenceTransformer.encode` gives the similarity-space embeddings, i.e. retrieval without the "
            "classifier"
        )
        lines += [
            "",
            f'"unseen": queries whose point and counter texts occur nowhere in the training split; {how}.',
            "",
        ]
    lines += ["## Made by", "", f"`{command}` from the checkpoint `{portable_path(checkpoint)}`.", ""]
    return "\n".join(lines)


def export(checkpoint: str | Path, out: str | Path, *, force: bool = False, command: str = "") -> Path:
    """Write the export folder ``out`` (refusing an existing path unless ``force``); returns it.

    The folder is filled beside ``out`` and swapped in by the project's one folder swap
    (io.atomic_replace_dir, with a ``manifest.json``) under the lock ``.OUT.lock``: a kill or a full
    disk at any moment leaves the previous export whole (a later export completes or rolls back an
    interrupted swap and removes the leftovers).
    """
    from safetensors.torch import save_file

    from ..core.io import atomic_replace_dir, exclusive_lock

    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError('counterarg export needs sentence-transformers: pip install -e ".[export]"') from None
    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to replace it")
    model = BiEncoder.from_checkpoint(checkpoint, device="cpu")

    def fill(tmp: Path) -> None:
        with tempfile.TemporaryDirectory() as hf_dir:
            st = SentenceTransformer(
                modules=_modules(model, Path(hf_dir)),
                device="cpu",
                similarity_fn_name=SIMILARITY_FN[model.config.eval_metric],
            )
            st.save(str(tmp))
        clf = model.heads.classifier
        save_file(
            {"weight": clf.weight.detach().cpu().contiguous(), "bias": clf.bias.detach().cpu().contiguous()},
            str(tmp / "pair_classifier.safetensors"),
        )
        (tmp / "counterarg_config.json").write_text(json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n")
        made_by = portable_command(["counterarg", "export", "--checkpoint", str(checkpoint), "--out", str(out)])
        (tmp / "README.md").write_text(model_card(model, checkpoint, command or made_by))

    out.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out.parent / f".{out.name}.lock", f"export folder {out}"):
        atomic_replace_dir(out, fill)
    return out
