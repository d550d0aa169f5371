"""Plausibility next to hardness, and the seed statistics of the multi-seed detection benchmark."""

from __future__ import annotations

import math

import pytest
import torch

from synthloop.errors import InputError
from synthloop.metrics.plausibility import beyond_pooled_std, hard_plausible_fraction, mean_std, plausible_fraction, pooled_std


def test_plausible_and_hard_plausible_fractions():
    ref = torch.tensor([0.9, 0.5, 0.49, 0.0])
    assert plausible_fraction(ref) == 0.5
    conf = torch.tensor([0.1, 0.7, 0.2, 0.3])  # hard: 0, 2, 3; plausible: 0, 1
    assert hard_plausible_fraction(conf, ref) == 0.25
    assert plausible_fraction(ref, threshold=0.4) == 0.75
    with pytest.raises(InputError):
        plausible_fraction([])
    with pytest.raises(InputError):
        plausible_fraction([1.2])
    with pytest.raises(InputError):
        hard_plausible_fraction([0.1], [0.2, 0.3])


def test_mean_std_and_the_pooled_std_rule():
    m, s = mean_std([1.0, 2.0, 3.0])
    assert m == 2.0 and s == pytest.approx(1.0)
    assert mean_std([4.0]) == (4.0, 0.0)
    assert pooled_std(3.0, 4.0) == pytest.approx(math.sqrt(12.5))
    assert beyond_pooled_std([10.0, 11.0, 12.0], [7.0, 8.0, 9.0])  # diff 3 > pooled std 1
    assert not beyond_pooled_std([10.0, 12.0, 14.0], [9.0, 11.0, 13.0])  # diff 1 < pooled std 2
    with pytest.raises(InputError):
        mean_std([])
