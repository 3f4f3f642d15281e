"""One full training run of the seed method: re-mine hard negatives, train, evaluate, checkpoint, per epoch.

``train(config, out_dir, report)`` is all a caller needs; the Tune adapter (tune.py) wraps it and this
module never imports Ray. Every epoch's randomness is derived from (seed, epoch), and a checkpoint
holds the model, the optimizer, the RNG states and the metric history, so a resumed run on CPU gives
the same metrics as an uninterrupted one.
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
from .features import TextFeatures, TextTable
from .io import atomic_replace_dir, atomic_write_text, append_jsonl
from .loss import LossBatch, total_loss, uses_classifier
from .mining import dedupe_pairs, mine_negatives, mining_telemetry
from .model import EncoderError, Heads, pick_device, set_threads_from_env
from .schedules import random_rate

Report = Callable[[dict, Path], None]
STATE_FILE = "state.pt"
# fields that may differ between a checkpoint and the run resuming it
RESUMABLE_CHANGES = {"epochs", "patience", "test_every", "eval_training", "device", "cache_dir", "index", "shards"}
BEST_DIR = "best"  # beside checkpoint/: the state of the epoch with the best config.select_metric


class TrainingError(RuntimeError):
    """A run that cannot go on: a NaN/inf loss (naming epoch and step), or a checkpoint that does not fit."""


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
        if eval_splits is None:
            eval_splits = [s for s in ("training", "validation", "test") if s in self.corpus.splits
                           and (s != "training" or config.eval_training)]
        self.eval_splits = eval_splits
        from .tasks import build_pools

        self.pools = {s: build_pools(self.corpus.split(s)) for s in self.eval_splits}
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
        """The seed's mining rule over this split's point and counter trees, rebuilt on new embeddings.

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
        rows_all = dedupe_pairs(ids.point, ids.counter) if cfg.dedupe_pairs else np.arange(len(ids.point))
        n = len(rows_all)
        if n < cfg.batch_size:
            raise TrainingError(f"training split has {n} pairs, fewer than batch_size={cfg.batch_size}")
        perm = rows_all[rng.permutation(n)]
        steps = n // cfg.batch_size  # drop_last, as the seed
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout stream of this epoch
        self.heads.train()
        self.features.train()
        sums: dict[str, float] = {"loss": 0.0}
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not self.progress,
                   unit="step", leave=False, mininterval=1.0)
        for step in bar:
            rows = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            b = len(rows)
            keys = (ids.point[rows], ids.counter[rows], neg[rows])  # [B], [B], [B, K]
            tids = torch.from_numpy(np.concatenate([keys[0], keys[1], keys[2].reshape(-1)]))  # [(2+K)B]
            h = self.features(tids)  # [(2+K)B, H]
            h_p, h_c, h_n = h[:b], h[b : 2 * b], h[2 * b :].view(b, -1, h.shape[1])  # [B, H], [B, H], [B, K, H]
            total, parts = self.loss(h_p, h_c, h_n, tuple(torch.as_tensor(x, device=self.device) for x in keys))
            if not torch.isfinite(total):
                raise TrainingError(f"loss is {total.item()} at epoch {epoch + 1}, step {step + 1} "
                                    f"(lr={cfg.lr}, margin={cfg.margin}); stopping")
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            self.optimizer.step()
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
            "mining/hard": mined.n_hard,
            "mining/random": mined.n_random,
            **mining_telemetry(mined, tp.debate, tp.theme, tp.side, *self.mining_space(emb), rows=rows_all),
            "time/mining_s": t_mine,
            "time/train_s": time.perf_counter() - t0,
        }
        return row

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, epoch: int) -> dict:
        """Validation loss (hard negatives, rate 0) plus the eight tasks on the splits due this epoch."""
        from .evaluate import evaluate_split

        cfg = self.config
        t0 = time.perf_counter()
        row: dict = {}
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
            with torch.no_grad():
                row.update(evaluate_split(
                    split, self.pools[split], emb["s_p"], emb["s_c"], emb["h_p"], emb["h_c"], self.heads.classify,
                    mode=cfg.eval_mode, metric=cfg.eval_metric, rerank_k=cfg.rerank_k, ks=cfg.ks,
                ))
        row["time/eval_s"] = time.perf_counter() - t0
        return row

    # ------------------------------------------------------------------ state
    def state(self, epoch: int, history: list[dict]) -> dict:
        return {
            "epoch": epoch,
            "config": self.config.to_dict(),
            "heads": self.heads.state_dict(),
            "encoder": self.features.trainable.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            "history": history,
        }

    def load_state(self, state: dict) -> None:
        try:
            self.heads.load_state_dict(state["heads"])
            self.features.trainable.load_state_dict(state["encoder"])
        except RuntimeError as e:
            raise TrainingError(f"checkpoint does not fit this model (encoder {self.config.encoder!r}): "
                                f"{str(e).splitlines()[0]}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])


def read_checkpoint(folder: str | Path) -> dict:
    """Load a checkpoint folder's state, with a clear error when it is not one."""
    path = Path(folder)
    f = path / STATE_FILE if path.is_dir() else path
    if not f.exists():
        raise TrainingError(f"no checkpoint at {path} (expected {STATE_FILE}; a run's checkpoint is OUT/checkpoint)")
    return torch.load(f, map_location="cpu", weights_only=False)


def check_resumable(config: Config, saved: dict, source: Path) -> None:
    diffs = {k: (saved.get(k), v) for k, v in config.to_dict().items()
             if k not in RESUMABLE_CHANGES and saved.get(k) != v}
    if diffs:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(diffs.items()))
        raise TrainingError(f"checkpoint {source} was made with a different config ({detail})")


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
) -> list[dict]:
    """Train ``config.epochs`` epochs into ``out_dir``; returns the per-epoch metric rows.

    Writes ``config.json``, appends a row per epoch to ``metrics.jsonl`` and replaces ``checkpoint/``
    atomically after each epoch, then calls ``report(row, checkpoint_dir)``; ``best/`` holds the
    epoch with the highest ``config.select_metric`` (earliest on ties). With ``patience`` > 0 the
    run stops once that many epochs pass without a new best. ``resume_from`` is a checkpoint
    folder; the run continues at the epoch after it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    start = 0
    saved = None
    if resume_from is not None:
        saved = read_checkpoint(resume_from)
        check_resumable(config, saved["config"], Path(resume_from))
        start, history = saved["epoch"], list(saved["history"])
    try:
        run = Run(config, progress=progress)
    except EncoderError as e:
        raise TrainingError(str(e)) from None
    if "training" not in run.corpus.splits:
        raise TrainingError(f"corpus {run.corpus.source} has no training split")
    if saved is not None:
        run.load_state(saved)
        _say(f"resumed from {resume_from} after epoch {start}", progress)
    config.save(out / "config.json")
    metrics_path = out / "metrics.jsonl"
    atomic_write_text(metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))
    ckpt = out / "checkpoint"
    try:
        _epochs(run, config, start, history, ckpt, metrics_path, report, progress)
    finally:
        run.close()
    return history


def best_epoch(history: list[dict], metric: str) -> tuple[int | None, float | None]:
    """(epoch, value) of the highest ``metric`` in ``history`` (earliest on ties); (None, None) if absent."""
    best: tuple[int | None, float | None] = (None, None)
    for row in history:
        v = row.get(metric)
        if v is not None and (best[1] is None or v > best[1]):
            best = (row["epoch"], v)
    return best


def _epochs(run: Run, config: Config, start: int, history: list[dict], ckpt: Path,
            metrics_path: Path, report: Report | None, progress: bool) -> None:
    best, best_value = best_epoch(history, config.select_metric)
    for epoch in range(start, config.epochs):
        if config.patience and best is not None and epoch - best >= config.patience:
            _say(f"early stop after epoch {epoch}: {config.select_metric} has not improved for "
                 f"{config.patience} epochs (best {best_value:.4f} at epoch {best}; state in {ckpt.parent / BEST_DIR})",
                 progress)
            break
        t0 = time.perf_counter()
        row = run.train_epoch(epoch)
        row.update(run.evaluate(epoch))
        row["time/epoch_s"] = time.perf_counter() - t0
        for k, v in row.items():
            if isinstance(v, float) and not math.isfinite(v) and not k.startswith("time/"):
                raise TrainingError(f"metric {k} is {v} at epoch {epoch + 1}")
        value = row.get(config.select_metric)
        if value is None and config.patience:
            raise TrainingError(f"patience={config.patience} selects on {config.select_metric!r}, which epoch "
                                f"{epoch + 1} did not report (has the corpus a validation split?)")
        improved = value is not None and (best_value is None or value > best_value)
        if improved:
            best, best_value = epoch + 1, value
        row["select/best_epoch"] = best
        history.append(row)
        state = run.state(epoch + 1, history)

        def fill(folder: Path) -> None:
            torch.save(state, folder / STATE_FILE)
            config.save(folder / "config.json")

        atomic_replace_dir(ckpt, fill)
        if improved:
            atomic_replace_dir(ckpt.parent / BEST_DIR, fill)
        append_jsonl(metrics_path, row)
        if progress:
            _say(_epoch_line(row), True)
        if report is not None:
            report(row, ckpt)


def _epoch_line(row: dict) -> str:
    parts = [f"epoch {row['epoch']}", f"loss {row['train/loss']:.4f}", f"rate {row['mining/rate']:.2f}",
             f"hard {row['mining/hard']} random {row['mining/random']}"]
    for key in ("validation/loss", "validation/mean/acc@1", "test/mean/acc@1"):
        if key in row:
            parts.append(f"{key} {row[key]:.4f}")
    parts.append(f"{row['time/epoch_s']:.1f}s")
    return " | ".join(parts)
