"""Training's pieces and what they do per epoch: embed, mine, train a step, evaluate.

:class:`Trainer` is built once from a config: the model (biencoder.BiEncoder: features, heads,
scoring settings) plus what only training needs (optimizer, gradient scaler, mining indexes,
evaluation pools); it runs one epoch at a time. loop.py loops over epochs and writes the run
folder; :meth:`Trainer.state` / :meth:`Trainer.restore` are the checkpoint's ``trainer`` part
(model/checkpoint.py is the format). Every epoch's randomness is derived from (seed, epoch). No Ray here.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import Config
from ..data.corpus import Corpus
from ..model.over_corpus import over_corpus
from ..nn.loss import LossBatch, total_loss, uses_classifier
from ..nn.precision import grad_scaler
from ..retrieval.arguana import build_view
from ..retrieval.pools import build_pools, split_pools
from ..sampling.batches import batch_order
from ..sampling.mining import dedupe_pairs, mine_negatives, mining_telemetry
from ..sampling.schedules import random_rate

if TYPE_CHECKING:
    from ..model.features import TextFeatures


class TrainingError(RuntimeError):
    """A run that cannot go on: a NaN/inf loss (naming epoch and step), or a checkpoint that does not fit."""


def say(msg: str, progress: bool) -> None:
    if progress:
        print(f"[counterarg] {msg}", flush=True)


class Trainer:
    """The pieces of one run, built once from a config: corpus, the model, optimizer, pools."""

    def __init__(
        self,
        config: Config,
        *,
        progress: bool = True,
        corpus: Corpus | None = None,
        eval_splits: list[str] | None = None,
    ):
        self.config, self.progress = config, progress
        base = over_corpus(config, corpus=corpus, progress=progress)
        self.corpus, self.table, self.device = base.corpus, base.table, base.device
        self.model = base.build(config, progress=progress)
        groups = [{"params": list(self.model.heads.parameters()), "lr": config.lr}]
        enc_params = self.features.trainable_parameters()
        if enc_params:
            groups.append({"params": enc_params, "lr": config.encoder_lr})
        opt = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt(groups, weight_decay=config.weight_decay)
        self.scaler = grad_scaler(self.features.precision, self.device)  # active at fp16 only
        if eval_splits is None:
            eval_splits = [
                s
                for s in ("training", "validation", "test")
                if s in self.corpus.splits and (s != "training" or config.eval_training)
            ]
        self.eval_splits = eval_splits
        self.pools = {s: split_pools(self.corpus, s) for s in self.eval_splits}
        for s in self.eval_splits:
            say(self.pools[s].describe(), progress)
        # the ArguAna view (retrieval/arguana.py) of the evaluated splits other than training
        self.views = {s: build_view(self.corpus, self.table, s) for s in self.eval_splits if s != "training"}
        self.ranks: dict[str, dict[str, np.ndarray]] = {}  # per split: the last evaluation's ranks
        self._indexes: dict[str, tuple] = {}
        self.training_pools = build_pools(self.corpus.split("training")) if "training" in self.corpus.splits else None
        # text ids of validation and test: the telemetry's share of negatives an evaluation split shares
        self.eval_texts = np.unique(
            np.concatenate(
                [np.concatenate([ids.point, ids.counter]) for s, ids in self.table.splits.items() if s != "training"]
                or [np.zeros(0, np.int64)]
            )
        )

    @property
    def features(self) -> TextFeatures:
        """The model's feature mode (the encoder part that training runs and updates)."""
        features = self.model.features
        assert features is not None, "BiEncoder.build makes a model over the table's features"
        return features

    # ------------------------------------------------------------------ embeddings
    def mining_space(self, emb: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """Point and counter embeddings as mining sees them: normalised when the model is judged by cosine."""
        s_p, s_c = emb["s_p"], emb["s_c"]  # [N, d] each
        if self.config.eval_metric == "cosine":
            s_p, s_c = torch.nn.functional.normalize(s_p, dim=-1), torch.nn.functional.normalize(s_c, dim=-1)
        return s_p.cpu().numpy(), s_c.cpu().numpy()

    def mine(self, emb: dict[str, torch.Tensor], split: str, rate: float, rng: np.random.Generator):
        """The reference implementation's mining rule over this split's point and counter trees,
        rebuilt on new embeddings.

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
            from ..retrieval.index import make_index_pair

            self._indexes[split] = make_index_pair(
                backend,
                s_p,
                s_c,
                leaf_size=cfg.leaf_size,
                shards=cfg.shards,
                block_size=cfg.block_size,
                device=str(self.device),
            )
        point_index, counter_index = self._indexes[split]
        lo, hi = cfg.neg_rank  # Config checks that it holds two ranks
        return mine_negatives(
            s_p,
            s_c,
            rate,
            rng,
            point_index=point_index,
            counter_index=counter_index,
            point_keys=ids.point,
            counter_keys=ids.counter,
            num_negatives=cfg.num_negatives,
            neg_rank=(lo, hi),
            neg_margin=cfg.neg_margin,
        )

    def close(self) -> None:
        """Release index resources (the sharded backend's Ray actors)."""
        for pair in self._indexes.values():
            for index in reversed(pair):
                index.close()
        self._indexes.clear()

    def loss(self, h_p, h_c, h_n, keys):
        """The configured objective (nn/loss.py) plus ``head_reg`` times the head's drift from its start.

        ``h_p``, ``h_c`` [B, H], ``h_n`` [B, K, H]; ``keys`` = text ids (point [B], counter [B], negatives [B, K]).
        """
        c = self.config
        b, k = h_n.shape[:2]
        s_p, s_c = self.model.heads.similarity(h_p), self.model.heads.similarity(h_c)  # [B, d] each
        s_n = self.model.heads.similarity(h_n.reshape(b * k, -1))  # [B*K, d]
        logits_pos = logits_neg = None
        if uses_classifier(c.loss):
            logits_pos = self.model.heads.classify(s_p, s_c, h_p, h_c)  # [B, 2]
            logits_neg = self.model.heads.classify(
                s_p.repeat_interleave(k, 0), s_n, h_p.repeat_interleave(k, 0), h_n.reshape(b * k, -1)
            ).view(b, k, 2)  # [B, K, 2]
        batch = LossBatch(
            s_p=s_p,
            s_c=s_c,
            s_n=s_n.view(b, k, -1),
            logits_pos=logits_pos,
            logits_neg=logits_neg,
            point_keys=keys[0],
            counter_keys=keys[1],
            negative_keys=keys[2],
        )
        total, parts = total_loss(c.loss, batch, c)
        if c.head_reg > 0:
            drift = self.model.heads.drift()
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
        emb = self.model.embed_pairs("training")
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
        self.model.train()
        sums: dict[str, float] = {"loss": 0.0}
        bar = tqdm(
            range(steps),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not self.progress,
            unit="step",
            leave=False,
            mininterval=1.0,
        )
        for step in bar:
            rows = batches[step]
            b = len(rows)
            keys = (ids.point[rows], ids.counter[rows], neg[rows])  # [B], [B], [B, K]
            tids = torch.from_numpy(np.concatenate([keys[0], keys[1], keys[2].reshape(-1)]))  # [(2+K)B]
            h = self.features(tids)  # [(2+K)B, H]
            h_p, h_c, h_n = h[:b], h[b : 2 * b], h[2 * b :].view(b, -1, h.shape[1])  # [B, H], [B, H], [B, K, H]
            total, parts = self.loss(h_p, h_c, h_n, tuple(torch.as_tensor(x, device=self.device) for x in keys))
            if not torch.isfinite(total):
                raise TrainingError(
                    f"loss is {total.item()} at epoch {epoch + 1}, step {step + 1} "
                    f"(lr={cfg.lr}, margin={cfg.margin}); stopping"
                )
            self.backward_step(total)
            sums["loss"] += total.item()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.4f}")
        self.model.eval()
        tp = self.training_pools
        assert tp is not None, "the corpus has a training split: this epoch has mined its pairs"
        row = {
            "epoch": epoch + 1,
            **{f"train/{k}": v / steps for k, v in sums.items()},
            "mining/rate": rate,
            "optim/lr": self.optimizer.param_groups[0]["lr"],
            "loss/margin": cfg.margin,
            "mining/hard": mined.n_hard,
            "mining/random": mined.n_random,
            **mining_telemetry(
                mined, tp.debate, tp.theme, tp.side, *self.mining_space(emb), rows=rows_all, eval_texts=self.eval_texts
            ),
            "time/mining_s": t_mine,
            "time/train_s": time.perf_counter() - t0,
        }
        return row

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, epoch: int) -> dict:
        """Validation loss (hard negatives, rate 0) plus the eight tasks and the ArguAna view on the
        splits due this epoch; every text is embedded once for both when the view is due (its share of the
        time: ``time/arguana_s``).

        Leaves each evaluated split's per-query ranks in ``self.ranks`` (for :class:`BestRanks`).
        """
        from ..evaluation.arguana import collection_embeddings, model_view_metrics, pair_embeddings
        from ..evaluation.evaluate import evaluate_model

        cfg = self.config
        t0 = time.perf_counter()
        row: dict = {}
        self.ranks = {}
        last = epoch + 1 == cfg.epochs
        due = [
            s
            for s in self.eval_splits
            if s != "test" or (cfg.test_every and ((epoch + 1) % cfg.test_every == 0 or last))
        ]
        collection, view_s = None, 0.0  # every text embedded once when the ArguAna view is due
        if any(s in self.views for s in due):
            t1 = time.perf_counter()
            collection = collection_embeddings(self.model)
            view_s += time.perf_counter() - t1
        for split in due:
            emb = (
                pair_embeddings(self.model, split, collection)
                if collection is not None
                else self.model.embed_pairs(split)
            )
            if split == "validation" and len(emb["s_p"]) >= 2:
                mined = self.mine(emb, split, 0.0, np.random.default_rng([cfg.seed, epoch, 7]))
                ids = self.table.splits[split]
                keys = tuple(torch.as_tensor(x, device=self.device) for x in (ids.point, ids.counter, mined.keys))
                with torch.no_grad():
                    h_n = mined.take(emb["h_p"], emb["h_c"])  # [Q, K, H]
                    total, _ = self.loss(emb["h_p"], emb["h_c"], h_n, keys)
                row["validation/loss"] = total.item()
            model, pools = self.model, self.pools[split]
            if model.scorer.picks_weight and cfg.fused_w is None and split == "validation":
                # the weight that scores best on the selection metric (smallest on ties), kept by the model
                tries = {
                    w: evaluate_model(model, split, pools, emb, fused_w=w, return_ranks=True) for w in cfg.fused_grid
                }
                model.fused_w = max(sorted(tries), key=lambda w: tries[w][0].get(cfg.select_metric, -1.0))
                row["eval/fused_w"] = model.fused_w
                metrics, ranks = tries[model.fused_w]
            else:
                metrics, ranks = evaluate_model(model, split, pools, emb, return_ranks=True)
            row.update(metrics)
            self.ranks[split] = {t: r.cpu().numpy().astype(np.int32) for t, r in ranks.items()}
            if split in self.views:
                t1 = time.perf_counter()
                row.update(model_view_metrics(model, self.views[split], collection))
                view_s += time.perf_counter() - t1
        if collection is not None:
            row["time/arguana_s"] = view_s
        row["time/eval_s"] = time.perf_counter() - t0
        return row

    # ------------------------------------------------------------------ hyperparameters
    def apply_hyperparameters(self) -> None:
        """Set the optimizer's learning rates from the config (a checkpoint's optimizer state holds
        the old ones); the margin and the rate are read from the config every step and epoch."""
        lrs = [self.config.lr, self.config.encoder_lr]
        for group, lr in zip(self.optimizer.param_groups, lrs):  # heads, then encoder layers
            group["lr"] = lr

    # ------------------------------------------------------------------ checkpoint
    def state(self) -> dict:
        """The checkpoint's ``trainer`` part: optimizer, gradient scaler, RNG states."""
        # legacy=True is numpy's default; said here because numpy's stub types a bare get_state() as the
        # dict form (its legacy=False overload). The global RandomState's MT19937 gives the tuple.
        legacy = np.random.get_state(legacy=True)
        assert isinstance(legacy, tuple), "the global RandomState is an MT19937: its state is the legacy tuple"
        name, keys, pos, has_gauss, gauss = legacy
        numpy_state = {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        }  # tensors and numbers: weights_only
        return {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),  # {} unless fp16
            "rng": {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()},
        }

    def restore(self, state: dict) -> None:
        """Put a checkpoint (checkpoint.read_checkpoint) into this run: the model's state, fused_w
        included, then optimizer, scaler and RNG states; the config's learning rates replace the
        saved ones (:meth:`apply_hyperparameters`)."""
        self.model.load_state(state["model"])
        trainer = state.get("trainer")
        if trainer is None:
            raise TrainingError("the checkpoint holds a model only (BiEncoder.save), no optimizer state to resume")
        self.optimizer.load_state_dict(trainer["optimizer"])
        if trainer["scaler"]:
            self.scaler.load_state_dict(trainer["scaler"])
        self.apply_hyperparameters()
        rng = trainer["rng"]
        torch.set_rng_state(rng["torch"])
        n = rng["numpy"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        random.setstate(rng["python"])
