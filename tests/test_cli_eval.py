import json

import pytest

from counterarg.cli import main


@pytest.fixture(scope="module")
def trained(tiny_encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--out", str(out), "--quiet", "--epochs", "1", "--set", f"encoder={tiny_encoder}"]) == 0
    return out


def test_evaluate_checkpoint_prints_table_and_json(trained, tmp_path, capsys):
    js = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(trained / "checkpoint"), "--split", "validation",
                 "--json", str(js), "--quiet"]) == 0
    out = capsys.readouterr().out
    for task in ("sdoc", "sdoa", "sdc", "sda", "stc", "sta", "epc", "epa", "mean"):
        assert f"\n{task} " in out
    metrics = json.loads(js.read_text())
    assert 0.0 <= metrics["validation/epa/acc@1"] <= 1.0 and "validation/mean/mrr" in metrics


def test_evaluate_zero_shot(tiny_encoder, capsys):
    assert main(["evaluate", "--zero-shot", "--split", "test", "--quiet", "--set", f"encoder={tiny_encoder}",
                 "--set", "pooling=mean", "--set", "max_length=64"]) == 0
    assert "zero-shot" in capsys.readouterr().out


def test_evaluate_errors(trained, tiny_encoder, tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(trained / "checkpoint"), "--set", "sim_dim=64", "--quiet"]) == 2
    assert "another model" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--quiet"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    # a corpus folder that holds only the training split
    from counterarg.demo import demo_corpus_path

    only_train = demo_corpus_path() / "02-extracted-arguments" / "training"
    assert main(["evaluate", "--zero-shot", "--corpus", str(only_train), "--split", "test", "--quiet",
                 "--set", f"encoder={tiny_encoder}"]) == 2
    assert "no split 'test'" in capsys.readouterr().err


def test_rank_new_argument(trained, tmp_path, capsys):
    assert main(["rank", "--checkpoint", str(trained / "checkpoint"), "--text", "Taxes on banks hurt growth",
                 "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert "best 3 of" in out and out.count("b-counter.txt") == 3
    cands = tmp_path / "c.txt"
    cands.write_text("first counter\n\nsecond counter\nthird\n")
    assert main(["rank", "--checkpoint", str(trained / "checkpoint"), "--text", "x", "--candidates", str(cands),
                 "--k", "5"]) == 0
    assert "best 3 of 3" in capsys.readouterr().out
