"""TERSE Fig. 7 for several ways of choosing the added samples, over several seeds (issue 10).

Every method runs the same protocol (:class:`~synthloop.experiments.affnist.EfficiencyConfig`):
the same MNIST-only baseline per seed, the same fine-tuning schedule, the same evaluation; only the
loop's sample source and S's options differ (:data:`METHODS`, values of
:class:`~synthloop.loops.terse_classification.TerseClassificationConfig`). Per method the curves
of the seeds are averaged (mean and population std at every point), and the number of added samples
at which the *mean* curve reaches the mean random curve's accuracy at 25K is reported.

Diagnostics per method (means over cycles and seeds, from the loop history): ``readability`` (the
reference classifier, trained with random in-range augmentation, still reads the added sample),
``hardness`` (``1 - p_T(y)`` before T trains on it), ``edge_frac`` / ``corner_frac`` (parameters
at the edges of their ranges), ``affinity`` and ``diversity`` (Gontijo-Lopes et al. 2020); see
:mod:`synthloop.loops.terse_diagnostics`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from synthloop.experiments.affnist import Curve, EfficiencyConfig, prepare_efficiency, samples_to_reach, value_at
from synthloop.loops.terse_classification import TerseClassificationConfig, TerseClassificationLoop
from synthloop.utils.progress import Progress

_STOCHASTIC_S = {"s_zero_init": True, "s_noise_dim": 8, "s_replay": 4, "s_update_every": 2}
METHODS: dict[str, dict[str, Any]] = {
    "random": {"source": "random"},
    "worst_of_k": {"source": "worst_of_k", "worst_k": 4},
    "terse_paper": {"source": "terse"},
    "terse_teacher": dict(source="terse", objective="teacher", teacher="ema", **_STOCHASTIC_S),
    "terse_anchor": dict(
        source="terse", objective="teacher", teacher="ema", anchor="random_delta", anchor_bound=0.25, diversity_weight=0.5, mix_random=0.25, **_STOCHASTIC_S
    ),
    "worst_of_k_teacher": {"source": "worst_of_k", "worst_k": 4, "objective": "teacher", "teacher": "reference", "mix_random": 0.25},
}
"""Loop options per method. ``terse_teacher``: the TeachAugment objective with an EMA teacher and a
stochastic S (noise input, zero-initialised last layer, replay of 4 snapshots, S trained every
other cycle). ``terse_anchor``: that plus the random anchor (delta at most 25 % of each range), the
diversity penalty and 25 % plain recipe samples. ``worst_of_k_teacher``: the hardest of 4 recipe
draws under the teacher objective with the reference as teacher, plus 25 % plain recipe samples."""

DIAGNOSTICS = ("readability", "hardness", "edge_frac", "corner_frac", "param_spread", "affinity", "diversity", "s_hard_frac")


def method_loop_config(cfg: EfficiencyConfig, method: str | Mapping[str, Any]) -> TerseClassificationConfig:
    """The loop configuration of ``method`` (a name in :data:`METHODS` or its options) under ``cfg``'s protocol (validated)."""
    options = METHODS[method] if isinstance(method, str) else dict(method)
    base = cfg.loop_config(options.get("source", "terse"), cfg.steps).model_dump()
    return TerseClassificationConfig(**{**base, **options})


