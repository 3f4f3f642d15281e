import zipfile
from pathlib import Path

import pytest

from counterarg.data.corpus import SHARED_CORPUS, CorpusError, load_corpus, real_corpus_path

ROOT = "arguana-counterargs-corpus/02-extracted-arguments"


def make_tree(base: Path, files: dict[str, bytes | str]) -> Path:
    for rel, data in files.items():
        f = base / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data if isinstance(data, bytes) else data.encode())
    return base


def small_files(split="training"):
    d = f"{ROOT}/{split}/economy/house-would-tax"
    return {
        f"{d}/pro/pro01a-point.txt": "Tax the rich.\n",
        f"{d}/pro/pro01b-counter.txt": "The rich leave.\n",
        f"{d}/pro/pro02a-point.txt": "An unpaired point.\n",
        f"{d}/con/con01a-point.txt": "Taxes hurt growth.\n",
        f"{d}/con/con01b-counter.txt": "Growth is unaffected.\n",
        "arguana-counterargs-corpus/arguana-counterargs-readme.txt": "readme, ignored",
    }


def zip_of(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())
    return out


def check_small(c):
    s = c.split("training")
    assert s.counts() == {"points": 3, "counters": 2, "pairs": 2, "unpaired": 1, "debates": 1, "themes": 1}
    p = s.pairs[0]
    assert (p.point.side, p.point.number, p.point.kind, p.point.text) == ("con", 1, "point", "Taxes hurt growth.")
    assert p.counter.text == "Growth is unaffected." and p.point.theme == "economy"
    assert s.unpaired[0].source.endswith("pro02a-point.txt")


def test_folder_zip_and_subfolders_agree(tmp_path):
    root = make_tree(tmp_path / "u", small_files())
    z = zip_of(root, tmp_path / "c.zip")
    variants = [root, root / "arguana-counterargs-corpus", root / ROOT, root / ROOT / "training", z]
    corpora = [load_corpus(v) for v in variants]
    for c in corpora:
        check_small(c)
    assert len({c.fingerprint for c in corpora}) == 1


@pytest.mark.parametrize(
    "name, data, match",
    [
        ("pro/pro01-point.txt", "x", "pattern"),
        ("pro/notes.md", "x", "pattern"),
        ("pro/pro03a-point.txt", b"caf\xe9 latin-1", "UTF-8"),
        ("pro/pro04a-point.txt", "  \n ", "no text"),
        ("pro/con05a-point.txt", "x", "named"),
        ("middle/pro06a-point.txt", "x", "side folder"),
    ],
)
def test_bad_files_are_named(tmp_path, name, data, match):
    files = small_files()
    files[f"{ROOT}/training/economy/house-would-tax/{name}"] = data
    root = make_tree(tmp_path / "u", files)
    for src in (root, zip_of(root, tmp_path / "c.zip")):
        with pytest.raises(CorpusError, match=match) as e:
            load_corpus(src)
        assert Path(name).name in str(e.value)


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(tmp_path / "nope.zip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no 02-extracted-arguments"):
        load_corpus(tmp_path / "empty")
    (tmp_path / "fake.zip").write_text("not a zip")
    with pytest.raises(CorpusError, match="not a zip"):
        load_corpus(tmp_path / "fake.zip")
    files = small_files()
    files[f"{ROOT}/dev/economy/d/pro/pro01a-point.txt"] = "x"
    with pytest.raises(CorpusError, match="split folder 'dev'"):
        load_corpus(make_tree(tmp_path / "u", files))
    c = load_corpus(make_tree(tmp_path / "v", small_files()))
    with pytest.raises(CorpusError, match="no split 'test'"):
        c.split("test")


@pytest.mark.corpus
def test_real_corpus_counts(real_corpus):
    c = load_corpus(real_corpus)
    got = {n: s.counts() for n, s in c.splits.items()}
    assert [(got[s]["points"], got[s]["counters"]) for s in ("training", "validation", "test")] == [
        (4083, 4065),
        (1290, 1287),
        (1406, 1401),
    ]
    assert all(got[s]["themes"] == 15 for s in got)
    assert all(got[s]["pairs"] + got[s]["unpaired"] == got[s]["points"] for s in got)


# ---------------------------------------------------------------- hidden files, symlinks, BOM, size limits
def test_hidden_folders_are_reported(tmp_path):
    """A hidden folder (test/.economy) is skipped, but said, not dropped without a word."""
    files = small_files()
    files[f"{ROOT}/training/.economy/d/pro/pro01a-point.txt"] = "hidden point"
    root = make_tree(tmp_path / "u", files)
    for src in (root, zip_of(root, tmp_path / "c.zip")):
        c = load_corpus(src)
        check_small(c)
        assert any(s.endswith("training/.economy") for s in c.skipped), c.skipped


