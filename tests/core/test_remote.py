"""Sealed folders in object storage and their local cache, against moto's S3 server on 127.0.0.1
through the real pyarrow client (the ``s3_server`` / ``s3_bucket`` fixtures in tests/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.fs as pafs
import pytest

from counterarg.core.io import write_manifest
from counterarg.core.remote import (
    RemoteFolderError,
    fetch_file,
    fetch_sealed_dir,
    filesystem,
    localize,
    put_sealed_dir,
    remote_manifest,
)


@pytest.mark.parametrize("var", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"])
def test_pyarrow_reads_the_endpoint_from_the_standard_aws_environment(s3_server, s3_bucket, var):
    """The assumption the project rests on (no flag of ours for MinIO, Ceph, a cloud): pyarrow's
    ``FileSystem.from_uri`` takes the endpoint from either variable. Checked in a fresh process,
    where the AWS SDK is initialised with that environment alone."""
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")}
    env[var] = s3_server.endpoint
    code = (
        "import pyarrow.fs as f\n"
        f"fs, p = f.FileSystem.from_uri('s3://{s3_bucket}/probe')\n"
        "with fs.open_output_stream(p + '/x') as o: o.write(b'hello')\n"
        "print(fs.get_file_info(p + '/x').size)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "5"
    assert "probe/x" in s3_server.keys(s3_bucket)


def _folder(tmp_path, name="src", **files):
    d = tmp_path / name
    d.mkdir()
    for k, v in files.items():
        (d / k).write_bytes(v)
    write_manifest(d, epoch=3)
    return d


def test_sealed_folder_round_trip_and_cache(s3_server, s3_bucket, tmp_path):
    src = _folder(tmp_path, a=b"A" * 1000, b=b"B")
    uri = f"s3://{s3_bucket}/exp/trial_1/best"
    fs, path = filesystem(uri)
    put_sealed_dir(src, fs, path)
    assert s3_server.keys(s3_bucket, "exp/") == [f"exp/trial_1/best/{n}" for n in ("a", "b", "manifest.json")]
    got = fetch_sealed_dir(uri, cache=tmp_path / "cache")
    assert (got / "a").read_bytes() == b"A" * 1000 and json.loads((got / "manifest.json").read_text())["epoch"] == 3
    n = len(s3_server.requests)
    assert fetch_sealed_dir(uri, cache=tmp_path / "cache") == got  # cached: only the manifest is read
    assert [p.rsplit("/", 1)[-1] for _, p, *_ in s3_server.requests[n:]] == ["manifest.json"] * 2  # HEAD, GET
    # a newer epoch replaces it: the stale file goes, the cache key changes
    newer = _folder(tmp_path, "newer", a=b"new")
    put_sealed_dir(newer, fs, path)
    files = [k for k in s3_server.keys(s3_bucket, "exp/") if not k.endswith("/")]  # pyarrow's folder markers aside
    assert files == [f"exp/trial_1/best/{n}" for n in ("a", "manifest.json")]
    again = fetch_sealed_dir(uri, cache=tmp_path / "cache")
    assert again != got and (again / "a").read_bytes() == b"new" and not (again / "b").exists()


def test_a_cut_short_upload_is_refused_by_name(s3_server, s3_bucket, tmp_path):
    src = _folder(tmp_path, model=b"W" * 4096, config=b"{}")
    uri = f"s3://{s3_bucket}/exp/trial_2/best"
    fs, path = filesystem(uri)
    put_sealed_dir(src, fs, path)
    with fs.open_output_stream(f"{path}/model") as f:  # a later upload cut short: half the file
        f.write(b"W" * 2048)
    with pytest.raises(RemoteFolderError, match=r"trial_2/best: model missing or not matching"):
        fetch_sealed_dir(uri, cache=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("model"))  # nothing half-fetched kept
    # an upload killed before its manifest: the old manifest was deleted first, so no reader takes it
    fs.delete_file(f"{path}/manifest.json")
    assert remote_manifest(fs, path) is None
    with pytest.raises(RemoteFolderError, match="no manifest.json"):
        localize(uri, cache=tmp_path / "cache")


def test_put_sealed_dir_deletes_the_old_manifest_before_any_file(s3_server, s3_bucket, tmp_path):
    """The order a reader relies on: manifest gone, files up, manifest last."""
    fs, path = filesystem(f"s3://{s3_bucket}/exp/best")
    put_sealed_dir(_folder(tmp_path, "one", x=b"1"), fs, path)
    n = len(s3_server.requests)
    put_sealed_dir(_folder(tmp_path, "two", x=b"2"), fs, path)
    writes = [
        (m, p.rsplit("/", 1)[-1])
        for m, p, *_ in s3_server.requests[n:]
        if m in ("PUT", "DELETE") and p.rsplit("/", 1)[-1] in ("x", "manifest.json")
    ]
    assert writes[0] == ("DELETE", "manifest.json") and writes[-1] == ("PUT", "manifest.json"), writes
    assert ("PUT", "x") in writes


def test_fetch_file_keeps_the_name_and_refetches_a_changed_file(s3_server, s3_bucket, tmp_path):
    fs, path = filesystem(f"s3://{s3_bucket}/data/corpus.zip")
    with fs.open_output_stream(path) as f:
        f.write(b"PK" + b"x" * 100)
    got = fetch_file(f"s3://{s3_bucket}/data/corpus.zip", cache=tmp_path / "c")
    assert got.name == "corpus.zip" and got.stat().st_size == 102
    with pytest.raises(FileNotFoundError, match="no such file"):
        fetch_file(f"s3://{s3_bucket}/data/missing.zip", cache=tmp_path / "c")
    assert isinstance(filesystem(str(tmp_path))[0], pafs.LocalFileSystem)


def test_cli_commands_take_a_remote_best_folder(s3_server, s3_bucket, top1_checkpoint, tmp_path, monkeypatch, capsys):
    """``counterarg export|evaluate`` with ``--checkpoint s3://.../best``: fetched, checked, used; a
    cut-short one is an error naming the file (exit 2)."""
    from counterarg.cli import main

    monkeypatch.setenv("COUNTERARG_CACHE", str(tmp_path / "cache"))
    uri = f"s3://{s3_bucket}/exp/trial_3/best"
    fs, path = filesystem(uri)
    put_sealed_dir(top1_checkpoint, fs, path)
    assert main(["export", "--checkpoint", uri, "--out", str(tmp_path / "model")]) == 0
    assert (tmp_path / "model").is_dir()
    name = next(n for n in remote_manifest(fs, path)["files"] if n.endswith(".safetensors") or n.endswith(".pt"))
    with fs.open_output_stream(f"{path}/{name}") as f:
        f.write(b"cut")
    monkeypatch.setenv("COUNTERARG_CACHE", str(tmp_path / "other-cache"))  # the first cache holds a whole copy
    assert main(["evaluate", "--checkpoint", uri, "--split", "validation"]) == 2
    assert f"{name} missing or not matching its manifest.json" in capsys.readouterr().err


def test_a_remote_input_that_fails_its_manifest_is_the_loaders_own_error(s3_server, s3_bucket, tmp_path, monkeypatch):
    """``load_corpus`` and ``resolve_encoder`` fetch a remote input through ``fetched_input``: a folder
    without its manifest is a CorpusError / EncoderError naming the input and the URI, not a raw
    storage error, and nothing is left in the cache."""
    from counterarg.data.corpus import CorpusError, load_corpus
    from counterarg.nn.encoder import EncoderError, resolve_encoder

    monkeypatch.setenv("COUNTERARG_CACHE", str(tmp_path / "cache"))
    uri = f"s3://{s3_bucket}/inputs/unsealed"
    fs, path = filesystem(uri)
    with fs.open_output_stream(f"{path}/config.json") as f:  # files up, no manifest.json: not sealed
        f.write(b"{}")
    with pytest.raises(CorpusError, match=rf"corpus {uri}: .*no manifest.json"):
        load_corpus(uri)
    with pytest.raises(EncoderError, match=rf"encoder {uri}: .*no manifest.json"):
        resolve_encoder(uri)
    assert not list((tmp_path / "cache").rglob("config.json"))