def _row_value(row: Mapping[str, Any], key: str) -> float | None:
    if key == "hardness":
        return row.get("cache_hardness_mean")
    if key in ("edge_frac", "corner_frac", "param_spread"):
        return (row.get("param_hist") or {}).get(key)
    value = row.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def history_means(history: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Mean over cycles of each :data:`DIAGNOSTICS` key of a loop history (``None`` when absent)."""
    out: dict[str, float | None] = {}
    for key in DIAGNOSTICS:
        vals = [v for v in (_row_value(r, key) for r in history) if v is not None]
        out[key] = float(sum(vals) / len(vals)) if vals else None
    return out


def mean_curve(curves: Sequence[Curve]) -> list[tuple[int, float, float]]:
    """``[(added, mean, population std), ...]`` at the points of the first curve that every curve
    reaches; a curve without that exact point (a cache that did not fill) is interpolated linearly."""
    xs = [x for x, _ in curves[0] if all(x <= max(cx for cx, _ in c) for c in curves)]
    out = []
    for x in xs:
        ys = [float(np.interp(x, [p[0] for p in sorted(c)], [p[1] for p in sorted(c)])) for c in curves]
        m = sum(ys) / len(ys)
        out.append((int(x), m, math.sqrt(sum((y - m) ** 2 for y in ys) / len(ys))))
    return out


@dataclass
class MethodRun:
    """One method on one seed."""

    method: str
    seed: int
    curve: Curve
    history: list[dict[str, Any]]
    seconds: float
    model: nn.Module | None = None


@dataclass
class MethodsResult:
    """All runs, and the aggregates the benchmark JSON holds."""

    config: EfficiencyConfig
    methods: list[str]
    seeds: list[int]
    runs: list[MethodRun]
    mnist_only_acc: list[float]
    reference_acc: list[float]
    timings: dict[str, float] = field(default_factory=dict)

    def curves(self, method: str) -> list[Curve]:
        return [r.curve for r in self.runs if r.method == method]

    def reference_added(self) -> int:
        return min(25_000, max(x for x, _ in self.curves("random")[0]))

    def random_level(self) -> float:
        """The mean random curve's accuracy at :meth:`reference_added`."""
        level = value_at([(x, m) for x, m, _ in mean_curve(self.curves("random"))], self.reference_added())
        assert level is not None
        return level

    def summary(self, method: str) -> dict[str, Any]:
        curve = mean_curve(self.curves(method))
        means = [history_means(r.history) for r in self.runs if r.method == method]
        diag = {k: _nanmean([m[k] for m in means]) for k in DIAGNOSTICS}
        per_seed = [samples_to_reach(c, self.random_level()) for c in self.curves(method)]
        return {
            "curve": [[x, m, s] for x, m, s in curve],
            "samples_to_match_random_25k": samples_to_reach([(x, m) for x, m, _ in curve], self.random_level()),
            "samples_to_match_per_seed": per_seed,
            **diag,
            "options": METHODS.get(method, {}),
            "seconds_per_seed": [round(r.seconds, 1) for r in self.runs if r.method == method],
        }

    def best_method(self) -> str:
        """The learned method (not ``random``) whose mean curve matches random@25K with the fewest
        samples; ties and misses are broken by the mean accuracy over the curve."""
        learned = [m for m in self.methods if m != "random"]

        def key(m: str) -> tuple[float, float]:
            s = self.summary(m)
            n = s["samples_to_match_random_25k"]
            return (n if n is not None else math.inf, -sum(p[1] for p in s["curve"]))

        return min(learned, key=key)

    def model_of(self, method: str) -> nn.Module | None:
        return next((r.model for r in self.runs if r.method == method and r.model is not None), None)


def _nanmean(vals: Sequence[float | None]) -> float | None:
    got = [v for v in vals if v is not None]
    return float(sum(got) / len(got)) if got else None


def run_methods(
    config: EfficiencyConfig,
    methods: Sequence[str],
    seeds: Sequence[int],
    *,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> MethodsResult:
    """Run every method of ``methods`` on every seed of ``seeds`` under ``config``'s protocol (its
    ``seed`` is replaced by each seed). Keeps the final target of each method's first seed."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; valid: {', '.join(METHODS)}")
    if "random" not in methods:
        raise ValueError("the methods must include random (the reference curve)")
    say = log or (lambda _msg: None)
    t0 = time.perf_counter()
    runs: list[MethodRun] = []
    mnist_only, ref_acc = [], []
    for i, seed in enumerate(seeds):
        cfg = config.model_copy(update={"seed": seed})
        setup = prepare_efficiency(cfg, device, progress=progress, log=say)
        mnist_only.append(setup.mnist_only_acc)
        ref_acc.append(setup.reference_acc)
        for method in methods:
            t = time.perf_counter()
            loop = TerseClassificationLoop(
                method_loop_config(cfg, method), copy.deepcopy(setup.base), setup.train_x, setup.train_y,
                reference=setup.reference, clean=setup.base, device=device,
            )  # fmt: skip
            out = loop.run(evaluate=lambda m, s=setup: {"test_acc": s.test_acc(m)}, progress=progress, export=False)
            curve = [(0, setup.mnist_only_acc)] + [(int(r["synthetic_total"]), float(r["test_acc"])) for r in out.history]
            seconds = time.perf_counter() - t
            runs.append(MethodRun(method, seed, curve, out.history, seconds, loop.target.eval() if i == 0 else None))
            means = history_means(out.history)
            say(
                f"seed {seed} {method} ({seconds:.0f} s): " + ", ".join(f"{x}:{y:.3f}" for x, y in curve[1::5])
                + f" | readability {means['readability']}, hardness {means['hardness']}"
            )  # fmt: skip
    return MethodsResult(config, list(methods), list(seeds), runs, mnist_only, ref_acc, {"total_s": time.perf_counter() - t0})