@pytest.mark.slow
def test_hidden_folders_are_said_by_train(tiny_encoder, tmp_path, capsys):
    import shutil

    from counterarg.cli import main
    from counterarg.data.demo import demo_corpus_path

    corpus = tmp_path / "c"
    shutil.copytree(demo_corpus_path(), corpus)
    hidden = corpus / "02-extracted-arguments" / "test" / ".economy"
    hidden.mkdir()
    (hidden / "note.txt").write_text("x")
    assert (
        main(
            [
                "train",
                "--corpus",
                str(corpus),
                "--out",
                str(tmp_path / "r"),
                "--epochs",
                "1",
                "--quiet",
                "--set",
                f"encoder={tiny_encoder}",
            ]
        )
        == 0
    )
    assert (
        "skipped 1 hidden file(s)/folder(s) of the corpus: 02-extracted-arguments/test/.economy"
        in capsys.readouterr().out
    )


def test_symlink_outside_the_corpus_folder_is_refused(tmp_path):
    """A symlink inside a corpus folder is not followed outside it."""
    outside = tmp_path / "secret.txt"
    outside.write_text("not an argument")
    root = make_tree(tmp_path / "u", small_files())
    link = root / ROOT / "training/economy/house-would-tax/pro/pro03a-point.txt"
    link.symlink_to(outside)
    with pytest.raises(CorpusError, match=r"pro03a-point\.txt is a symlink .*outside the corpus"):
        load_corpus(root)
    link.unlink()
    inside = root / ROOT / "training/economy/house-would-tax/pro/pro01a-point.txt"
    link.symlink_to(inside)  # a link within the folder is fine
    assert load_corpus(root).split("training").counts()["points"] == 4


def test_utf8_byte_order_mark_is_stripped(tmp_path):
    """A BOM is not part of the text."""
    files = small_files()
    files[f"{ROOT}/training/economy/house-would-tax/con/con01a-point.txt"] = b"\xef\xbb\xbfTaxes hurt growth.\n"
    root = make_tree(tmp_path / "u", files)
    for src in (root, zip_of(root, tmp_path / "c.zip")):
        c = load_corpus(src)
        check_small(c)
        assert all("\ufeff" not in r.text for r in c.split("training").records)


def test_file_over_the_size_limit_is_named(tmp_path, monkeypatch):
    """A huge file fails at once with its name, before it is read."""
    import counterarg.data.corpus as corpus_mod

    monkeypatch.setattr(corpus_mod, "MAX_FILE_BYTES", 100)
    files = small_files()
    files[f"{ROOT}/training/economy/house-would-tax/pro/pro09a-point.txt"] = "word " * 50
    root = make_tree(tmp_path / "u", files)
    for src in (root, zip_of(root, tmp_path / "c.zip")):
        with pytest.raises(CorpusError, match=r"250 bytes, over the limit of 100 bytes .*pro09a-point\.txt"):
            load_corpus(src)


def test_the_shared_corpus_is_looked_for_beside_the_checkout(monkeypatch):
    """``../shared/data`` beside the folder holding pyproject.toml, wherever corpus.py sits in the package
    (a wrong depth would skip every corpus test silently)."""
    checkout = Path(__file__).resolve().parents[2]
    assert (checkout / "pyproject.toml").is_file()
    assert SHARED_CORPUS == checkout.parent / "shared" / "data" / "arguana-counterargs-corpus.zip"
    monkeypatch.delenv("COUNTERARG_CORPUS", raising=False)
    assert real_corpus_path() == SHARED_CORPUS


def test_a_corpus_in_object_storage_is_fetched_and_a_missing_one_named(s3_server, s3_bucket, tmp_path, monkeypatch):
    """``load_corpus("s3://...")`` reads the zip through this machine's cache; a key that is not there
    is a CorpusError naming the URI (no traceback from pyarrow)."""
    import shutil

    from counterarg.data.demo import demo_corpus_path

    monkeypatch.setenv("COUNTERARG_CACHE", str(tmp_path / "cache"))
    archive = shutil.make_archive(str(tmp_path / "demo"), "zip", demo_corpus_path())
    with open(archive, "rb") as f:
        s3_server.client().put_object(Bucket=s3_bucket, Key="data/demo.zip", Body=f.read())
    local = load_corpus(demo_corpus_path())
    remote = load_corpus(f"s3://{s3_bucket}/data/demo.zip")
    assert {s: v.counts() for s, v in remote.splits.items()} == {s: v.counts() for s, v in local.splits.items()}
    assert remote.source.startswith(str(tmp_path / "cache"))
    with pytest.raises(CorpusError, match=f"s3://{s3_bucket}/data/nope.zip"):
        load_corpus(f"s3://{s3_bucket}/data/nope.zip")
