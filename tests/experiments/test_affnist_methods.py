"""The issue-10 methods protocol: method configs, aggregation over seeds, best-method choice."""

import math

import pytest
import torch

from synthloop.experiments.affnist import EfficiencyConfig, run_efficiency
from synthloop.experiments.affnist_methods import METHODS, MethodRun, MethodsResult, history_means, mean_curve, method_loop_config, run_methods
from synthloop.jobs.demo import DEMO_METHOD


def test_every_method_is_a_valid_loop_config_under_the_protocol():
    cfg = EfficiencyConfig.cpu_budget()
    for name in METHODS:
        loop = method_loop_config(cfg, name)
        assert loop.hard_per_class == cfg.step_size // 10 and loop.cycles == cfg.steps and loop.t_epochs == cfg.finetune_epochs
    assert method_loop_config(cfg, "worst_of_k").source == "worst_of_k"
    assert method_loop_config(cfg, "terse_paper").objective == "paper"
    assert method_loop_config(cfg, "terse_teacher").objective == "teacher"
    with pytest.raises(ValueError):
        method_loop_config(cfg, {"source": "terse", "anchor": "nonsense"})
    assert DEMO_METHOD in METHODS and DEMO_METHOD != "random"


def test_cpu_budget_deviations_name_the_budget():
    text = " ".join(EfficiencyConfig.cpu_budget().deviations())
    assert "5000 of the 50,000" in text and "S updates only in the first 2" in text and "at most 2000 of the added" in text


def test_mean_curve_and_history_means():
    curves = [[(0, 0.1), (500, 0.5), (1000, 0.7)], [(0, 0.3), (500, 0.7), (1000, 0.7)]]
    got = mean_curve(curves)
    assert [p[0] for p in got] == [0, 500, 1000]
    assert got[1][1] == pytest.approx(0.6) and got[1][2] == pytest.approx(0.1) and got[2][2] == pytest.approx(0.0)
    rows = [{"readability": 0.5, "cache_hardness_mean": 0.2, "param_hist": {"edge_frac": 0.4}}, {"readability": 0.7, "cache_hardness_mean": 0.4}]
    means = history_means(rows)
    assert means["readability"] == pytest.approx(0.6) and means["hardness"] == pytest.approx(0.3) and means["edge_frac"] == pytest.approx(0.4)
    assert means["affinity"] is None


def _result():
    def run(method, seed, ys):
        return MethodRun(method, seed, list(zip((0, 500, 1000, 1500), ys)), [{"readability": 0.9}], 1.0)

    runs = [
        run("random", 0, (0.1, 0.3, 0.5, 0.6)),
        run("random", 1, (0.1, 0.3, 0.5, 0.6)),
        run("slow", 0, (0.1, 0.2, 0.4, 0.55)),
        run("slow", 1, (0.1, 0.2, 0.4, 0.55)),
        run("fast", 0, (0.1, 0.5, 0.6, 0.7)),
        run("fast", 1, (0.1, 0.5, 0.62, 0.7)),
    ]
    return MethodsResult(EfficiencyConfig.cpu_budget(), ["random", "slow", "fast"], [0, 1], runs, [0.1, 0.1], [0.5, 0.5])


def test_summary_and_best_method():
    res = _result()
    assert res.reference_added() == 1500 and res.random_level() == pytest.approx(0.6)
    fast = res.summary("fast")
    assert fast["samples_to_match_random_25k"] == 1000 and fast["samples_to_match_per_seed"] == [1000, 1000]
    assert res.summary("slow")["samples_to_match_random_25k"] is None
    assert fast["curve"][2][1] == pytest.approx(0.61) and fast["readability"] == pytest.approx(0.9)
    assert res.best_method() == "fast"
    assert not math.isnan(fast["curve"][2][2])


def test_run_methods_rejects_unknown_methods_and_needs_random():
    with pytest.raises(ValueError, match="unknown"):
        run_methods(EfficiencyConfig.cpu_budget(), ["random", "magic"], [0])
    with pytest.raises(ValueError, match="random"):
        run_methods(EfficiencyConfig.cpu_budget(), ["worst_of_k"], [0])


@pytest.mark.slow
def test_tiny_efficiency_run_with_a_learned_method():
    torch.set_num_threads(1)
    cfg = EfficiencyConfig.cpu_budget(
        train_digits=300, test_digits=100, base_epochs=1, steps=1, step_size=100, reference_epochs=1, learned=METHODS["worst_of_k"]
    )
    res = run_efficiency(cfg)
    assert res.terse[-1][0] == 100 and res.random[-1][0] == 100
    assert res.terse_history[0]["s_steps"] == 0  # worst_of_k: no S
    assert "readability" in res.terse_history[0]


def test_mean_curve_interpolates_a_curve_whose_cache_did_not_fill():
    full = [(0, 0.1), (500, 0.3), (1000, 0.5)]
    short = [(0, 0.1), (400, 0.2), (900, 0.4), (1200, 0.6)]
    got = mean_curve([full, short])
    assert [p[0] for p in got] == [0, 500, 1000]
    assert got[1][1] == pytest.approx((0.3 + 0.24) / 2) and got[2][1] == pytest.approx((0.5 + (0.4 + 0.2 / 3)) / 2)
    assert [p[0] for p in mean_curve([full, [(0, 0.1), (600, 0.2)]])] == [0, 500]
