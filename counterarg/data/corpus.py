"""Reader for the ArguAna Counterargs corpus, as distributed (zip) or unpacked.

Layout: ``02-extracted-arguments/{training,validation,test}/THEME/DEBATE/{pro,con}/XNN{a-point,b-counter}.txt``.
A point ``XNNa-point.txt`` and the counter ``XNNb-counter.txt`` beside it are a true pair. Every file is
kept or reported: a name outside the pattern, bytes that are not UTF-8, an empty text, a file over
:data:`MAX_FILE_BYTES` or a symlink pointing outside a corpus folder stop the read with
:class:`CorpusError` naming the file; hidden files and folders (``.name``, ``__MACOSX``) are skipped
and listed in ``Corpus.skipped``. A UTF-8 byte order mark is not part of the text.
:class:`TextTable` numbers the distinct texts of the loaded splits (ArguAna repeats many texts:
debates are filed under several themes), so features, caches and embeddings are per unique text.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from ..core.paths import is_remote

#: The corpus splits, in order (the folders of an unpacked corpus).
SPLITS = ("training", "validation", "test")

ARGS_DIR = "02-extracted-arguments"
#: One argument file may hold at most this many bytes (ArguAna's largest is about 7 KB); the whole
#: corpus at most MAX_CORPUS_BYTES. Checked before reading, so a stray huge file fails at once.
MAX_FILE_BYTES = 1 << 20
MAX_CORPUS_BYTES = 1 << 30
#: a corpus zip up to this size is read into memory at once: its ~14,000 members then cost no seek and
#: read each (about 40% of reading ArguAna's 13 MB zip, which every command that loads a corpus does)
IN_MEMORY_ZIP_BYTES = 256 << 20
FILE_RE = re.compile(r"(?P<side>pro|con)(?P<number>\d+)(?P<kind>a-point|b-counter)\.txt")


#: where the real corpus lies beside a checkout (../shared/data), unless COUNTERARG_CORPUS names it
SHARED_CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "arguana-counterargs-corpus.zip"


def real_corpus_path() -> Path:
    """The real ArguAna corpus for tests and benchmarks: ``$COUNTERARG_CORPUS`` (a zip or folder,
    anywhere) or ``../shared/data/arguana-counterargs-corpus.zip`` beside the repository."""
    env = os.environ.get("COUNTERARG_CORPUS")
    return Path(env).expanduser() if env else SHARED_CORPUS


class CorpusError(ValueError):
    """The corpus cannot be read as given; the message names the path or value."""


@dataclass(frozen=True)
class Record:
    """One argument file."""

    split: str
    theme: str
    debate: str  # folder name; unique only within its theme
    side: str  # pro | con: the folder, i.e. the side of the point
    number: int
    kind: str  # point | counter
    text: str
    source: str  # path of the file (inside the zip: "zip!member")

    @property
    def debate_key(self) -> str:
        return f"{self.theme}/{self.debate}"


@dataclass(frozen=True)
class Pair:
    point: Record
    counter: Record


@dataclass
class Split:
    """One split's records; ``pairs`` are its true (point, counter) pairs in a stable order."""

    name: str
    records: list[Record]
    pairs: list[Pair]
    unpaired: list[Record]

    def counts(self) -> dict[str, int]:
        kinds = Counter(r.kind for r in self.records)
        return {
            "points": kinds.get("point", 0),
            "counters": kinds.get("counter", 0),
            "pairs": len(self.pairs),
            "unpaired": len(self.unpaired),
            "debates": len({r.debate_key for r in self.records}),
            "themes": len({r.theme for r in self.records}),
        }


@dataclass
class Corpus:
    source: str
    splits: dict[str, Split]
    is_demo: bool = False
    fingerprint: str = field(default="")
    skipped: list[str] = field(default_factory=list)  # hidden files/folders left out (reported, not read)

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise CorpusError(
                f"corpus {self.source} has no split {name!r} (it has: {', '.join(self.splits) or 'none'})"
            )
        return self.splits[name]

    def counts_table(self) -> str:
        rows = [
            f"{'split':<11} {'points':>7} {'counters':>9} {'pairs':>6} {'unpaired':>9} {'debates':>8} {'themes':>7}"
        ]
        for name, s in self.splits.items():
            c = s.counts()
            rows.append(
                f"{name:<11} {c['points']:>7} {c['counters']:>9} {c['pairs']:>6} {c['unpaired']:>9} "
                f"{c['debates']:>8} {c['themes']:>7}"
            )
        return "\n".join(rows)

    def announce(self, progress: bool) -> None:
        """Say which corpus was loaded: its source and counts (with ``progress``), and always that it
        is the demo corpus or that hidden files were skipped (data the user may have meant to include)."""

        def say(msg: str) -> None:
            print(f"[counterarg] {msg}", flush=True)

        if self.is_demo:  # results on it mean nothing for ArguAna
            say(f"no corpus given: using the generated DEMO corpus at {self.source} (pass --corpus PATH for ArguAna)")
        if progress:
            say(f"corpus {self.source}\n{self.counts_table()}")
        if self.skipped:
            shown = ", ".join(self.skipped[:5]) + (" ..." if len(self.skipped) > 5 else "")
            say(f"skipped {len(self.skipped)} hidden file(s)/folder(s) of the corpus: {shown}")


