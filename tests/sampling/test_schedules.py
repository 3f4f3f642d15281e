import pytest

from counterarg.config import Config, ConfigError
from counterarg.sampling.schedules import random_rate


def test_seed_schedules():
    fixed, decay, rnd = Config(schedule="fixed", rate=0.8), Config(schedule="decay"), Config(schedule="random")
    assert [random_rate(fixed, e) for e in (0, 10, 100)] == [0.8, 0.8, 0.8]
    assert [random_rate(rnd, e) for e in (0, 50)] == [1.0, 1.0]
    assert random_rate(decay, 0) == pytest.approx(0.8)
    assert random_rate(decay, 10) == pytest.approx(0.6)
    assert random_rate(decay, 39) == pytest.approx(0.02)
    assert random_rate(decay, 40) == 0.0 and random_rate(decay, 200) == 0.0
    assert random_rate(Config(schedule="decay", rate_step=0.01, rate_floor=0.1), 75) == pytest.approx(0.1)


def test_cosine_and_step():
    cos = Config(schedule="cosine", rate_start=0.8, rate_floor=0.0, rate_period=10)
    assert random_rate(cos, 0) == pytest.approx(0.8)
    assert random_rate(cos, 5) == pytest.approx(0.4)
    assert random_rate(cos, 10) == pytest.approx(0.0) and random_rate(cos, 30) == pytest.approx(0.0)
    step = Config(schedule="step", rate_start=0.8, rate_every=5, rate_gamma=0.5, rate_floor=0.15)
    assert [random_rate(step, e) for e in (0, 4, 5, 10, 15)] == pytest.approx([0.8, 0.8, 0.4, 0.2, 0.15])


def test_negative_epoch():
    with pytest.raises(ValueError, match="epoch"):
        random_rate(Config(), -1)


# ----------------------------------------------------------------------------- table
def test_table_holds_its_last_value():
    cfg = Config().with_overrides(["schedule=table", "rate_table=0.8,0.6,0.4", "epochs=6"])
    assert cfg.rate_table == (0.8, 0.6, 0.4)
    assert [random_rate(cfg, e) for e in range(6)] == pytest.approx([0.8, 0.6, 0.4, 0.4, 0.4, 0.4])
    assert Config.from_dict(cfg.to_dict()) == cfg  # a JSON list round-trips to the tuple


@pytest.mark.parametrize(
    "items, message",
    [
        (["schedule=table"], "rate_table must list at least one rate"),
        (["schedule=table", "rate_table="], "rate_table must list at least one rate"),
        (["schedule=table", "rate_table=0.8,1.2"], r"rate_table values must lie in \[0, 1\], got 1.2"),
        (["schedule=table", "rate_table=-0.1"], r"rate_table .*-0.1"),
        (["rate_table=0.5,2"], "rate_table"),  # out of range even when another schedule is selected
        (["schedule=table", "rate_table=0.8,high"], "rate_table"),
    ],
)
def test_bad_tables_name_the_field(items, message):
    with pytest.raises(ConfigError, match=message):
        Config().with_overrides(items)


# ----------------------------------------------------------------------------- the registry
def test_a_toy_schedule_is_one_entry(monkeypatch):
    """Registered once, a schedule works through --set (Config) and a sweep's strategy list."""
    from counterarg.analysis.trials import strategy_label
    from counterarg.sampling import schedules
    from counterarg.sweep.spaces import REFERENCE_FIELDS, parse_strategy, strategy_grid

    monkeypatch.setattr(schedules, "SCHEDULES", dict(schedules.SCHEDULES))  # undone after the test
    with pytest.raises(ConfigError, match="schedule must be one of"):
        Config().with_overrides(["schedule=halving"])
    schedules.register(
        schedules.Schedule(
            "halving", lambda c, epoch: c.rate / 2**epoch, fields=("rate",), strategy={"rate": 0.5}, short=("rate",)
        )
    )
    cfg = Config().with_overrides(["schedule=halving", "rate=0.8"])
    assert [random_rate(cfg, e) for e in range(3)] == pytest.approx([0.8, 0.4, 0.2])
    ref = {k: (list(v) if isinstance(v, tuple) else v) for k, v in REFERENCE_FIELDS.items()}
    named = {"method": "reference"}  # on the reference method, named as it is made
    assert parse_strategy("halving") == {
        **ref,
        "schedule": "halving",
        "rate": 0.5,
        **named,
        "label": "reference: halving 0.5",
    }
    assert parse_strategy("halving:rate=0.6") == {
        **ref,
        "schedule": "halving",
        "rate": 0.6,
        **named,
        "label": "reference: halving 0.6",
    }
    grid = strategy_grid(["halving", "decay"], seeds=(0, 1), methods=["reference"])
    assert [(g["schedule"], g["seed"]) for g in grid] == [("halving", 0), ("halving", 1), ("decay", 0), ("decay", 1)]
    assert strategy_label(grid[0]) == "halving 0.5"
    with pytest.raises(schedules.ScheduleError, match="already registered"):
        schedules.register(schedules.Schedule("halving", lambda c, e: 0.0))
    with pytest.raises(schedules.ScheduleError, match="not among the fields it reads"):
        schedules.register(schedules.Schedule("typo", lambda c, e: 0.0, strategy={"rate": 0.1}))
    # the registry sits below config: config.py checks an entry's fields when a config selects it
    schedules.register(schedules.Schedule("typo", lambda c, e: 0.0, fields=("rate_strat",)))
    with pytest.raises(ConfigError, match="'typo' reads 'rate_strat', which is not a Config field"):
        Config().with_overrides(["schedule=typo"])
    schedules.register(schedules.Schedule("by_lr", lambda c, e: c.lr, fields=("lr",)))
    with pytest.raises(ConfigError, match="'by_lr' reads 'lr', which has no 'schedule' role"):
        Config(schedule="by_lr")
