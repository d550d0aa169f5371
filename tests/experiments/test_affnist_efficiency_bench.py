"""``benchmarks/affnist_efficiency.py`` methods mode (issue 10): option parsing and the histories
side file that keeps ``affnist_methods.json`` small."""

from __future__ import annotations

import gzip
import json

import pytest

from synthloop.experiments.affnist import EfficiencyConfig
from synthloop.experiments.affnist_methods import MethodRun, MethodsResult


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("affnist_efficiency")


def test_t_synthetic_per_epoch_sets_the_loop_and_zero_means_every_added_sample(bench):
    cpu = bench.build_config(bench.parse_args(["--methods", "random", "--budget", "cpu"]))
    assert cpu.loop.t_synthetic_per_epoch == 2_000  # the CPU budget's cap
    every = bench.build_config(bench.parse_args(["--methods", "random", "--budget", "cpu", "--t-synthetic-per-epoch", "0", "--step-size", "1000"]))
    assert every.loop.t_synthetic_per_epoch is None and every.step_size == 1000
    assert every.loop.s_batch_size == cpu.loop.s_batch_size  # the other CPU-budget loop options stay
    assert any("every added sample" in d for d in every.deviations())


def test_histories_go_to_a_gzip_side_file_with_stable_bytes(bench, tmp_path):
    runs = [MethodRun("random", s, [(0, 0.1), (500, 0.2)], [{"cycle": 1, "test_acc": 0.2 + s}], 1.0) for s in (0, 1)]
    result = MethodsResult(EfficiencyConfig.cpu_budget(), ["random"], [0, 1], runs, [], [])
    first = bench.write_histories(result, tmp_path / "h.json.gz")
    data = (tmp_path / "h.json.gz").read_bytes()
    assert first.endswith("h.json.gz")
    assert json.loads(gzip.decompress(data)) == {"random/seed0": [{"cycle": 1, "test_acc": 0.2}], "random/seed1": [{"cycle": 1, "test_acc": 1.2}]}
    bench.write_histories(result, tmp_path / "h.json.gz")
    assert (tmp_path / "h.json.gz").read_bytes() == data  # mtime 0: rewriting the same histories changes no byte
