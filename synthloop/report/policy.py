"""The learned generator policy per iteration (:mod:`synthloop.loops.policy`): one line per
parameter, its mean +- std normalised to its bounds (0 = lower bound, 1 = upper bound), from the
policy the first iteration drew from to the policy after the last update."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure

from synthloop.errors import InputError
from synthloop.report.plots import figure_png
from synthloop.utils.atomic import atomic_write_bytes


def policy_trajectory(history: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[float]], list[list[float]]]:
    """``(names, means, stds)``: per step (the policy before iteration 1, then after every update)
    each parameter's normalised mean and std, read from the history records' ``policy`` / ``updated``."""
    if not history:
        raise InputError("the policy history is empty: nothing to plot", field="history")
    snaps = [history[0]["policy"], *(h["updated"] for h in history)]
    names = list(snaps[0]["mean_u"])
    means = [[float(s["mean_u"][n]) for n in names] for s in snaps]
    stds = [[float(s["std_u"][n]) for n in names] for s in snaps]
    return names, means, stds


def plot_policy(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write a PNG of every parameter's mean +- std (normalised to its bounds) per iteration to ``path`` (atomically)."""
    names, means, stds = policy_trajectory(history)
    steps = list(range(len(means)))
    fig = Figure(figsize=(8.0, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    colors = colormaps["tab20"]  # 20 distinct colours (the default cycle repeats after 10; the space has 12+ dimensions)
    for j, name in enumerate(names):
        m = [row[j] for row in means]
        s = [row[j] for row in stds]
        (line,) = ax.plot(steps, m, marker="o", label=name, color=colors(j % 20), linestyle="-" if j < 20 else "--")
        ax.fill_between(steps, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)], color=line.get_color(), alpha=0.12)
    ax.set_xticks(steps)
    ax.set_xlabel("iteration (0 = initial policy: the random sampler's defaults)")
    ax.set_ylabel("mean +- std, normalised to the bounds")
    ax.set_ylim(-0.25, 1.25)
    ax.set_title("learned generator policy")
    ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    out = Path(path)
    atomic_write_bytes(out, figure_png(fig))
    return out


__all__ = ["plot_policy", "policy_trajectory"]
