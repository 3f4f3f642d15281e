"""One full training run: the reference method or the default recipe: re-mine hard negatives, train, evaluate, checkpoint, per epoch.

``train(config, out_dir, report)`` is all a caller needs; the Tune adapter (sweep/trainable.py) wraps it and this
module never imports Ray. Every epoch's randomness is derived from (seed, epoch), and a checkpoint
holds the model, the optimizer, the RNG states and the metric history, so a resumed run on CPU gives
the same metrics as an uninterrupted one.

Checkpoints hold tensors and plain data only and are read with ``torch.load(weights_only=True)``,
so a planted ``state.pt`` cannot run code; each checkpoint folder carries a sha256 manifest checked
on load. The run folder is locked while a run writes it, and a checkpoint swap a kill interrupted
is completed or rolled back before anything else happens (io.recover_dir).
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import Config
from .corpus import Corpus, load_corpus
from .features import TextFeatures, TextTable, batch_order
from .io import (MANIFEST, append_jsonl, atomic_replace_dir, atomic_write_text, bad_files, folder_lock,
                 read_manifest, recover_dir, remove_temp_files)
from .loss import LossBatch, total_loss, uses_classifier
from .mining import dedupe_pairs, mine_negatives, mining_telemetry
from .model import EncoderError, Heads, pick_device, set_threads_from_env
from .precision import grad_scaler
from .schedules import random_rate

Report = Callable[[dict, Path], None]
STATE_FILE = "state.pt"
# fields that may differ between a checkpoint and the run resuming it; besides these, the schedule
# fields (schedules.all_fields()): the rate is computed per epoch, so a changed schedule applies from
# the resumed epoch on. lr, encoder_lr and margin change too (Population Based Training's exploit /
# explore): the optimizer's param groups and the loss take the new values (Run.apply_hyperparameters).
RESUMABLE_CHANGES = {"epochs", "patience", "test_every", "eval_training", "device", "cache_dir", "index", "shards",
                     "lr", "encoder_lr", "margin", "precision"}
BEST_DIR = "best"  # beside checkpoint/: the state of the epoch with the best config.select_metric


class TrainingError(RuntimeError):
    """A run that cannot go on: a NaN/inf loss (naming epoch and step), or a checkpoint that does not fit."""


class CheckpointError(TrainingError):
    """A checkpoint that cannot be trusted: unsafe to load, cut short, or failing its sha256 manifest.

    The message names the file and, where a run folder's metrics.jsonl tells it, the last good epoch.
    """


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(f"[counterarg] {msg}", flush=True)


class Run:
    """The pieces of one run, built once from a config: corpus, features, heads, optimizer, pools."""

    def __init__(self, config: Config, *, progress: bool = True, corpus: Corpus | None = None,
                 eval_splits: list[str] | None = None):
        set_threads_from_env()
        self.config, self.progress = config, progress
        self.device = pick_device(config.device)
        self.corpus = corpus or load_corpus(config.corpus)
        if self.corpus.is_demo:  # said even when quiet: results on it mean nothing for ArguAna
            _say(f"no corpus given: using the generated DEMO corpus at {self.corpus.source} "
                 "(pass --corpus PATH for ArguAna)", True)
        _say(f"corpus {self.corpus.source}\n{self.corpus.counts_table()}", progress)
        if self.corpus.skipped:  # said even when quiet: data the user may have meant to include
            shown = ", ".join(self.corpus.skipped[:5]) + (" ..." if len(self.corpus.skipped) > 5 else "")
            _say(f"skipped {len(self.corpus.skipped)} hidden file(s)/folder(s) of the corpus: {shown}", True)
        self.table = TextTable.from_corpus(self.corpus)
        torch.manual_seed(config.seed)
        self.features = TextFeatures(config, self.table, self.device, progress=progress)
        torch.manual_seed(config.seed)
        self.heads = Heads(self.features.hidden, config.sim_dim, config.head).to(self.device)
        groups = [{"params": list(self.heads.parameters()), "lr": config.lr}]
        enc_params = [p for p in self.features.trainable.parameters() if p.requires_grad]
        if enc_params:
            groups.append({"params": enc_params, "lr": config.encoder_lr})
        opt = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt(groups, weight_decay=config.weight_decay)
        self.scaler = grad_scaler(self.features.precision, self.device)  # active at fp16 only
        if eval_splits is None:
            eval_splits = [s for s in ("training", "validation", "test") if s in self.corpus.splits
                           and (s != "training" or config.eval_training)]
        self.eval_splits = eval_splits
        from .tasks import build_pools, seen_texts

        seen = seen_texts(self.corpus.splits.get("training"))
        self.pools = {s: build_pools(self.corpus.split(s), seen) for s in self.eval_splits}
        for s in self.eval_splits:
            _say(self.pools[s].describe(), progress)
        self.ranks: dict[str, dict[str, np.ndarray]] = {}  # per split: the last evaluation's ranks
        self._indexes: dict[str, tuple] = {}
        self.training_pools = build_pools(self.corpus.split("training")) if "training" in self.corpus.splits else None

    # ------------------------------------------------------------------ embeddings
    def embed_split(self, split: str) -> dict[str, torch.Tensor]:
        """h and s for every pair's point and counter of a split (eval mode, no gradients)."""
        ids = self.table.splits[split]
        with torch.no_grad():
            h_p = self.features.embed(ids.point)  # [Q, H]
            h_c = self.features.embed(ids.counter)  # [Q, H]
            return {"h_p": h_p, "h_c": h_c, "s_p": self.heads.similarity(h_p), "s_c": self.heads.similarity(h_c)}

    def mining_space(self, emb: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """Point and counter embeddings as mining sees them: normalised when the model is judged by cosine."""
        s_p, s_c = emb["s_p"], emb["s_c"]  # [N, d] each
        if self.config.eval_metric == "cosine":
            s_p, s_c = torch.nn.functional.normalize(s_p, dim=-1), torch.nn.functional.normalize(s_c, dim=-1)
        return s_p.cpu().numpy(), s_c.cpu().numpy()

    def mine(self, emb: dict[str, torch.Tensor], split: str, rate: float, rng: np.random.Generator):
        """The reference implementation's mining rule over this split's point and counter trees, rebuilt on new embeddings.

        Training mines with the configured backend; its trees are kept across epochs (``rebuild``
        reuses the sharded backend's actors). The validation loss mines with ``exact``: every
        backend returns the same neighbours, and no second set of shard actors is needed.
        """
        ids = self.table.splits[split]
        cfg = self.config
        backend = cfg.index if split == "training" else "exact"
        s_p, s_c = self.mining_space(emb)  # [N, d] each
        if split in self._indexes:
            for index, x in zip(self._indexes[split], (s_p, s_c)):
                index.rebuild(x)
        else:
            from .index import make_index_pair

            self._indexes[split] = make_index_pair(
                backend, s_p, s_c, leaf_size=cfg.leaf_size, shards=cfg.shards, block_size=cfg.block_size,
                device=str(self.device))
        point_index, counter_index = self._indexes[split]
        return mine_negatives(s_p, s_c, rate, rng, point_index=point_index, counter_index=counter_index,
                              point_keys=ids.point, counter_keys=ids.counter, num_negatives=cfg.num_negatives,
                              neg_rank=tuple(cfg.neg_rank), neg_margin=cfg.neg_margin)

    def close(self) -> None:
        """Release index resources (the sharded backend's Ray actors)."""
        for pair in self._indexes.values():
            for index in reversed(pair):
                index.close()
        self._indexes.clear()

    def loss(self, h_p, h_c, h_n, keys):
        """The configured objective (loss.py) plus ``head_reg`` times the head's drift from its start.

        ``h_p``, ``h_c`` [B, H], ``h_n`` [B, K, H]; ``keys`` = text ids (point [B], counter [B], negatives [B, K]).
        """
        c = self.config
        b, k = h_n.shape[:2]
        s_p, s_c = self.heads.similarity(h_p), self.heads.similarity(h_c)  # [B, d] each
        s_n = self.heads.similarity(h_n.reshape(b * k, -1))  # [B*K, d]
        logits_pos = logits_neg = None
        if uses_classifier(c.loss):
            logits_pos = self.heads.classify(s_p, s_c, h_p, h_c)  # [B, 2]
            logits_neg = self.heads.classify(s_p.repeat_interleave(k, 0), s_n, h_p.repeat_interleave(k, 0),
                                             h_n.reshape(b * k, -1)).view(b, k, 2)  # [B, K, 2]
        batch = LossBatch(s_p=s_p, s_c=s_c, s_n=s_n.view(b, k, -1), logits_pos=logits_pos, logits_neg=logits_neg,
                          point_keys=keys[0], counter_keys=keys[1], negative_keys=keys[2])
        total, parts = total_loss(c.loss, batch, c)
        if c.head_reg > 0:
            drift = self.heads.drift()
            total = total + c.head_reg * drift
            parts = {**parts, "head_drift": drift.detach()}
        return total, parts

    # ------------------------------------------------------------------ one step
    def batches(self, tids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The epoch's batches of training rows [steps, batch_size] (features.batch_order); ``tids``
        [N, K] are each row's text ids, whose longest text is the row's length for length buckets."""
        cfg = self.config
        n = len(tids)
        if n < cfg.batch_size:
            raise TrainingError(f"training split has {n} pairs, fewer than batch_size={cfg.batch_size}")
        lengths = self.features.row_lengths(tids) if cfg.length_buckets else None  # [N]
        return batch_order(n, cfg.batch_size, rng, lengths=lengths, buckets=cfg.length_buckets)

    def backward_step(self, total: torch.Tensor) -> None:
        """Gradients of ``total`` and one optimizer step: clipped, and through the fp16 gradient
        scaler (a no-op at fp32/bf16; at fp16 a step whose gradients overflowed is skipped)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self, epoch: int) -> dict:
        cfg = self.config
        t0 = time.perf_counter()
        rate = random_rate(cfg, epoch)
        rng = np.random.default_rng([cfg.seed, epoch])
        emb = self.embed_split("training")
        t_mine = time.perf_counter()
        mined = self.mine(emb, "training", rate, rng)
        t_mine = time.perf_counter() - t_mine
        ids = self.table.splits["training"]
        neg = mined.keys  # [N, K] text ids of each anchor's negatives
        rows_all = dedupe_pairs(ids.point, ids.counter) if cfg.dedupe_pairs else np.arange(len(ids.point))  # [n]
        table = np.column_stack([ids.point[rows_all], ids.counter[rows_all], neg[rows_all]])  # [n, 2 + K]
        batches = rows_all[self.batches(table, rng)]  # [steps, B] training rows, drop_last
        steps = len(batches)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout stream of this epoch
        self.heads.train()
        self.features.train()
        sums: dict[str, float] = {"loss": 0.0}
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not self.progress,
                   unit="step", leave=False, mininterval=1.0)
        for step in bar:
            rows = batches[step]
            b = len(rows)
            keys = (ids.point[rows], ids.counter[rows], neg[rows])  # [B], [B], [B, K]
            tids = torch.from_numpy(np.concatenate([keys[0], keys[1], keys[2].reshape(-1)]))  # [(2+K)B]
            h = self.features(tids)  # [(2+K)B, H]
            h_p, h_c, h_n = h[:b], h[b : 2 * b], h[2 * b :].view(b, -1, h.shape[1])  # [B, H], [B, H], [B, K, H]
            total, parts = self.loss(h_p, h_c, h_n, tuple(torch.as_tensor(x, device=self.device) for x in keys))
            if not torch.isfinite(total):
                raise TrainingError(f"loss is {total.item()} at epoch {epoch + 1}, step {step + 1} "
                                    f"(lr={cfg.lr}, margin={cfg.margin}); stopping")
            self.backward_step(total)
            sums["loss"] += total.item()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.4f}")
        self.heads.eval()
        self.features.eval()
        tp = self.training_pools
        row = {
            "epoch": epoch + 1,
            **{f"train/{k}": v / steps for k, v in sums.items()},
            "mining/rate": rate,
            "optim/lr": self.optimizer.param_groups[0]["lr"],
            "loss/margin": cfg.margin,
            "mining/hard": mined.n_hard,
            "mining/random": mined.n_random,
            **mining_telemetry(mined, tp.debate, tp.theme, tp.side, *self.mining_space(emb), rows=rows_all),
            "time/mining_s": t_mine,
            "time/train_s": time.perf_counter() - t0,
        }
        return row

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, epoch: int) -> dict:
        """Validation loss (hard negatives, rate 0) plus the eight tasks on the splits due this epoch.

        Leaves each evaluated split's per-query ranks in ``self.ranks`` (for :class:`BestRanks`).
        """
        from .evaluate import evaluate_split

        cfg = self.config
        t0 = time.perf_counter()
        row: dict = {}
        self.ranks = {}
        last = epoch + 1 == cfg.epochs
        for split in self.eval_splits:
            if split == "test" and not (cfg.test_every and ((epoch + 1) % cfg.test_every == 0 or last)):
                continue
            emb = self.embed_split(split)
            if split == "validation" and len(emb["s_p"]) >= 2:
                mined = self.mine(emb, split, 0.0, np.random.default_rng([cfg.seed, epoch, 7]))
                neg = torch.as_tensor(mined.negatives, device=self.device)  # [Q, K]
                all_h = torch.cat([emb["h_p"], emb["h_c"]])  # [2Q, H]
                ids = self.table.splits[split]
                keys = tuple(torch.as_tensor(x, device=self.device) for x in (ids.point, ids.counter, mined.keys))
                with torch.no_grad():
                    total, _ = self.loss(emb["h_p"], emb["h_c"], all_h[neg], keys)  # all_h[neg]: [Q, K, H]
                row["validation/loss"] = total.item()
            args = (split, self.pools[split], emb["s_p"], emb["s_c"], emb["h_p"], emb["h_c"], self.heads.classify)
            kw = dict(mode=cfg.eval_mode, metric=cfg.eval_metric, rerank_k=cfg.rerank_k, ks=cfg.ks, return_ranks=True)
            with torch.no_grad():
                if cfg.eval_mode == "fused" and cfg.fused_w is None and split == "validation":
                    # the classifier's weight that scores best on the selection metric (smallest on ties)
                    tries = {w: evaluate_split(*args, **kw, fused_w=w) for w in cfg.fused_grid}
                    self.fused_w = max(sorted(tries), key=lambda w: tries[w][0].get(cfg.select_metric, -1.0))
                    row["eval/fused_w"] = self.fused_w
                    metrics, ranks = tries[self.fused_w]
                else:
                    metrics, ranks = evaluate_split(*args, **kw, fused_w=self.current_fused_w())
            row.update(metrics)
            self.ranks[split] = {t: r.cpu().numpy().astype(np.int32) for t, r in ranks.items()}
        row["time/eval_s"] = time.perf_counter() - t0
        return row

    def current_fused_w(self) -> float:
        """The fused weight in force: the config's, else the last one picked on validation (0 before)."""
        if self.config.fused_w is not None:
            return self.config.fused_w
        return getattr(self, "fused_w", 0.0)

    # ------------------------------------------------------------------ state
    def state(self, epoch: int, history: list[dict]) -> dict:
        return {
            "epoch": epoch,
            "config": self.config.to_dict(),
            "heads": self.heads.state_dict(),
            "encoder": self.features.trainable.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),  # {} unless fp16
            "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_state_out(), "python": random.getstate()},
            "history": _plain(history),
        }

    def load_state(self, state: dict) -> None:
        try:
            self.heads.load_state_dict(state["heads"])
            self.features.trainable.load_state_dict(state["encoder"])
        except RuntimeError as e:
            raise TrainingError(f"checkpoint does not fit this model (encoder {self.config.encoder!r}): "
                                f"{str(e).splitlines()[0]}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.apply_hyperparameters()
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(_numpy_state_in(state["rng"]["numpy"]))
        random.setstate(state["rng"]["python"])


    def apply_hyperparameters(self) -> None:
        """Set the optimizer's learning rates from the config (a checkpoint's optimizer state holds
        the old ones); the margin and the rate are read from the config every step and epoch."""
        lrs = [self.config.lr, self.config.encoder_lr]
        for group, lr in zip(self.optimizer.param_groups, lrs):  # heads, then encoder layers
            group["lr"] = lr


class BestRanks:
    """Per-query ranks of a run's best epoch (by ``config.select_metric``), kept in its checkpoint.

    A sweep's significance tests compare strategies query by query at each trial's best epoch; the
    rows in ``metrics.jsonl`` hold only means, and Tune keeps only the last checkpoints, so every
    checkpoint carries the ranks of the best epoch so far in ``best_ranks.npz`` (plain arrays, no
    pickle): ``epoch``, ``{split}/{task}`` ``[Q]`` int ranks, and ``{split}/unseen`` ``[Q]`` bool.
    The best epoch is the earliest with the highest ``select_metric`` (:func:`counterarg.selection.best_row`).
    """

    FILE = "best_ranks.npz"

    def __init__(self, metric: str):
        self.metric = metric
        self.value: float | None = None
        self.arrays: dict[str, np.ndarray] = {}

    def update(self, row: dict, ranks: dict[str, dict[str, np.ndarray]], pools: dict) -> bool:
        """Take this epoch's ranks if ``row`` beats the best so far; True if it did."""
        v = row.get(self.metric)
        if v is None or not math.isfinite(v) or (self.value is not None and v <= self.value):
            return False
        self.value = float(v)
        self.arrays = {"epoch": np.array(int(row["epoch"]))}
        for split, by_task in ranks.items():
            for task, r in by_task.items():
                self.arrays[f"{split}/{task}"] = r
            if pools[split].unseen is not None:
                self.arrays[f"{split}/unseen"] = pools[split].unseen
        return True

    def save(self, folder: Path) -> None:
        if self.arrays:
            with open(folder / self.FILE, "wb") as f:
                np.savez(f, **self.arrays)

    def load(self, folder: str | Path, history: list[dict]) -> None:
        """Restore from a checkpoint folder and its history (the best value is recomputed from it)."""
        from .selection import best_row

        best = best_row(history, self.metric)
        path = Path(folder) / self.FILE
        if best is None or not path.exists():
            return
        self.value = float(best[self.metric])
        with np.load(path, allow_pickle=False) as z:
            self.arrays = {k: z[k] for k in z.files}


def read_best_ranks(folder: str | Path) -> dict[str, np.ndarray] | None:
    """The ``best_ranks.npz`` arrays of a checkpoint folder, or None if it has none."""
    path = Path(folder) / BestRanks.FILE
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}

