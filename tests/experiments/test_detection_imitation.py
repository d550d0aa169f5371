"""The imitation benchmark rows at the quick budget: every row present with its AP on each test set
the tests object has, the cap and counts as documented, per-row caches and the cycle selection by val."""

from __future__ import annotations

import json

import pytest
import torch

from synthloop.experiments.detection import Data, new_detector
from synthloop.experiments.detection_imitation import MAX_CYCLES, imitation_config, run_imitation_rows
from synthloop.experiments.detection_methods import methods_budget
from synthloop.loops.detection_training import evaluate_detector


class FakeTests:
    """Two test sets under names the rows must not assume (both the quick val split and test split)."""

    def __init__(self, data: Data):
        self.sets = {"set_a": data.test, "set_b": data.val}
        self.calls = 0

    def evaluate(self, target, batch_size):
        self.calls += 1
        return {n: {k: round(float(v), 4) for k, v in evaluate_detector(target, ds, batch_size=batch_size).items()} for n, ds in self.sets.items()}


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        budget = methods_budget(quick=True)
        data = Data(budget, 0)
        baseline = new_detector(data.label_map, 0)  # untrained: it misses everything, so there are failures to mine
        baseline.model.score_thresh = 0.01
        tests = FakeTests(data)
        run_dir = tmp_path_factory.mktemp("imitation_rows")
        logs: list[str] = []
        out = run_imitation_rows(data, tests, baseline, budget, 0, run_dir, logs.append)
        return out, data, tests, baseline, budget, run_dir, logs
    finally:
        torch.set_num_threads(threads)


def test_every_row_with_ap_on_every_test_set(rows):
    out, *_ = rows
    k = len(out["imitation"]["history"]) - 1
    assert 1 <= k <= MAX_CYCLES
    assert set(out) == {f"imitation_cycle_{c}" for c in range(1, k + 1)} | {"imitation", "imitation_sim", "imitation_no_imitation"}
    for name, row in out.items():
        assert set(row["ap"]) == {"set_a", "set_b"}, name
        assert set(row["timings"]) == {"loop_s", "eval_s"}, name


def test_selection_counts_and_shares(rows):
    out, *_ = rows
    hist = out["imitation"]["history"]
    best = out["imitation"]["selected_cycle"]
    assert best == max(range(1, len(hist)), key=lambda c: hist[c]["val"]["ap"])
    assert out["imitation"]["ap"] == out[f"imitation_cycle_{best}"]["ap"]
    for c in range(1, len(hist)):
        assert out[f"imitation_cycle_{c}"]["synthetic_share"] == 0.5 and out[f"imitation_cycle_{c}"]["synthetic_images"] == hist[c]["synthetic_images"]
    assert out["imitation_sim"]["synthetic_share"] == 1.0 and out["imitation_sim"]["synthetic_images"] == hist[best]["synthetic_images"]
    assert out["imitation_no_imitation"]["synthetic_share"] == 0.5
    assert out["imitation_no_imitation"]["synthetic_images"] == hist[-1]["synthetic_images"]  # the same count as the imitation total


def test_rows_are_cached_with_weights(rows):
    out, data, tests, baseline, budget, run_dir, logs = rows
    for name in out:
        doc = json.loads((run_dir / f"{name}.json").read_text())
        assert doc["result"]["ap"] == out[name]["ap"] and (run_dir / f"{name}_model.pt").is_file()
    calls = tests.calls
    again = run_imitation_rows(data, tests, baseline, budget, 0, run_dir, logs.append, cached_only=True)
    assert again == json.loads(json.dumps(out)) and tests.calls == calls and logs[-1].endswith("cached")
    assert run_imitation_rows(data, tests, baseline, budget, 1, run_dir, logs.append, cached_only=True) == {}  # another seed: not run yet


def test_config_follows_the_budget():
    budget = methods_budget(quick=False)
    cfg = imitation_config(budget, 2)
    assert (cfg.scenes_per_cycle, cfg.t_epochs, cfg.max_cycles, cfg.max_synthetic_share, cfg.seed) == (300, 1, 3, 0.5, 2)
