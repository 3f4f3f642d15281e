"""Files named on the command line (counterarg.data.inputs): one UTF-8 reader, errors naming file and line."""

from __future__ import annotations

import pytest

from counterarg.config import ConfigError
from counterarg.data.inputs import read_input_text, read_texts


def test_read_input_text_drops_the_bom_and_names_what_is_wrong(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"\xef\xbb\xbfcaf\xc3\xa9\nsecond\n")
    assert read_input_text(f, "--text-file") == "café\nsecond\n"
    with pytest.raises(ConfigError, match=r"--text-file not found: .*missing"):
        read_input_text(tmp_path / "missing", "--text-file")
    with pytest.raises(ConfigError, match="is not a file"):
        read_input_text(tmp_path, "--text-file")
    with pytest.raises(ConfigError, match=r"is \d+ bytes, over the limit of 5 bytes"):
        read_input_text(f, "--text-file", limit=5)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("fine\nalso fine\nna\xefve\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.txt, line 3: not valid UTF-8 \(invalid .* at byte 17\)"):
        read_input_text(bad, "candidates file")


def test_read_texts_plain_and_jsonl(tmp_path):
    plain = tmp_path / "t.txt"
    plain.write_text("\ufefffirst text \r\n\n  \nsecond\n", encoding="utf-8")
    assert read_texts(plain) == ["first text ", "second"]  # empty lines skipped, \r dropped, BOM dropped
    jl = tmp_path / "t.jsonl"
    jl.write_text('{"text": "a", "id": 1}\n\n{"body": "b", "text": "c"}\n', encoding="utf-8")
    assert read_texts(jl) == ["a", "c"]
    with pytest.raises(ConfigError, match=r"t\.jsonl, line 1: expected an object with a string field 'body'"):
        read_texts(jl, "body")
    jl.write_text('{"text": "a"}\nnot json\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"t\.jsonl, line 2: not JSON"):
        read_texts(jl)
    empty = tmp_path / "e.txt"
    empty.write_text("\n \n")
    with pytest.raises(ConfigError, match="input file .*e.txt holds no texts"):
        read_texts(empty)
    with pytest.raises(ConfigError, match="over the limit"):
        read_texts(plain, limit=3)