def _numpy_state_out() -> dict:
    """numpy's global RNG state as tensors and numbers (no ndarray: loadable with weights_only=True)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def _numpy_state_in(saved) -> tuple:
    if isinstance(saved, dict):
        return (saved["name"], saved["keys"].numpy().astype(np.uint32), saved["pos"], saved["has_gauss"],
                saved["gauss"])
    return saved  # a checkpoint written before the state was stored as a tensor


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


def _legacy_numpy_types() -> list:
    """What checkpoints written before the tensor-only format need: numpy arrays and scalars only.

    ``_reconstruct``/``scalar`` rebuild an array or scalar from its dtype and bytes and call nothing else.
    """
    core = getattr(np, "_core", None) or np.core
    types = [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype]
    types += [type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64, np.float32, np.bool_)]
    return types


def _last_good_epoch(folder: Path) -> str:
    """'epoch N (metrics.jsonl)' from the run folder above a checkpoint, for error messages."""
    metrics = folder.parent / "metrics.jsonl"
    try:
        lines = [ln for ln in metrics.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return f"the last epoch recorded in {metrics} is {int(json.loads(lines[-1])['epoch'])}"
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return f"no epoch is recorded beside it ({metrics} is missing or empty)"


def read_checkpoint(folder: str | Path) -> dict:
    """Load a checkpoint folder's state safely, or raise :class:`CheckpointError` naming the file.

    Only tensors and plain data are unpickled (``weights_only=True``); the sha256 manifest written
    with the checkpoint is checked first, so a bit flip or a cut-short file is named, not loaded.
    """
    path = Path(folder)
    f = path / STATE_FILE if path.is_dir() else path
    if not f.exists():
        raise TrainingError(f"no checkpoint at {path} (expected {STATE_FILE}; a run's checkpoint is OUT/checkpoint)")
    manifest = read_manifest(f.parent)
    if manifest is not None:
        bad = bad_files(f.parent, manifest)
        if bad:
            raise CheckpointError(
                f"checkpoint file(s) {', '.join(str(f.parent / b) for b in bad)} fail their sha256 check "
                f"against {f.parent / MANIFEST} (checkpoint of epoch {manifest.get('epoch', '?')}): the file was "
                f"damaged after it was written; {_last_good_epoch(f.parent)}. Restore the folder from a copy, "
                "or move it away and train again")
    try:
        with torch.serialization.safe_globals(_legacy_numpy_types()):
            state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure to unpickle becomes one named error
        text = str(e)
        if "Weights only load failed" in text or "Unsupported global" in text:
            first = next((ln.strip() for ln in text.splitlines() if "Unsupported global" in ln), "")
            raise CheckpointError(f"refusing to load {f}: it holds objects other than tensors and plain data, "
                                  f"which could run code when loaded ({first or type(e).__name__}); "
                                  "only checkpoints written by counterarg are accepted") from None
        raise CheckpointError(f"cannot read checkpoint {f}: {type(e).__name__}: {text.splitlines()[0] if text else ''} "
                              f"(cut short or not a checkpoint); {_last_good_epoch(f.parent)}") from None
    if not isinstance(state, dict) or not {"epoch", "config", "heads", "history"} <= set(state):
        raise CheckpointError(f"{f} is not a counterarg checkpoint (no epoch/config/heads/history)")
    return state


def check_resumable(config: Config, saved: dict, source: Path) -> None:
    from .schedules import all_fields

    allowed = RESUMABLE_CHANGES | set(all_fields())
    defaults = Config().to_dict()  # a field newer than the checkpoint: it trained with its default
    diffs = {k: (saved.get(k, defaults[k]), v) for k, v in config.to_dict().items()
             if k not in allowed and saved.get(k, defaults[k]) != v}
    if diffs:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(diffs.items()))
        raise TrainingError(f"checkpoint {source} was made with a different config ({detail})")


def resumed_changes(config: Config, saved: dict) -> str:
    """``rate 0.8 -> 0.6, lr 0.001 -> 0.0008``: the training fields a resume changed ('' if none)."""
    from .schedules import all_fields

    now = config.to_dict()
    keys = [k for k in (*all_fields(), "lr", "encoder_lr", "margin") if k in saved and saved[k] != now[k]]
    return ", ".join(f"{k} {saved[k]!r} -> {now[k]!r}" for k in keys)


def zero_shot_split(run: "Run", split: str) -> dict[str, float]:
    """The untrained encoder on one split: its pooled output ranked by cosine (both views)."""
    from .evaluate import evaluate_split

    emb = run.embed_split(split)
    with torch.no_grad():
        return evaluate_split(split, run.pools[split], emb["h_p"], emb["h_c"], mode="retrieval", metric="cosine",
                              ks=run.config.ks)


def zero_shot_metrics(config: Config, splits: tuple[str, ...] = ("validation", "test"),
                      progress: bool = False) -> dict[str, float]:
    """The baseline every trained model is compared with: the frozen encoder's pooled output with
    cosine retrieval, on ``splits`` of ``config``'s corpus, from the (pooled) feature cache."""
    cfg = config.replace(finetune="none")
    corpus = load_corpus(cfg.corpus)
    run = Run(cfg, progress=progress, corpus=corpus, eval_splits=[s for s in splits if s in corpus.splits])
    out: dict[str, float] = {}
    for split in run.eval_splits:
        out.update(zero_shot_split(run, split))
    run.close()
    return out


