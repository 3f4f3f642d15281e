"""Training throughput: ``counterarg bench train`` (per finetune mode and precision) and ``bench gpu``.

``bench train`` builds a :class:`~counterarg.training.trainer.Trainer` per (finetune mode, precision) and times

* the **training step** (encoder forward over point, counter and a random negative per row, heads,
  loss, backward, optimizer step) on the first ``--batches`` batches of epoch 1's batch order, after
  ``--warmup`` untimed ones, in sequences (texts) per second;
* the **embedding pass** (no gradients, eval mode, longest first, ``embed_batch_size``) over
  ``--embed-texts`` unique texts drawn at random; with ``finetune=none`` training reads cached pooled
  vectors, so its row times the full frozen encoder (what building that cache costs per text);
* both per wall second and per **CPU second of this process** (``time.process_time``): on a machine
  shared with other jobs the wall figures move with the load, the CPU-second figures much less, so
  ratios (bf16 vs fp32, buckets vs none) are read from those; the load average is recorded too;
* **peak memory** while the setting ran: the process's resident set (sampled every 10 ms, so it
  includes what the process held before) and, on CUDA, ``torch.cuda.max_memory_allocated``.

For each mode in ``--bucket-modes`` it also runs the setting with length buckets
(``length_buckets=--buckets``) and reports, for the same epoch (same seed, same rows), the padded
tokens the whole epoch would encode with and without buckets (exact, from the token counts) and
the measured step throughput of both. Negatives are random rows (mining costs the same whatever
the encoder does and is timed by ``bench mining``).

    counterarg bench train [--corpus ZIP] [--modes none top:1 all] [--precisions fp32 bf16] [--json FILE]

``bench gpu`` is the check to run first on a new CUDA machine: full fine-tuning of the encoder
(default MiniLM) for one epoch on the real corpus at bf16 and at fp32 through the ordinary
``train()``, printing throughput, peak memory and the epoch's metrics. Without CUDA it says so and
runs a tiny CPU version (a tiny random BERT, the demo corpus) so CI covers the same code.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import GPU_RECIPE, Config
from ..core.io import atomic_write_json
from ..data.corpus import real_corpus_path

if TYPE_CHECKING:
    import torch

NO_CUDA = "no CUDA device found; running the CPU fallback: "


def _rss_bytes() -> int:
    """The process's resident set size now (Linux /proc; elsewhere the lifetime peak)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextmanager
