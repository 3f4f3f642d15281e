"""Shared fixtures and helpers: a tiny random BERT, the real corpus when present, an isolated feature
cache and a Ray temp root per test; the neighbour-index test data and its brute-force reference; a
hand-made split; the training tests' config and metric-row helpers; the no-training-import probe.
Helpers are plain functions: import them with ``from conftest import ...`` (also from tests/PACKAGE/).
The sweep tests' own fixtures and helpers are in ``tests/sweep/conftest.py``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from counterarg.data.corpus import real_corpus_path

os.environ.setdefault(
    "COUNTERARG_CPU_BF16", "0"
)  # precision=auto is fp32 on every CPU here: numbers do not depend on the machine
REAL_CORPUS = real_corpus_path()  # $COUNTERARG_CORPUS, or ../shared/data/arguana-counterargs-corpus.zip


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep test caches out of the user's ~/.cache."""
    old = os.environ.get("COUNTERARG_CACHE")
    os.environ["COUNTERARG_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("COUNTERARG_CACHE", None)
    else:
        os.environ["COUNTERARG_CACHE"] = old


#: Ray temp roots a test's Ray may still use when the test ends; removed once the session ends
_LEFT_RAY_ROOTS: list[str] = []


@pytest.fixture(autouse=True)
def _own_ray_temp(monkeypatch):
    """Each test's Ray (in-process, sweep drivers it starts, cluster nodes) keeps its sessions in a
    temp root of its own (short: Ray's socket paths are length-limited), so state repair, which
    scans Ray's temp folders for the driver's staging copies, never sees another test's sessions.
    Test sweeps also get unique names (``unique_name`` in tests/sweep/conftest.py), since repair
    scans /tmp/ray as well."""
    import shutil
    import sys
    import tempfile

    root = tempfile.mkdtemp(prefix="cr-ray-", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", root)
    yield root
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        shutil.rmtree(root, ignore_errors=True)
    else:  # a Ray still running (a module's shared session) may be using it: removed at the session's end
        _LEFT_RAY_ROOTS.append(root)


def pytest_sessionfinish(session, exitstatus):
    """Shut down an in-process Ray still running and remove the temp roots it may have used."""
    import shutil
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    for root in _LEFT_RAY_ROOTS:
        shutil.rmtree(root, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """A test that reads the real corpus (the ``real_corpus`` fixture) must be marked ``corpus``, so
    that ``-m corpus`` selects every one of them and ``-m "not corpus"`` none: refused by name otherwise."""
    unmarked = [
        item.nodeid
        for item in items
        if "real_corpus" in getattr(item, "fixturenames", ()) and item.get_closest_marker("corpus") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests that use the real_corpus fixture must be marked @pytest.mark.corpus: " + ", ".join(unmarked)
        )


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    from counterarg.nn.testing import make_tiny_encoder

    return make_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def real_corpus() -> Path:
    if not REAL_CORPUS.exists():
        pytest.skip(
            f"real ArguAna corpus not found at {REAL_CORPUS} (set COUNTERARG_CORPUS, or put it in "
            "../shared/data beside the repo)"
        )
    return REAL_CORPUS


# ----------------------------------------------------------------------------- neighbour-index data
K = 7  # neighbours asked of every index in the index tests


def reference(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-k by a float64 brute force, sorted by (distance, id): what every index must return."""
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    d = np.sqrt(((q64[:, None, :] - x64[None, :, :]) ** 2).sum(-1))  # [Q, N]
    ids = np.broadcast_to(np.arange(len(x)), d.shape)
    order = np.lexsort((ids, d), axis=-1)[:, :k]  # [Q, k]
    return np.take_along_axis(d, order, -1), order.astype(np.int64)


def datasets() -> dict[str, np.ndarray]:
    """Gaussian rows, heavy duplicates, an integer grid (exact ties between distinct rows), large norms."""
    rng = np.random.default_rng(0)
    gauss = rng.standard_normal((500, 16)).astype(np.float32)
    base = rng.standard_normal((30, 16)).astype(np.float32)
    dups = base[rng.integers(0, 30, 480)]  # ~16 copies of each row: ties way beyond the slack
    dups = np.concatenate([dups, rng.standard_normal((20, 16)).astype(np.float32)])
    grid = rng.integers(0, 3, (400, 4)).astype(np.float32)  # exact ties between distinct rows
    scaled = (rng.standard_normal((300, 32)) * 50 + 200).astype(np.float32)  # large norms
    return {"gauss": gauss, "dups": dups, "grid": grid, "scaled": scaled}


DATA = datasets()


def check(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    """Same ids as the reference, distances within 1e-5."""
    d, i = got
    assert i.dtype == np.int64 and d.dtype in (np.float32, np.float64)
    assert d.shape == i.shape == want[1].shape
    np.testing.assert_array_equal(i, want[1])
    np.testing.assert_allclose(d, want[0], rtol=0, atol=1e-5)


def queries_for(x: np.ndarray, name: str) -> np.ndarray:
    """Half database rows (self-queries), half fresh points; for grid data, fresh grid points."""
    rng = np.random.default_rng(1)
    if name == "grid":
        fresh = rng.integers(0, 3, (40, x.shape[1])).astype(np.float32)
    else:
        fresh = x[rng.integers(0, len(x), 40)] + rng.standard_normal((40, x.shape[1])).astype(np.float32) * 0.3
    return np.concatenate([x[::7], fresh])


# ----------------------------------------------------------------------------- a hand-made split
def rec(theme, debate, side, number, kind):
    """A corpus record of the hand-made split (its text names its place)."""
    from counterarg.data.corpus import Record

    return Record("test", theme, debate, side, number, kind, f"{kind} {theme}/{debate}/{side}{number}", "mem")


def make_split(layout, name="test"):
    """``layout``: list of (theme, debate, side, number) -> a Split of true pairs in that order."""
    from counterarg.data.corpus import Pair, Split

    pairs = [Pair(rec(t, d, s, n, "point"), rec(t, d, s, n, "counter")) for t, d, s, n in layout]
    records = [r for p in pairs for r in (p.point, p.counter)]
    return Split(name, records, pairs, [])


# Q = 8: counters are candidates 0..7, points 8..15. Debate "d1" exists in both themes: the
# debate key (theme/debate) keeps them apart.
LAYOUT = [
    ("A", "d1", "pro", 1),  # 0
    ("A", "d1", "pro", 2),  # 1
    ("A", "d1", "con", 1),  # 2
    ("A", "d2", "pro", 1),  # 3
    ("A", "d2", "con", 1),  # 4
    ("B", "d1", "pro", 1),  # 5
    ("B", "d1", "con", 1),  # 6
    ("B", "d1", "con", 2),  # 7
]


# ----------------------------------------------------------------------------- scoring
def score_classifier(sp, sc, hp, hc):
    """Logits [0, h_c[:, 0]]: the positive probability grows with the candidate's h score."""
    import torch

    return torch.stack([torch.zeros(hc.shape[0], dtype=hc.dtype), hc[:, 0]], 1)  # [M, 2]


# ----------------------------------------------------------------------------- training runs
@pytest.fixture
def cfg(tiny_encoder):
    """The training tests' config: three epochs of the tiny encoder on the demo corpus, frozen (the
    cached pooled features; tests of top:N and all say so)."""
    from counterarg.config import Config

    return Config(encoder=tiny_encoder, epochs=3, schedule="decay", rate_step=0.3, eval_mode="rerank", finetune="none")


@pytest.fixture(scope="session")
def top1_checkpoint(tiny_encoder, tmp_path_factory) -> Path:
    """A trained checkpoint folder whose encoder's top layer trained (finetune=top:1): one epoch."""
    from counterarg.config import Config
    from counterarg.training.loop import train

    out = tmp_path_factory.mktemp("run")
    cfg = Config(encoder=tiny_encoder, epochs=1, max_length=32, finetune="top:1", encoder_lr=1e-2, batch_size=16)
    train(cfg, out, progress=False)
    return out / "checkpoint"


def rows(path: Path) -> list[dict]:
    """The metric rows of a run folder's metrics.jsonl."""
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def training_loaded_by(code: str) -> tuple[str, list[str]]:
    """Runs ``code`` in a fresh interpreter: its output and the training modules it left loaded (the
    training package, mining, batches), for the checks that using a model imports no training."""
    import subprocess
    import sys

    probe = (
        "\nimport json, sys\nprint(json.dumps(sorted(n for n in sys.modules if n.startswith('counterarg.training')"
        " or n in ('counterarg.sampling.mining', 'counterarg.sampling.batches'))))"
    )
    out = subprocess.run([sys.executable, "-c", code + probe], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    *printed, loaded = out.stdout.strip().splitlines()
    return "\n".join(printed), json.loads(loaded)


def heavy_loaded_by(code: str) -> list[str]:
    """Runs ``code`` in a fresh interpreter (SystemExit, e.g. from ``--help``, ends it quietly): the heavy
    libraries it left loaded, for the checks that ``--help`` and parsing import none of them."""
    import subprocess
    import sys

    probe = (
        f"\ntry:\n    exec({code!r})\nexcept SystemExit:\n    pass\nimport json, sys\n"
        f"print(json.dumps(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


#: the libraries a command's --help must not load (seconds of start-up each)
HEAVY = (
    "torch",
    "transformers",
    "sentence_transformers",
    "sklearn",
    "pandas",
    "ray",
    "matplotlib",
    "scipy",
    "pyarrow",
    "tensorboardX",
)


def walk_options(parser) -> list[tuple[str, object, str | None]]:
    """Each option of ``parser`` (not --help) as ``(flags, action, shown)``: ``shown`` is the default its
    rendered help states (the text after "default" in the parenthesis that holds it, e.g. ``30`` or
    ``the generated demo corpus``), "required", "off" (a flag), or None when the help states none."""
    import argparse
    import re

    out = []
    either = {id(a): g for g in parser._mutually_exclusive_groups if g.required for a in g._group_actions}
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        text = " ".join(parser._get_formatter()._expand_help(action).split()) if action.help else ""
        shown = None
        m = re.search(r"(?:\(|; )default:? ", text)
        if m:  # up to the parenthesis that closes the one holding "default"
            depth, end = 0, m.end()
            while end < len(text) and not (text[end] == ")" and depth == 0):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            shown = text[m.end() : end]
        elif action.required:
            shown = "required"
        elif id(action) in either:
            shown = "required: one of " + " or ".join(a.option_strings[0] for a in either[id(action)]._group_actions)
        elif isinstance(action, argparse._StoreTrueAction):
            shown = "off"
        out.append((", ".join(action.option_strings), action, shown))
    return out


def documented_options(doc: str, title: str) -> dict[str, str]:
    """The ``| `--flag` | default | ...`` rows of the options table under ``### `title``` in ``doc``: flag ->
    default, without backticks."""
    section = doc.split(f"### `{title}`\n", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`"):
            rows[cells[0].replace("`", "")] = cells[1].replace("`", "")
    return rows


def strip_times(rs: list[dict]) -> list[dict]:
    """Rows without their ``time/`` fields (the only ones that differ between equal runs)."""
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rs]


#: A valid value other than the default for every Config field, for the field-role tests (a field
#: added to Config without one here fails them: say what it is).
OTHER_VALUES = {
    "corpus": "elsewhere.zip",
    "encoder": "org/another-encoder",
    "pooling": "cls",
    "max_length": 16,
    "sim_dim": 8,
    "head": "linear",
    "head_reg": 0.1,
    "finetune": "top:2",
    "device": "cpu",
    "cache_dir": "another-cache",
    "embed_batch_size": 3,
    "precision": "fp32",
    "epochs": 3,
    "batch_size": 5,
    "lr": 0.1,
    "encoder_lr": 0.1,
    "optimizer": "adamw",
    "weight_decay": 0.1,
    "grad_clip": 0.5,
    "seed": 3,
    "patience": 0,
    "length_buckets": 4,
    "loss": "combined",
    "scale": 5.0,
    "margin": 0.5,
    "p": 1.0,
    "w_triplet": 0.5,
    "w_pos": 0.5,
    "w_neg": 0.5,
    "schedule": "decay",
    "rate": 0.5,
    "rate_start": 0.5,
    "rate_step": 0.1,
    "rate_floor": 0.1,
    "rate_period": 3,
    "rate_every": 2,
    "rate_gamma": 0.9,
    "rate_table": (0.5,),
    "num_negatives": 2,
    "neg_rank": (1, 1),
    "neg_margin": 0.1,
    "dedupe_pairs": False,
    "index": "balltree",
    "shards": 3,
    "leaf_size": 4,
    "block_size": 8,
    "eval_mode": "retrieval",
    "fused_w": 0.5,
    "fused_grid": (0.0,),
    "eval_metric": "l2",
    "rerank_k": 3,
    "ks": (1,),
    "test_every": 2,
    "eval_training": True,
    "select_metric": "validation/mean/acc@1",
    "method": "reference",
    "label": "reference: fixed 0.8",
}


def each_field_changed(base):
    """``(field, base config, the config with that one field changed)`` for every Config field."""
    from counterarg.config import FIELD_NAMES

    assert set(OTHER_VALUES) == set(FIELD_NAMES), set(OTHER_VALUES) ^ set(FIELD_NAMES)
    for name, value in OTHER_VALUES.items():
        assert getattr(base, name) != value, name
        yield name, base, base.replace(**{name: value})


# ----------------------------------------------------------------------------- an S3 server on 127.0.0.1
class S3Server:
    """moto's S3-compatible server (``moto[server]``, a dev extra: the app ``ThreadedMotoServer`` runs,
    with a request counter in front) on a free 127.0.0.1 port, in a thread of this process: the real
    HTTP protocol, read by the real pyarrow and boto3 clients.
    It counts what it serves (:attr:`requests`: one ``[method, path, bytes in, bytes out]`` per request),
    for the tests that measure what a sweep sends."""

    def __init__(self) -> None:
        import logging
        import socket
        import threading

        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.requests: list[list] = []  # [method, path, bytes in, bytes out]
        self._lock = threading.Lock()
        app = DomainDispatcherApplication(create_backend_app)

        def counting(environ, start_response):
            method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
            size = environ.get("HTTP_X_AMZ_DECODED_CONTENT_LENGTH") or environ.get("CONTENT_LENGTH")  # aws-chunked
            row = [method, path, int(size or 0), 0]
            with self._lock:  # logged as it arrives, in order; its response bytes added as they go out
                self.requests.append(row)
            for chunk in app(environ, start_response):
                row[3] += len(chunk)
                yield chunk

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = make_server("127.0.0.1", self.port, counting, threaded=True, request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def env(self) -> dict[str, str]:
        """The standard AWS environment that points boto3 and pyarrow at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self):
        import boto3

        e = self.env()
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=e["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"],
            region_name=e["AWS_REGION"],
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key in ``bucket`` under ``prefix``."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """A fresh bucket on :class:`S3Server` and the AWS environment pointing at it (inherited by the
    drivers and Ray nodes a test starts); returns its name."""
    import uuid

    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    name = f"sweeps-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return name