def prepare_features(config: Config, *, progress: bool = True) -> None:
    """Build the on-disk feature cache for ``config`` (a sweep driver calls this before its trials)."""
    corpus = load_corpus(config.corpus)
    table = TextTable.from_corpus(corpus)
    TextFeatures(config, table, pick_device(config.device), progress=progress)


def train(
    config: Config,
    out_dir: str | Path,
    report: Report | None = None,
    resume_from: str | Path | None = None,
    progress: bool = True,
    resume_latest: bool = False,
) -> list[dict]:
    """Train ``config.epochs`` epochs into ``out_dir``; returns the per-epoch metric rows.

    Writes ``config.json``, appends a row per epoch to ``metrics.jsonl`` and replaces ``checkpoint/``
    atomically after each epoch, then calls ``report(row, checkpoint_dir)``; ``best/`` beside it holds
    the epoch with the highest ``config.select_metric`` (earliest on ties), and with ``patience`` > 0
    the run stops once that many epochs pass without a new best. ``resume_from`` is a
    checkpoint folder; the run continues at the epoch after it. ``resume_latest`` continues from
    ``out_dir/checkpoint`` when there is one (after repairing an interrupted swap), else starts fresh.
    The folder is locked for the whole run (:class:`~counterarg.io.FolderLockedError` for a second writer).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):
        for line in recover_dir(out / "checkpoint") + remove_temp_files(out):
            _say(line, True)  # said even when quiet: the folder was changed
        if resume_latest and resume_from is None:
            if (out / "checkpoint").exists():
                resume_from = out / "checkpoint"
            elif _recorded_epochs(out):  # starting fresh would empty metrics.jsonl
                raise TrainingError(f"--resume: {out / 'metrics.jsonl'} holds {_recorded_epochs(out)} epoch row(s) "
                                    f"but {out} has no checkpoint to continue from; nothing was changed. Move the "
                                    "folder away to start again, or restore its checkpoint/")
            else:
                _say(f"--resume: no checkpoint in {out}, starting fresh", True)
        return _train_locked(config, out, report, resume_from, progress)


def _recorded_epochs(out: Path) -> int:
    try:
        return sum(1 for ln in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if ln.strip())
    except OSError:
        return 0


def _train_locked(config: Config, out: Path, report: Report | None, resume_from, progress: bool) -> list[dict]:
    history: list[dict] = []
    start = 0
    saved = None
    if resume_from is not None:
        saved = read_checkpoint(resume_from)
        check_resumable(config, saved["config"], Path(resume_from))
        start, history = saved["epoch"], list(saved["history"])
        if start > config.epochs:
            raise TrainingError(f"checkpoint {resume_from} already holds {start} epochs, more than epochs="
                                f"{config.epochs}; nothing to train (config.json and metrics.jsonl left as they are). "
                                f"Pass --epochs {start} or more")
    try:
        run = Run(config, progress=progress)
    except EncoderError as e:
        raise TrainingError(str(e)) from None
    if "training" not in run.corpus.splits:
        raise TrainingError(f"corpus {run.corpus.source} has no training split")
    if saved is not None:
        run.load_state(saved)
        changed = resumed_changes(config, saved["config"])
        _say(f"resumed from {resume_from} after epoch {start}"
             + (f" with {changed}" if changed else ""), progress)
    config.save(out / "config.json")
    metrics_path = out / "metrics.jsonl"
    atomic_write_text(metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))
    ckpt = out / "checkpoint"
    best = BestRanks(config.select_metric)
    if saved is not None:
        best.load(resume_from, history)
    try:
        _epochs(run, config, start, history, ckpt, metrics_path, report, progress, best)
    finally:
        run.close()
    return history


def _epochs(run: Run, config: Config, start: int, history: list[dict], ckpt: Path,
            metrics_path: Path, report: Report | None, progress: bool, best: BestRanks) -> None:
    from .selection import best_row

    for epoch in range(start, config.epochs):
        top = best_row(history, config.select_metric)
        if config.patience and top is not None and epoch - top["epoch"] >= config.patience:
            _say(f"early stop after epoch {epoch}: {config.select_metric} has not improved for "
                 f"{config.patience} epochs (best {top[config.select_metric]:.4f} at epoch {top['epoch']}; "
                 f"its state is in {ckpt.parent / BEST_DIR})", progress)
            break
        t0 = time.perf_counter()
        row = run.train_epoch(epoch)
        row.update(run.evaluate(epoch))
        row["time/epoch_s"] = time.perf_counter() - t0
        for k, v in row.items():
            if isinstance(v, float) and not math.isfinite(v) and not k.startswith("time/"):
                raise TrainingError(f"metric {k} is {v} at epoch {epoch + 1}")
        if config.patience and config.select_metric not in row:
            raise TrainingError(f"patience={config.patience} selects on {config.select_metric!r}, which epoch "
                                f"{epoch + 1} did not report (has the corpus a validation split?)")
        history.append(row)
        improved = best.update(row, run.ranks, run.pools)
        top = best_row(history, config.select_metric)
        if top is not None:
            row["select/best_epoch"] = top["epoch"]
        state = run.state(epoch + 1, history)

        def fill(folder: Path) -> None:
            torch.save(state, folder / STATE_FILE)
            config.save(folder / "config.json")
            best.save(folder)

        atomic_replace_dir(ckpt, fill, epoch=epoch + 1)
        if improved:
            atomic_replace_dir(ckpt.parent / BEST_DIR, fill, epoch=epoch + 1)
        append_jsonl(metrics_path, row)
        if progress:
            _say(_epoch_line(row), True)
        if report is not None:
            report(row, ckpt)


def _epoch_line(row: dict) -> str:
    parts = [f"epoch {row['epoch']}", f"loss {row['train/loss']:.4f}", f"rate {row['mining/rate']:.2f}",
             f"hard {row['mining/hard']} random {row['mining/random']}"]
    for key in ("validation/loss", "validation/mean/acc@1", "validation_unseen/mean/acc@1", "test/mean/acc@1",
                "test_unseen/mean/acc@1"):
        if key in row:
            parts.append(f"{key} {row[key]:.4f}")
    parts.append(f"{row['time/epoch_s']:.1f}s")
    return " | ".join(parts)