def peak_memory(device: torch.device):
    """Yields a dict that holds, on exit, ``rss_peak_mb`` and (CUDA) ``cuda_peak_mb`` of the block."""
    import torch

    out: dict[str, float] = {}
    peak = [_rss_bytes()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            peak[0] = max(peak[0], _rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["rss_peak_mb"] = max(peak[0], _rss_bytes()) / 2**20
        if device.type == "cuda":
            out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rows(run, rng: np.random.Generator) -> np.ndarray:
    """Training rows as text ids [N, 3]: point, counter, the counter of a random other row."""
    ids = run.table.splits["training"]
    n = len(ids.point)
    return np.column_stack([ids.point, ids.counter, ids.counter[rng.permutation(n)]])


def _padded_tokens(run, tids: np.ndarray, batches: np.ndarray) -> tuple[int, int]:
    """(tokens encoded with padding, real tokens) over the whole epoch's ``batches``."""
    lengths = run.features.text_lengths(tids)  # [N, 3]
    padded = sum(int(lengths[b].max()) * lengths[b].size for b in batches)
    return padded, int(lengths[batches.ravel()].sum())


def time_setting(
    base: Config, finetune: str, precision: str, *, buckets: int, batches: int, warmup: int, embed_texts: int
) -> dict:
    """One row of the table: train-step and embedding throughput and peak memory of one setting."""
    import torch

    from ..nn.encoder import encode_texts, load_encoder
    from ..training.trainer import Trainer

    load_start = os.getloadavg()[0]
    cfg = base.replace(finetune=finetune, precision=precision, length_buckets=buckets)
    run = Trainer(cfg, progress=False, eval_splits=[])
    features, device = run.features, run.device
    rng = np.random.default_rng([cfg.seed, 0])
    tids = _rows(run, rng)  # [N, 3]
    order = run.batches(tids, rng)  # [steps, B] epoch 1's batches
    row = {
        "finetune": finetune,
        "precision": features.precision,
        "length_buckets": buckets,
        "device": str(device),
        "batch_size": cfg.batch_size,
        "steps_per_epoch": len(order),
    }
    if features.trains_encoder:
        row["epoch_padded_tokens"], row["epoch_real_tokens"] = _padded_tokens(run, tids, order)
    n_steps = min(batches + warmup, len(order))
    run.model.heads.train()
    features.train()
    with peak_memory(device) as mem:
        for i in range(n_steps):
            if i == min(warmup, n_steps - 1):
                _sync(device)
                t0, c0, timed = time.perf_counter(), time.process_time(), 0
            rows = tids[order[i]]  # [B, 3]: point, counter, one negative
            h = features(torch.from_numpy(rows.T.ravel()))  # [3B, H]: points, counters, negatives
            h_p, h_c, h_n = h.split(len(rows))  # [B, H] each
            keys = tuple(torch.as_tensor(x, device=device) for x in (rows[:, 0], rows[:, 1], rows[:, 2:]))
            total, _ = run.loss(h_p, h_c, h_n[:, None], keys)  # one negative per anchor: [B, 1, H]
            run.backward_step(total)
            if i >= min(warmup, n_steps - 1):
                timed += h.shape[0]
        _sync(device)
        train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
        texts = np.random.default_rng(1).permutation(len(run.table.texts))[:embed_texts]
        if not features.trains_encoder:  # the frozen encoder, as when its pooled cache is built
            model, tok = load_encoder(cfg.encoder, cfg.pooling)
        t1, c1 = time.perf_counter(), time.process_time()
        if not features.trains_encoder:
            encode_texts(
                model,
                tok,
                [run.table.texts[i] for i in texts],
                pooling=cfg.pooling,
                max_length=cfg.max_length,
                batch_size=cfg.embed_batch_size,
                device=device,
                precision=features.precision,
            )
        else:
            features.embed(texts)
        _sync(device)
        embed_s, embed_cpu = time.perf_counter() - t1, time.process_time() - c1
    run.close()
    row.update(
        {
            "train_steps_timed": n_steps - min(warmup, n_steps - 1),
            "train_seq_per_s": timed / train_s,
            "train_seq_per_cpu_s": timed / train_cpu,
            "embed_texts": len(texts),
            "embed_seq_per_s": len(texts) / embed_s,
            "embed_seq_per_cpu_s": len(texts) / embed_cpu,
            "load_start": load_start,
            "load_end": os.getloadavg()[0],
            **mem,
        }
    )
    return row


def format_table(rows: list[dict]) -> str:
    head = (
        "| finetune | precision | buckets | train seq/s | train seq/CPU-s | embed seq/s | embed seq/CPU-s "
        "| peak RSS MB | CUDA peak MB | padded tokens/epoch | load avg |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        pad = r.get("epoch_padded_tokens")
        pad_s = f"{pad:,} ({pad / r['epoch_real_tokens']:.2f}× real)" if pad else "-"
        cuda = f"{r['cuda_peak_mb']:.0f}" if "cuda_peak_mb" in r else "-"
        lines.append(
            f"| {r['finetune']} | {r['precision']} | {r['length_buckets'] or 'off'} | "
            f"{r['train_seq_per_s']:.1f} | {r['train_seq_per_cpu_s']:.2f} | {r['embed_seq_per_s']:.1f} | "
            f"{r['embed_seq_per_cpu_s']:.2f} | {r['rss_peak_mb']:.0f} | {cuda} | {pad_s} | "
            f"{r['load_start']:.1f} → {r['load_end']:.1f} |"
        )
    return "\n".join(lines)


def bucket_savings(rows: list[dict]) -> list[str]:
    """Per (mode, precision) timed with and without buckets: padded-token and throughput ratios."""
    out = []
    for on in (r for r in rows if r["length_buckets"]):
        off = next(
            (
                r
                for r in rows
                if not r["length_buckets"] and r["finetune"] == on["finetune"] and r["precision"] == on["precision"]
            ),
            None,
        )
        if off is None:
            continue
        out.append(
            f"length buckets ({on['length_buckets']} batches each), {on['finetune']} {on['precision']}: "
            f"the epoch's padded tokens {off['epoch_padded_tokens']:,} -> {on['epoch_padded_tokens']:,} "
            f"({1 - on['epoch_padded_tokens'] / off['epoch_padded_tokens']:.0%} fewer); train step "
            f"{off['train_seq_per_s']:.1f} -> {on['train_seq_per_s']:.1f} seq/s "
            f"({on['train_seq_per_s'] / off['train_seq_per_s']:.2f}× wall, "
            f"{on['train_seq_per_cpu_s'] / off['train_seq_per_cpu_s']:.2f}× per CPU-second, over "
            f"{on['train_steps_timed']} timed batches)"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="counterarg bench train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--corpus", help=f"corpus zip or folder (default: {real_corpus_path()} if it exists, else the demo corpus)"
    )
    ap.add_argument("--demo", action="store_true", help="use the generated demo corpus")
    ap.add_argument("--modes", nargs="+", default=["none", "top:1", "all"], help="finetune modes")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], help="fp32 | bf16 | fp16 | auto")
    ap.add_argument("--batches", type=int, default=10, help="timed training batches per setting")
    ap.add_argument("--warmup", type=int, default=2, help="untimed batches before them")
    ap.add_argument("--embed-texts", type=int, default=256, help="unique texts in the timed embedding pass")
    ap.add_argument(
        "--bucket-modes",
        nargs="*",
        default=["top:1"],
        help="modes also timed with length buckets (same epoch, before/after)",
    )
    ap.add_argument("--buckets", type=int, default=64, help="length_buckets for those runs")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="other config fields")
    ap.add_argument("--json", help="write the rows and the bucket savings here")
    args = ap.parse_args(argv)
    import torch  # after parsing: --help loads none of it

    if args.batches < 1 or args.warmup < 0 or args.embed_texts < 1 or args.buckets < 1:
        ap.error("--batches, --embed-texts and --buckets must be >= 1, --warmup >= 0")
    corpus = None if args.demo else (args.corpus or (str(real_corpus_path()) if real_corpus_path().exists() else None))
    base = Config(corpus=corpus).with_overrides(args.set)
    for mode in args.modes:  # fail before the first slow setting
        base.replace(finetune=mode)
    for p in args.precisions:
        base.replace(precision=p)
    print(
        f"[bench train] corpus {corpus or 'demo'}, encoder {base.encoder}, batch {base.batch_size}, "
        f"{args.batches} timed batches per setting (+{args.warmup} warm-up), embedding pass over "
        f"{args.embed_texts} texts",
        flush=True,
    )
    rows = []
    for mode in args.modes:
        for precision in args.precisions:
            for buckets in [0, args.buckets] if mode in args.bucket_modes and mode != "none" else [0]:
                row = time_setting(
                    base,
                    mode,
                    precision,
                    buckets=buckets,
                    batches=args.batches,
                    warmup=args.warmup,
                    embed_texts=args.embed_texts,
                )
                print(
                    f"[bench train] {mode} {row['precision']} buckets={buckets or 'off'}: "
                    f"train {row['train_seq_per_s']:.1f} seq/s, embed {row['embed_seq_per_s']:.1f} seq/s, "
                    f"peak RSS {row['rss_peak_mb']:.0f} MB",
                    flush=True,
                )
                rows.append(row)
    print(format_table(rows))
    savings = bucket_savings(rows)
    for line in savings:
        print(line)
    if args.json:
        from ..core.paths import portable_command, portable_path

        atomic_write_json(
            Path(args.json),
            {
                "corpus": portable_path(corpus) if corpus else "demo",
                "command": "counterarg bench train " + portable_command(argv if argv is not None else sys.argv[3:]),
                "torch_threads": torch.get_num_threads(),
                "rows": rows,
                "bucket_savings": savings,
            },
        )
        print(f"[bench train] written to {Path(args.json).resolve()}")
    return 0


