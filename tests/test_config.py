import json
import re

import pytest

from counterarg.config import FIELD_NAMES, PRESET_DOCS, PRESETS, REFERENCE_METHOD, Config, ConfigError, preset_of


def test_defaults_and_roundtrip(tmp_path):
    cfg = Config()
    assert cfg.margin == 1.0 and cfg.p == 2.0 and cfg.sim_dim == 0 and cfg.max_length == 256
    cfg.save(tmp_path / "c.json")
    assert Config.load(tmp_path / "c.json") == cfg
    assert set(json.loads((tmp_path / "c.json").read_text())) == set(FIELD_NAMES)


def test_set_parses_types():
    cfg = Config().with_overrides(
        ["schedule=fixed", "rate=0.5", "epochs=3", "finetune=top:1", "ks=1,3", "eval_training=true", "corpus=none"]
    )
    assert (cfg.schedule, cfg.rate, cfg.epochs, cfg.finetune, cfg.ks, cfg.eval_training, cfg.corpus) == (
        "fixed",
        0.5,
        3,
        "top:1",
        (1, 3),
        True,
        None,
    )
    assert cfg.trainable_layers == 1


@pytest.mark.parametrize(
    "item, word",
    [
        ("marginn=1", "marginn"),
        ("schedule=sometimes", "schedule"),
        ("epochs=two", "epochs"),
        ("finetune=top:0", "finetune"),
        ("rate=1.5", "rate"),
        ("lr=-1", "lr"),
        ("noequals", "FIELD=VALUE"),
    ],
)
def test_bad_keys_and_values_name_themselves(item, word):
    with pytest.raises(ConfigError, match=word):
        Config().with_overrides([item])


