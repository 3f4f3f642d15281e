import pytest

from counterarg.config import Config
from counterarg.schedules import random_rate


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
