"""The policy plot (synthloop.report.policy): each parameter's normalised mean +- std per iteration."""

from __future__ import annotations

import pytest
import torch

from synthloop.errors import InputError
from synthloop.loops.policy import CEMConfig, CEMPolicy, search
from synthloop.loops.policy_space import default_space
from synthloop.report.policy import plot_policy, policy_trajectory


def _history():
    space = default_space(["alpha", "gaussian"])
    peak = torch.full((len(space),), 0.9, dtype=torch.float64)

    def reward(setting, iteration, candidate):
        u = space.normalise(torch.tensor([setting[n] for n in space.names], dtype=torch.float64))
        return -float(((u - peak) ** 2).sum()), {}

    return space, search(CEMPolicy(space, CEMConfig(iterations=3, population=4, seed=0)), reward).history


def test_trajectory_has_the_start_and_every_update():
    space, history = _history()
    names, means, stds = policy_trajectory(history)
    assert names == space.names and len(means) == len(stds) == 4
    assert means[0] == pytest.approx(space.default_vector().tolist(), abs=1e-5)
    assert means[-1] == pytest.approx([history[-1]["updated"]["mean_u"][n] for n in names])
    assert all(0.0 <= v <= 1.0 for row in means for v in row)


def test_plot_policy_writes_a_png(tmp_path):
    _, history = _history()
    out = plot_policy(history, tmp_path / "sub" / "policy.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert not [p for p in out.parent.iterdir() if p.name != "policy.png"]  # atomic: no temporary left behind
    with pytest.raises(InputError):
        plot_policy([], tmp_path / "empty.png")
