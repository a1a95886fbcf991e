"""FHS against PAPER.md's worked example, hand-computed values and edge cases."""

from __future__ import annotations

import math

import pytest

from jaxprobe.scoring.fhs import module_health, retention


def test_worked_example_from_the_paper():
    # P_start 0.70, P_min 0.65, P_end 0.80, total variation 0.05 + 0.15 + 0.025 + 0.025 = 0.25
    # -> GF 0.171, VP 0.939, FHS 0.880 (PAPER.md)
    health = module_health([0.70, 0.65, 0.80, 0.775, 0.80])
    assert health.total_variation == pytest.approx(0.25)
    assert health.growth_factor == pytest.approx(0.171, abs=5e-4)
    assert health.volatility_penalty == pytest.approx(0.939, abs=5e-4)
    assert health.fhs == pytest.approx(0.880, abs=5e-4)


def test_hand_computed_rising_curve():
    health = module_health([0.5, 0.6, 0.9], lam=0.5)
    gf = math.log(0.9 / math.sqrt(0.5 * 0.5))
    vp = math.exp(-0.5 * 0.4 / 0.9)
    assert health.fhs == pytest.approx(0.9 * (1 + gf) * vp)


def test_flat_curve_and_one_layer_module_score_their_accuracy():
    assert module_health([0.8, 0.8, 0.8]).fhs == pytest.approx(0.8)
    connector = module_health([0.73])
    assert connector.fhs == pytest.approx(0.73) and connector.growth_factor == 0 and connector.layers == 1


def test_zero_minimum_is_floored_not_infinite():
    health = module_health([0.6, 0.0, 0.9])
    assert math.isfinite(health.fhs) and health.growth_factor == pytest.approx(math.log(0.9 / math.sqrt(0.6e-3)))
    with pytest.raises(ValueError, match="NaN"):
        module_health([0.5, float("nan")])
    with pytest.raises(ValueError, match="one or more"):
        module_health([])


def test_retention():
    assert retention(0.8, 0.6) == pytest.approx(0.75)