def test_from_dict_rejects_unknown_and_wrong_types():
    with pytest.raises(ConfigError, match="unknown config field"):
        Config.from_dict({"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="epochs"):
        Config.from_dict({"epochs": 2.5})
    with pytest.raises(ConfigError, match="seed"):
        Config.from_dict({"seed": True})


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Config.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="bad.json"):
        Config.load(bad)


def test_reference_preset_is_one_flag_away():
    ref = Config.load("reference")
    assert {k: getattr(ref, k) for k in REFERENCE_METHOD} == {
        k: (tuple(v) if isinstance(v, tuple) else v) for k, v in REFERENCE_METHOD.items()
    }
    assert (ref.loss, ref.head, ref.sim_dim, ref.schedule) == ("combined", "linear", 128, "decay")
    assert set(PRESETS) == set(PRESET_DOCS) == {"reference", "frozen", "gpu"}


def test_every_preset_loads_and_is_recognised_by_its_fields():
    for name in ("frozen", "gpu"):
        cfg = Config.load(name)
        assert preset_of(cfg.to_dict()) == name
    assert Config.load("frozen").finetune == "none" and Config.load("gpu").finetune == "all"
    assert preset_of(Config.load("reference").to_dict()) is None


@pytest.mark.parametrize(
    "bad",
    [
        ["loss=cosface"],
        ["loss=infonce+"],
        ["head=mlp"],
        ["neg_rank=5,2"],
        ["neg_rank=1"],
        ["sim_dim=-1"],
        ["scale=0"],
        ["patience=-1"],
        ["num_negatives=0"],
    ],
)
def test_new_fields_fail_loudly(bad):
    with pytest.raises(ConfigError):
        Config().with_overrides(bad)


def test_length_buckets_are_checked_and_allowed_with_a_frozen_encoder():
    assert Config(length_buckets=4).length_buckets == 4  # no effect with finetune=none, so a search may fix it
    with pytest.raises(Exception, match="length_buckets must be >= 0"):
        Config(length_buckets=-1, finetune="all")


# ---------------------------------------------------------------- the documented defaults are Config's
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
CONFIG_DOC = ROOT / "docs" / "configuration.md"  # the Configuration guide of the docs site


def _documented(cell: str) -> str:
    """A README default cell as plain text: no backticks, no trailing remark in parentheses."""
    return cell.replace("`", "").split(" (")[0].strip()


def _same(doc: str, value) -> bool:
    """Whether a README default (text) states the Config default ``value``."""
    if value is None:
        return doc == "none"
    if isinstance(value, bool):
        return doc == str(value).lower()
    if isinstance(value, tuple):
        return (doc == "empty" and not value) or _same_numbers(doc.split(","), value)
    if isinstance(value, (int, float)):
        return _same_numbers([doc], (value,))
    return doc == str(value)


def _same_numbers(texts, values) -> bool:
    try:
        return len(texts) == len(values) and all(float(t) == float(v) for t, v in zip(texts, values))
    except ValueError:
        return False


def test_readme_configuration_table_states_configs_defaults():
    """The README's defaults drifted from Config's (select_metric, epochs). Every row of
    its Configuration table names fields and their defaults; each must be Config's own."""
    text = CONFIG_DOC.read_text(encoding="utf-8") + "\n".join(
        p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md")) if p != CONFIG_DOC
    )
    table = text.split("# Configuration", 1)[1].split("\n## ", 1)[0]
    defaults = Config()
    checked = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        names = [n.strip().strip("`") for n in cells[0].split(",")]
        docs = [_documented(d) for d in cells[1].split(", ")] if len(names) > 1 else [_documented(cells[1])]
        assert len(docs) == len(names), f"README Configuration row {cells[0]}: {len(names)} fields, {cells[1]!r}"
        for name, doc in zip(names, docs):
            assert name in FIELD_NAMES, f"README Configuration names {name!r}, not a Config field"
            value = getattr(defaults, name)
            if name == "encoder":  # the embedded default's name
                value = str(value)
            assert _same(doc, value), f"README says {name} defaults to {doc!r}; Config's default is {value!r}"
            checked.append(name)
    assert {"epochs", "select_metric", "patience", "eval_metric", "lr"} <= set(checked), checked
    # the prose that names a default: select_metric and the epochs of a sweep's trials
    for said in re.findall(r"`select_metric`[^.]{0,40}?\(default `([^`]+)`", text) + re.findall(
        r"\(default `(validation[^`]*)`", text
    ):
        assert said == defaults.select_metric, f"README: select_metric default {said!r}"
    from counterarg.config import FROZEN_RECIPE  # the strategy sweeps' trials start from the frozen preset

    for said in re.findall(r"(\d+) epochs per trial: the frozen preset's", text):
        assert int(said) == FROZEN_RECIPE["epochs"]
    assert re.findall(r"(\d+) epochs per trial: the frozen preset's", text), "the main job's epochs are stated"


def test_field_roles_are_read_from_the_fields_and_match_the_schedule_registry():
    """``fields_with`` reads the fields' metadata (an unknown role is an error naming it); the
    ``schedule`` fields are exactly those some registered schedule reads, plus ``schedule``; a
    ``hyper`` field may change on resume; a machine field is never one of the model's."""
    from counterarg.config import (
        HYPER,
        MACHINE,
        MACHINE_FIELDS,
        MODEL,
        RESUME,
        ROLES,
        SCHEDULE,
        SEED,
        SOURCE,
        fields_with,
    )
    from counterarg.sampling import schedules

    with pytest.raises(ValueError, match="unknown field role 'modle'"):
        fields_with("modle")
    assert set(fields_with(SCHEDULE)) == {"schedule"} | {f for s in schedules.SCHEDULES.values() for f in s.fields}
    assert set(fields_with(HYPER)) <= set(fields_with(RESUME))
    assert MACHINE_FIELDS == fields_with(MACHINE) and not set(MACHINE_FIELDS) & set(fields_with(MODEL))
    assert all(fields_with(r) for r in ROLES)
    # the seed and where the data and weights come from have roles too: no module lists them by name
    assert fields_with(SEED) == ("seed",) and set(fields_with(SOURCE)) == {"corpus", "encoder"}
    # several roles: the fields with any of them, in field order
    assert fields_with(SEED, MACHINE) == tuple(f for f in FIELD_NAMES if f in {"seed", *MACHINE_FIELDS})
    assert {"index", "shards", "leaf_size", "block_size"} <= set(fields_with(SEED, MACHINE))
    with pytest.raises(ValueError, match="unknown field role 'sead'"):
        fields_with(SEED, "sead")


@pytest.mark.parametrize(
    "sets",
    [
        ["num_negatives=1000"],
        ["num_negatives=1000000000000"],
        ["neg_rank=1,1", "num_negatives=2"],
        ["neg_rank=3,5", "num_negatives=4"],
    ],
)
def test_more_negatives_than_the_neg_rank_window_is_refused(sets):
    """num_negatives=1000 drew 140 anchors x 1000 negatives from ranks 1..10 (repeats, silently), and
    1e12 ended in a 1019 TiB allocation: both are named config errors before anything runs."""
    with pytest.raises(ConfigError, match=r"num_negatives=\d+ is more than the \d+ rank\(s\) of neg_rank=\d+,\d+"):
        Config().with_overrides(sets)
    with pytest.raises(ConfigError, match="num_negatives=1000000000000 is more than"):
        Config.from_dict({"num_negatives": 1e12})  # a JSON config file's or a space file's number
    assert Config().with_overrides(["neg_rank=3,5", "num_negatives=3"]).num_negatives == 3  # the whole window


def test_cli_refuses_too_many_negatives_with_exit_2(tmp_path, capsys):
    from counterarg.cli import main

    assert main(["train", "--out", str(tmp_path / "r"), "--set", "num_negatives=1000000000000"]) == 2
    assert "num_negatives=1000000000000 is more than the 10 rank(s) of neg_rank=1,10" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
