"""Shared fixtures: a tiny random BERT, the real corpus when present, an isolated feature cache and
a Ray temp root per test. The sweep tests' own fixtures and helpers are in ``tests/sweep/conftest.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from counterarg.corpus import real_corpus_path

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


@pytest.fixture(autouse=True)
def _own_ray_temp(monkeypatch):
    """Each test's Ray (in-process, sweep drivers it starts, cluster nodes) keeps its sessions in a
    temp root of its own (short: Ray's socket paths are length-limited), so state repair, which
    scans Ray's temp folders for the driver's staging copies, never sees another test's sessions.
    Test sweeps also get unique names (``unique_name`` in tests/sweep/conftest.py), since repair scans /tmp/ray as well."""
    import contextlib
    import shutil
    import tempfile

    root = tempfile.mkdtemp(prefix="cr-ray-", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", root)
    yield root
    import sys

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        shutil.rmtree(root, ignore_errors=True)
    else:  # a Ray still running (a module's shared session) may be using it: remove it only if empty
        with contextlib.suppress(OSError):
            os.rmdir(root)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    from counterarg.testing import make_tiny_encoder

    return make_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def real_corpus() -> Path:
    if not REAL_CORPUS.exists():
        pytest.skip(f"real ArguAna corpus not found at {REAL_CORPUS} (set COUNTERARG_CORPUS, or put it in "
                    "../shared/data beside the repo)")
    return REAL_CORPUS