# ============================================================================ bench gpu
def _epoch(cfg: Config, out: Path) -> dict:
    """One epoch of ``train()`` at ``cfg``: its metrics row plus throughput and peak memory."""
    from ..nn.encoder import pick_device
    from ..training.loop import train

    device = pick_device(cfg.device)
    with peak_memory(device) as mem:
        row = train(cfg, out, progress=False)[-1]
    return {**row, **mem}


def gpu_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="counterarg bench gpu",
        description=(
            "One epoch of the GPU preset (--config gpu: full fine-tuning) at bf16 and fp32 on CUDA "
            "(real corpus; throughput, peak memory, the epoch's metrics); without CUDA a tiny CPU "
            "version of the same code"
        ),
    )
    ap.add_argument("--corpus", help=f"corpus zip or folder (default {real_corpus_path()})")
    ap.add_argument("--precisions", nargs="+", default=["bf16", "fp32"])
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="other config fields")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    import torch  # after parsing: --help loads none of it

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="counterarg-bench-gpu-") as tmp:  # run folders, tiny BERT
        return _gpu_bench(args, cuda, Path(tmp))


def _gpu_bench(args, cuda: bool, work: Path) -> int:
    """One epoch per precision under ``work`` (removed afterwards by :func:`gpu_main`); prints and
    optionally writes the rows."""
    import torch

    if cuda:
        corpus = Path(args.corpus) if args.corpus else real_corpus_path()
        if not corpus.exists():
            print(
                f"counterarg bench gpu: the real corpus is not at {corpus}; pass --corpus or set COUNTERARG_CORPUS",
                file=sys.stderr,
            )
            return 2
        base = Config.from_dict({**GPU_RECIPE, "corpus": str(corpus), "epochs": 1})  # --config gpu, one epoch
        what = f"{torch.cuda.get_device_name(0)}: --config gpu (finetune=all) of {base.encoder}, 1 epoch on {corpus}"
    else:
        from ..nn.testing import make_tiny_encoder

        enc = make_tiny_encoder(work / "tiny-bert")
        base = Config(
            corpus=None, encoder=enc, finetune="all", device="cpu", epochs=1, encoder_lr=1e-3, length_buckets=4
        )
        what = (
            "a tiny random BERT (counterarg.nn.testing.make_tiny_encoder: 2 layers, hidden 32) on the demo "
            "corpus, finetune=all, 1 epoch, length_buckets=4"
        )
        print(NO_CUDA + what, flush=True)
    base = base.with_overrides(args.set)
    for p in args.precisions:
        base.replace(precision=p)
    rows = []
    for precision in args.precisions:
        cfg = base.replace(precision=precision)
        t0 = time.perf_counter()
        row = _epoch(cfg, work / precision)
        wall = time.perf_counter() - t0
        from ..data.corpus import load_corpus

        n = len(load_corpus(cfg.corpus).split("training").pairs)
        seqs = 3 * (n // cfg.batch_size) * cfg.batch_size
        # time/train_s is the epoch's training phase: re-embedding the training split, mining, the steps
        out = {
            "precision": precision,
            "wall_s": wall,
            "train_s": row["time/train_s"],
            "train_seq_per_s": seqs / row["time/train_s"],
            "rss_peak_mb": row["rss_peak_mb"],
            "cuda_peak_mb": row.get("cuda_peak_mb"),
            "train/loss": row["train/loss"],
            **{k: row[k] for k in ("validation/mean/acc@1", "test/mean/acc@1", "validation/loss") if k in row},
        }
        rows.append(out)
        cuda_s = f", CUDA peak {out['cuda_peak_mb']:.0f} MB" if cuda else ""
        metrics = ", ".join(
            f"{k} {row[k]:.4f}" for k in ("train/loss", "validation/mean/acc@1", "test/mean/acc@1") if k in row
        )
        print(
            f"[bench gpu] {precision}: epoch {wall:.1f} s wall ({row['time/train_s']:.1f} s training, "
            f"{out['train_seq_per_s']:.1f} seq/s), peak RSS {out['rss_peak_mb']:.0f} MB{cuda_s}; {metrics}",
            flush=True,
        )
    print(f"[bench gpu] ran {what}" + ("" if cuda else " (CPU fallback)"))
    if args.json:
        atomic_write_json(Path(args.json), {"cuda": cuda, "what": what, "rows": rows})
    return 0
