"""The pieces of one training run and what they do per epoch: embed, mine, train a step, evaluate.

:class:`Run` is built once from a config (corpus, feature mode, heads, optimizer, pools) and runs one
epoch at a time; train.py loops over epochs and writes the run folder, checkpoint.py saves and
restores a Run's state. Every epoch's randomness is derived from (seed, epoch). No Ray here.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from .batches import batch_order
from .config import Config
from .corpus import Corpus, load_corpus
from .feature_cache import TextTable
from .features import make_features
from .loss import LossBatch, total_loss, uses_classifier
from .mining import dedupe_pairs, mine_negatives, mining_telemetry
from .model import Heads, pick_device, set_threads_from_env
from .pools import build_pools, seen_texts
from .precision import grad_scaler
from .schedules import random_rate


class TrainingError(RuntimeError):
    """A run that cannot go on: a NaN/inf loss (naming epoch and step), or a checkpoint that does not fit."""


def say(msg: str, progress: bool) -> None:
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
            say(f"no corpus given: using the generated DEMO corpus at {self.corpus.source} "
                 "(pass --corpus PATH for ArguAna)", True)
        say(f"corpus {self.corpus.source}\n{self.corpus.counts_table()}", progress)
        if self.corpus.skipped:  # said even when quiet: data the user may have meant to include
            shown = ", ".join(self.corpus.skipped[:5]) + (" ..." if len(self.corpus.skipped) > 5 else "")
            say(f"skipped {len(self.corpus.skipped)} hidden file(s)/folder(s) of the corpus: {shown}", True)
        self.table = TextTable.from_corpus(self.corpus)
        torch.manual_seed(config.seed)
        self.features = make_features(config, self.table, self.device, progress=progress)
        torch.manual_seed(config.seed)
        self.heads = Heads(self.features.hidden, config.sim_dim, config.head).to(self.device)
        groups = [{"params": list(self.heads.parameters()), "lr": config.lr}]
        enc_params = self.features.trainable_parameters()
        if enc_params:
            groups.append({"params": enc_params, "lr": config.encoder_lr})
        opt = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt(groups, weight_decay=config.weight_decay)
        self.scaler = grad_scaler(self.features.precision, self.device)  # active at fp16 only
        if eval_splits is None:
            eval_splits = [s for s in ("training", "validation", "test") if s in self.corpus.splits
                           and (s != "training" or config.eval_training)]
        self.eval_splits = eval_splits
        seen = seen_texts(self.corpus.splits.get("training"))
        self.pools = {s: build_pools(self.corpus.split(s), seen) for s in self.eval_splits}
        for s in self.eval_splits:
            say(self.pools[s].describe(), progress)
        self.ranks: dict[str, dict[str, np.ndarray]] = {}  # per split: the last evaluation's ranks
        self._indexes: dict[str, tuple] = {}
        self.training_pools = build_pools(self.corpus.split("training")) if "training" in self.corpus.splits else None
        # text ids of validation and test: the telemetry's share of negatives an evaluation split shares
        self.eval_texts = np.unique(np.concatenate(
            [np.concatenate([ids.point, ids.counter]) for s, ids in self.table.splits.items() if s != "training"]
            or [np.zeros(0, np.int64)]))

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
        """The epoch's batches of training rows [steps, batch_size] (batches.batch_order); ``tids``
        [N, K] are each row's text ids, whose longest text is the row's length for length buckets."""
        cfg = self.config
        n = len(tids)
        if n < cfg.batch_size:
            raise TrainingError(f"training split has {n} pairs, fewer than batch_size={cfg.batch_size}")
        buckets = cfg.length_buckets if self.features.trains_encoder else 0  # frozen: nothing padded
        lengths = self.features.row_lengths(tids) if buckets else None  # [N]
        return batch_order(n, cfg.batch_size, rng, lengths=lengths, buckets=buckets)

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
            **mining_telemetry(mined, tp.debate, tp.theme, tp.side, *self.mining_space(emb), rows=rows_all,
                               eval_texts=self.eval_texts),
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
                ids = self.table.splits[split]
                keys = tuple(torch.as_tensor(x, device=self.device) for x in (ids.point, ids.counter, mined.keys))
                with torch.no_grad():
                    h_n = mined.take(emb["h_p"], emb["h_c"])  # [Q, K, H]
                    total, _ = self.loss(emb["h_p"], emb["h_c"], h_n, keys)
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

    # ------------------------------------------------------------------ hyperparameters
    def apply_hyperparameters(self) -> None:
        """Set the optimizer's learning rates from the config (a checkpoint's optimizer state holds
        the old ones); the margin and the rate are read from the config every step and epoch."""
        lrs = [self.config.lr, self.config.encoder_lr]
        for group, lr in zip(self.optimizer.param_groups, lrs):  # heads, then encoder layers
            group["lr"] = lr