@dataclass
class SplitIds:
    point: np.ndarray  # [Q] unique-text id of each pair's point
    counter: np.ndarray  # [Q] unique-text id of each pair's counter


@dataclass
class TextTable:
    """Unique texts of the loaded splits and, per split, the text ids of its pairs."""

    texts: list[str]
    splits: dict[str, SplitIds]
    fingerprint: str

    @classmethod
    def from_corpus(cls, corpus: Corpus) -> TextTable:
        index: dict[str, int] = {}
        texts: list[str] = []

        def tid(text: str) -> int:
            if text not in index:
                index[text] = len(texts)
                texts.append(text)
            return index[text]

        splits = {}
        for name, split in corpus.splits.items():
            splits[name] = SplitIds(
                point=np.array([tid(p.point.text) for p in split.pairs], dtype=np.int64),
                counter=np.array([tid(p.counter.text) for p in split.pairs], dtype=np.int64),
            )
        h = hashlib.sha256()
        for t in texts:
            h.update(t.encode())
            h.update(b"\0")
        return cls(texts=texts, splits=splits, fingerprint=h.hexdigest()[:16])


def load_corpus(path: str | Path | None, *, splits: tuple[str, ...] | None = None) -> Corpus:
    """Read a corpus zip or folder; ``None`` gives the generated demo corpus."""
    if path is None:
        from .demo import demo_corpus_path

        corpus = load_corpus(demo_corpus_path(), splits=splits)
        corpus.is_demo = True
        return corpus
    if is_remote(path):  # s3://..., gs://...: fetched into this machine's cache, checked
        from ..core.remote import fetched_input  # pyarrow: only for a remote input

        path = fetched_input(str(path), CorpusError, "corpus")
    p = Path(path).expanduser()
    if not p.exists():
        raise CorpusError(f"corpus path does not exist: {p}")
    if p.is_file():
        if not zipfile.is_zipfile(p):
            raise CorpusError(f"corpus file is not a zip archive: {p}")
        files, skipped = _zip_files(p)
    else:
        files, skipped = _folder_files(p)
    corpus = _build(str(p), files, splits)
    corpus.skipped = skipped
    return corpus


# --------------------------------------------------------------------------- sources
def _hidden_names(all_parts, prefix: tuple[str, ...] = (), in_tree: bool = False) -> list[str]:
    """The hidden files/folders inside the arguments tree, each named once at its hidden level.

    Hidden entries beside the tree (a cache marker, ``__MACOSX`` at the top) could not be arguments
    and are not listed. ``in_tree``: the root given is the tree itself or one split folder.
    """
    out = []
    for parts in all_parts:
        for i, part in enumerate(parts):
            if part.startswith(".") or part == "__MACOSX":
                if in_tree or prefix or ARGS_DIR in parts[:i]:
                    out.append("/".join((*prefix, *parts[: i + 1])))
                break
    return sorted(set(out))


def _check_size(size: int, total: int, display: str) -> None:
    if size > MAX_FILE_BYTES:
        raise CorpusError(f"file is {size} bytes, over the limit of {MAX_FILE_BYTES} bytes for one argument: {display}")
    if total > MAX_CORPUS_BYTES:
        raise CorpusError(f"corpus is over the limit of {MAX_CORPUS_BYTES} bytes of argument files (at {display})")


def _zip_files(path: Path) -> tuple[list[tuple[tuple[str, ...], str, bytes]], list[str]]:
    """(parts below the split level incl. split, display path, bytes) for every member file; hidden names."""
    out = []
    size = path.stat().st_size
    with zipfile.ZipFile(io.BytesIO(path.read_bytes()) if size <= IN_MEMORY_ZIP_BYTES else path) as zf:
        infos = [i for i in zf.infolist() if not i.filename.endswith("/")]
        all_parts = [PurePosixPath(i.filename).parts for i in infos]
        rel = _relative_parts(all_parts, str(path))
        total = 0
        for info, parts in zip(infos, rel):
            if parts is None:
                continue
            total += info.file_size
            _check_size(info.file_size, total, f"{path}!{info.filename}")
            out.append((parts, f"{path}!{info.filename}", zf.read(info)))
    return out, _hidden_names(all_parts)


