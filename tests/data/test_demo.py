"""The generated demo corpus (counterarg.data.demo): complete, deterministic, flagged as a demo."""

from __future__ import annotations

from counterarg.data.corpus import load_corpus
from counterarg.data.demo import VERSION, demo_corpus_path, write_demo_corpus


def test_demo_corpus_is_generated_and_flagged():
    c = load_corpus(None)
    assert c.is_demo and set(c.splits) == {"training", "validation", "test"}
    counts = c.split("training").counts()
    assert counts["pairs"] > 100 and counts["unpaired"] > 0
    assert load_corpus(None).fingerprint == c.fingerprint  # deterministic


def test_demo_corpus_is_written_once_and_the_same_for_the_same_seed(tmp_path):
    a = write_demo_corpus(tmp_path / "a")
    b = write_demo_corpus(tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*.txt"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.txt"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert {f.parts[1] for f in files} == {"training", "validation", "test"}
    other = write_demo_corpus(tmp_path / "c", seed=14)
    assert sorted(p.read_text() for p in other.rglob("*.txt")) != sorted(p.read_text() for p in a.rglob("*.txt"))
    first = demo_corpus_path(str(tmp_path / "cache"))
    assert (first / ".complete").exists() and demo_corpus_path(str(tmp_path / "cache")) == first


def test_a_demo_corpus_cut_short_by_a_full_disk_leaves_none_half_written(tmp_path, monkeypatch):
    """Writing the demo corpus into a full cache gave an Errno 28 traceback and
    could leave a half-written folder; now a named DiskFullError and nothing in its place."""
    import errno

    import pytest

    from counterarg.core import io
    from counterarg.core.io import DiskFullError

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(io, "_fsync_file", full)
    with pytest.raises(DiskFullError, match="demo-corpus"):
        demo_corpus_path(str(tmp_path / "cache"))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f"demo-corpus-{VERSION}.lock"]
    monkeypatch.undo()
    assert (demo_corpus_path(str(tmp_path / "cache")) / ".complete").exists()
