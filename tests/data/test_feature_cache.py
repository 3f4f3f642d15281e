"""The feature cache (counterarg.data.feature_cache, keyed by counterarg.model.features.cache_folder): sha256-sealed,
rebuilt when damaged, keyed by what changes the features, built once by parallel processes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import each_field_changed

from counterarg.config import CACHE, Config, fields_with
from counterarg.data.corpus import TextTable, load_corpus
from counterarg.model.features import cache_folder, cached_inputs


@pytest.fixture
def setup(tiny_encoder, tmp_path):
    cfg = Config(
        encoder=tiny_encoder, cache_dir=str(tmp_path / "cache"), max_length=32, finetune="none"
    )  # the pooled cache
    table = TextTable.from_corpus(load_corpus(None))
    return cfg, table


@pytest.mark.slow
def test_cache_records_sha256_and_rebuilds_a_cut_short_array(setup, capsys):
    """A truncated .npy is detected (sha256 in meta.json) and rebuilt, with a message."""
    cfg, table = setup
    first = cached_inputs(cfg, table, device=torch.device("cpu"), progress=False)["pooled"]
    folder, _ = cache_folder(cfg, table)
    meta = json.loads((folder / "meta.json").read_text())
    assert set(meta["files"]) == {"pooled.npy"} and len(meta["files"]["pooled.npy"]) == 64
    f = folder / "pooled.npy"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    again = cached_inputs(cfg, table, device=torch.device("cpu"), progress=False)["pooled"]
    assert "do not match their sha256" in capsys.readouterr().out
    np.testing.assert_array_equal(again, first)


@pytest.mark.slow
def test_bit_flip_in_the_cache_is_detected(setup, capsys):
    cfg, table = setup
    first = cached_inputs(cfg, table, device=torch.device("cpu"), progress=False)["pooled"]
    f = cache_folder(cfg, table)[0] / "pooled.npy"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x40
    f.write_bytes(bytes(data))
    again = cached_inputs(cfg, table, device=torch.device("cpu"), progress=False)["pooled"]
    assert "rebuilding" in capsys.readouterr().out
    np.testing.assert_array_equal(again, first)


@pytest.mark.slow
def test_cache_written_before_hashes_is_checked_once_and_sealed(setup, capsys):
    cfg, table = setup
    cached_inputs(cfg, table, device=torch.device("cpu"), progress=False)
    folder = cache_folder(cfg, table)[0]
    meta = json.loads((folder / "meta.json").read_text())
    del meta["files"]
    (folder / "meta.json").write_text(json.dumps(meta))
    cached_inputs(cfg, table, device=torch.device("cpu"), progress=False)
    assert "files" in json.loads((folder / "meta.json").read_text())  # sealed, not rebuilt
    assert "rebuilding" not in capsys.readouterr().out
    (folder / "meta.json").write_text(json.dumps(meta))
    f = folder / "pooled.npy"
    f.write_bytes(f.read_bytes()[:1000])  # an unsealed cache cut short: rebuilt too
    out = cached_inputs(cfg, table, device=torch.device("cpu"), progress=False)["pooled"]
    assert "damaged" in capsys.readouterr().out and out.shape[0] == len(table.texts)


def test_cache_key_follows_what_changes_the_features(setup, tmp_path):
    """The cache folder changes with pooling, max_length, the encoder's weights and the texts; not
    with fields that do not change the features (a constant key would serve stale features)."""
    cfg, table = setup
    key = cache_folder(cfg, table)[0]
    assert cache_folder(cfg.replace(pooling="cls"), table)[0] != key
    assert cache_folder(cfg.replace(max_length=16), table)[0] != key
    assert cache_folder(cfg.replace(finetune="top:1"), table)[0] != key
    import shutil

    from counterarg.data.demo import demo_corpus_path

    copy = tmp_path / "demo"
    shutil.copytree(demo_corpus_path(), copy)
    assert cache_folder(cfg, TextTable.from_corpus(load_corpus(copy)))[0] == key  # same texts elsewhere
    one = next(copy.rglob("*-counter.txt"))
    one.write_text(one.read_text(encoding="utf-8") + " One more sentence.", encoding="utf-8")
    assert cache_folder(cfg, TextTable.from_corpus(load_corpus(copy)))[0] != key  # one text changed
    assert cache_folder(cfg.replace(lr=0.5, seed=3, schedule="fixed", epochs=7), table)[0] == key


def test_the_cache_key_fields_are_those_of_the_cache_role(setup):
    """Changing a field of the ``cache`` role changes the cache folder; changing any other field does
    not (with the same texts): the role says what keys the cache, and the key reads nothing else."""
    cfg, table = setup
    changes = {
        name
        for name, start, changed in each_field_changed(cfg)
        if cache_folder(changed, table)[0] != cache_folder(start, table)[0]
    }
    assert changes == set(fields_with(CACHE))
    assert {"encoder", "pooling", "max_length", "finetune"} <= changes  # what the cached arrays are made from


def _build(args):
    cfg_dict, out = args
    from counterarg.config import Config as C
    from counterarg.data.corpus import TextTable as T
    from counterarg.data.corpus import load_corpus as lc
    from counterarg.model.features import cached_inputs as ci

    cfg = C.from_dict(cfg_dict)
    feats = ci(cfg, T.from_corpus(lc(None)), device=torch.device("cpu"), progress=False)["pooled"]
    np.save(out, feats)


@pytest.mark.slow
def test_two_processes_build_one_cache(setup, tmp_path):
    """Under the file lock, two concurrent builders produce one cache and read the same features."""
    import multiprocessing as mp

    cfg, table = setup
    outs = [str(tmp_path / f"f{i}.npy") for i in range(2)]
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(_build, [(cfg.to_dict(), o) for o in outs])
    a, b = (np.load(o) for o in outs)
    np.testing.assert_array_equal(a, b)
    folder = cache_folder(cfg, table)[0]
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "pooled.npy"]


def test_feature_cache_key_follows_encoder_content_not_location(tiny_encoder, tmp_path):
    """A copied or reinstalled encoder (new folder, new file times) reuses the cache; new weights
    of the same size saved in place do not."""
    import os
    import shutil

    from counterarg.nn.encoder import encoder_fingerprint

    copy = tmp_path / "copy"
    shutil.copytree(tiny_encoder, copy)
    for f in copy.iterdir():
        os.utime(f, (1_000_000_000, 1_000_000_000))
    assert encoder_fingerprint(str(copy)) == encoder_fingerprint(tiny_encoder)
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte changed
    weights.write_bytes(bytes(data))
    assert encoder_fingerprint(str(copy)) != encoder_fingerprint(tiny_encoder)
    assert encoder_fingerprint("some-org/not-local") != encoder_fingerprint("other-org/not-local")


def test_a_second_builder_waits_for_the_first_and_builds_nothing(tmp_path):
    """The cache lock, deterministically: while the first caller is inside its build, a second caller
    of the same folder waits (it has not returned after 0.5 s), then reads the first one's arrays
    without building."""
    import threading

    from counterarg.data.feature_cache import load_or_build

    folder, key = tmp_path / "pooled-x", {"kind": "pooled"}
    started, release, built, got = threading.Event(), threading.Event(), [], {}

    def first(f):
        built.append("first")
        started.set()
        assert release.wait(30)
        np.save(f / "pooled.npy", np.arange(6.0).reshape(3, 2))

    def call(name, build):
        got[name] = load_or_build(folder, key, build)

    a = threading.Thread(target=call, args=("first", first), daemon=True)
    a.start()
    assert started.wait(30)
    b = threading.Thread(target=call, args=("second", lambda f: built.append("second")), daemon=True)
    b.start()
    b.join(0.5)
    assert b.is_alive() and "second" not in got  # blocked on the lock while the first builds
    release.set()
    a.join(30)
    b.join(30)
    assert built == ["first"]
    np.testing.assert_array_equal(got["second"]["pooled"], np.arange(6.0).reshape(3, 2))


def test_a_symlinked_cache_lock_is_refused_and_its_target_untouched(setup, tmp_path):
    """``ln -sf ~/victim $CACHE/features/<entry>.lock`` must not empty ~/victim."""
    from counterarg.core.io import LockFileError

    cfg, table = setup
    folder, _ = cache_folder(cfg, table)
    folder.parent.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (folder.parent / f"{folder.name}.lock").symlink_to(victim)
    with pytest.raises(LockFileError, match="symbolic link"):
        cached_inputs(cfg, table, device=torch.device("cpu"), progress=False)
    assert victim.read_text() == "precious"


@pytest.mark.slow
def test_an_entry_whose_hashes_match_but_cannot_be_read_is_rebuilt(setup, capsys):
    """Any read error (here an object array, sealed with its own sha256) rebuilds."""
    from counterarg.core.io import sha256_file

    cfg, table = setup
    first = cached_inputs(cfg, table, device=torch.device("cpu"), progress=False)["pooled"]
    folder = cache_folder(cfg, table)[0]
    np.save(folder / "pooled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    meta = json.loads((folder / "meta.json").read_text())
    meta["files"]["pooled.npy"] = sha256_file(folder / "pooled.npy")
    (folder / "meta.json").write_text(json.dumps(meta))
    again = cached_inputs(cfg, table, device=torch.device("cpu"), progress=False)["pooled"]
    assert "cannot be used" in capsys.readouterr().out
    np.testing.assert_array_equal(again, first)


def test_a_build_cut_short_by_a_full_disk_leaves_no_half_entry(tmp_path):
    """The entry is filled beside its place and swapped in whole, so a
    build that fails (disk full) leaves no entry and no leftover, and says that the disk is full."""
    import errno

    from counterarg.core.io import DiskFullError
    from counterarg.data.feature_cache import load_or_build

    folder = tmp_path / "features" / "pooled-x"

    def build(f):
        np.save(f / "pooled.npy", np.zeros((3, 2)))
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError, match=f"could not write {folder}"):
        load_or_build(folder, {"kind": "pooled"}, build)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["pooled-x.lock"]
    got = load_or_build(folder, {"kind": "pooled"}, lambda f: np.save(f / "pooled.npy", np.ones((3, 2))))
    np.testing.assert_array_equal(got["pooled"], np.ones((3, 2)))