def _folder_files(root: Path) -> tuple[list[tuple[tuple[str, ...], str, bytes]], list[str]]:
    files = sorted(f for f in root.rglob("*") if f.is_file())
    all_parts = [f.relative_to(root).parts for f in files]
    rel = _relative_parts(all_parts, str(root), root_name=root.name)
    real_root = root.resolve()
    out, total = [], 0
    for f, parts in zip(files, rel):
        if parts is None:
            continue
        real = f.resolve()
        if real != real_root and real_root not in real.parents:
            raise CorpusError(
                f"{f} is a symlink to {real}, outside the corpus folder {root}; copy the file into the corpus instead"
            )
        size = real.stat().st_size
        total += size
        _check_size(size, total, str(f))
        out.append((parts, str(f), f.read_bytes()))
    return out, _hidden_names(all_parts, (root.name,) if root.name in SPLITS else (), in_tree=root.name == ARGS_DIR)


def _relative_parts(all_parts, source: str, root_name: str | None = None) -> list[tuple[str, ...] | None]:
    """Map each file's path parts to (split, theme, debate, side, file), or None when outside the args tree.

    Accepts the corpus root, ``02-extracted-arguments`` itself, or a single split folder.
    """
    if root_name in SPLITS:  # a single split folder was given
        return [(root_name, *parts) if not _hidden(parts) else None for parts in all_parts]
    out: list[tuple[str, ...] | None] = []
    found = False
    for parts in all_parts:
        if _hidden(parts):
            out.append(None)
            continue
        if ARGS_DIR in parts:
            i = parts.index(ARGS_DIR)
            rest = parts[i + 1 :]
        elif root_name == ARGS_DIR:
            rest = parts
        else:
            out.append(None)  # e.g. the corpus readme beside the args tree
            continue
        found = True
        out.append(tuple(rest))
    if not found:
        raise CorpusError(
            f"no {ARGS_DIR}/{{training,validation,test}} folders found in {source}; "
            "pass the corpus zip, its unpacked root, its 02-extracted-arguments folder or one split folder"
        )
    return out


def _hidden(parts) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


# --------------------------------------------------------------------------- building
def _build(source: str, files, wanted: tuple[str, ...] | None) -> Corpus:
    by_split: dict[str, list[Record]] = {}
    digest = hashlib.sha256()
    for parts, display, data in sorted(files, key=lambda t: t[0]):
        if len(parts) != 5:
            raise CorpusError(
                f"unexpected file {display}: expected SPLIT/THEME/DEBATE/{{pro,con}}/XNN{{a-point,b-counter}}.txt"
            )
        split, theme, debate, side, fname = parts
        if split not in SPLITS:
            raise CorpusError(f"unexpected split folder {split!r} at {display}; expected one of {', '.join(SPLITS)}")
        if wanted is not None and split not in wanted:
            continue
        m = FILE_RE.fullmatch(fname)
        if m is None:
            raise CorpusError(f"file name outside the pattern XNN{{a-point,b-counter}}.txt: {display}")
        if side not in ("pro", "con"):
            raise CorpusError(f"side folder must be pro or con, got {side!r}: {display}")
        if m["side"] != side:
            raise CorpusError(f"file {fname} lies in the {side!r} folder but is named {m['side']!r}: {display}")
        try:
            text = data.decode("utf-8-sig").replace("\ufeff", "")  # a byte order mark is not text
        except UnicodeDecodeError as e:
            raise CorpusError(f"file is not valid UTF-8 ({e.reason} at byte {e.start}): {display}") from None
        text = text.strip()
        if not text:
            raise CorpusError(f"file has no text: {display}")
        digest.update("/".join(parts).encode())
        digest.update(b"\0")
        digest.update(text.encode())
        by_split.setdefault(split, []).append(
            Record(
                split,
                theme,
                debate,
                side,
                int(m["number"]),
                "point" if m["kind"] == "a-point" else "counter",
                text,
                display,
            )
        )
    if not by_split:
        raise CorpusError(f"no argument files found in {source}" + (f" for splits {wanted}" if wanted else ""))
    splits = {}
    for name in SPLITS:
        if name in by_split:
            splits[name] = _pair(name, by_split[name])
    return Corpus(source=source, splits=splits, fingerprint=digest.hexdigest()[:16])


def _pair(name: str, records: list[Record]) -> Split:
    slots: dict[tuple, dict[str, Record]] = {}
    for r in records:
        key = (r.theme, r.debate, r.side, r.number)
        slot = slots.setdefault(key, {})
        if r.kind in slot:  # cannot happen with a file system, but a zip may hold duplicate names
            raise CorpusError(f"duplicate {r.kind} for {key}: {slot[r.kind].source} and {r.source}")
        slot[r.kind] = r
    pairs: list[Pair] = []
    unpaired: list[Record] = []
    for key in sorted(slots):
        slot = slots[key]
        if "point" in slot and "counter" in slot:
            pairs.append(Pair(slot["point"], slot["counter"]))
        else:
            unpaired.extend(slot.values())
    return Split(name, records, pairs, unpaired)
