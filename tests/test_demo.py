"""The generated demo corpus (counterarg.demo): complete, deterministic, flagged as a demo."""

from __future__ import annotations

from counterarg.corpus import load_corpus
from counterarg.demo import demo_corpus_path, write_demo_corpus

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
