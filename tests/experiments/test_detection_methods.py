"""The multi-seed detection benchmark (synthloop.experiments.detection_methods): the summary
statistics and targets, and the quick mode of ``benchmarks/detection.py`` end to end (the JSON
contract of issue 11, the plots, the per-run cache)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from synthloop.experiments.detection_methods import ROWS, TERSE_TEACHER, TESTS, Tests, comparisons, feedback_targets, imitation_table, summarise
from synthloop.loops.terse_detection_config import SceneTerseConfig

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ("ap50_mean", "ap50_std", "ap80_mean", "ap80_std", "ap_mean", "ap_std", "hard_positive_fraction", "plausible_fraction")


def _ap(v: float) -> dict[str, float]:
    return {k: v for k in ("ap50", "ap60", "ap70", "ap80", "ap")}


def test_rows_are_valid_loop_configs():
    assert {"baseline", "real_only_finetune", "random_paste", "worst_of_k", "terse_paper", "terse_teacher"} <= set(ROWS)
    for overrides in ROWS.values():
        if overrides is not None:
            SceneTerseConfig(**overrides)  # raises on a typo
    assert TERSE_TEACHER["objective"] == "teacher" and TERSE_TEACHER["constraints"]


def test_summarise_and_the_pooled_std_targets():
    per_seed = {
        "baseline": {s: {"ap": {"in_distribution": _ap(0.40 + 0.01 * s), "shifted": _ap(0.10)}} for s in (0, 1, 2)},
        "random_paste": {
            s: {"ap": {"in_distribution": _ap(0.42 + 0.01 * s), "shifted": _ap(0.11)}, "hard_positive_fraction": 0.2, "plausible_fraction": 0.8}
            for s in (0, 1, 2)
        },
        "terse_teacher": {
            s: {"ap": {"in_distribution": _ap(0.47 + 0.01 * s), "shifted": _ap(0.115)}, "hard_positive_fraction": 0.7, "plausible_fraction": 0.85}
            for s in (0, 1, 2)
        },
    }
    tests = summarise(per_seed)
    row = tests["in_distribution"]["terse_teacher"]
    assert set(CONTRACT) <= set(row)
    assert row["ap80_mean"] == pytest.approx(48.0) and row["ap80_std"] == pytest.approx(1.0)
    assert tests["shifted"]["baseline"]["ap80_std"] == 0.0 and tests["in_distribution"]["baseline"]["hard_positive_fraction"] is None
    c = comparisons(tests)
    vs_rp = c["in_distribution"]["ap80_vs_random_paste"]
    assert vs_rp["diff"] == pytest.approx(5.0) and vs_rp["beyond_pooled_std"] and vs_rp["target_met"]
    assert c["in_distribution"]["ap80_vs_baseline"]["target_met"]
    assert not c["shifted"]["ap80_vs_random_paste"]["target_met"]  # +0.5 points: below the +2 target
    assert c["hard_positive_ratio_vs_random_paste"]["terse_teacher"] == {"ratio": 3.5, "plausible_at_least_random_paste": True}


def test_imitation_table_and_feedback_targets():
    def rows(v, shifted, share=None):
        return {s: {"ap": {"in_distribution": _ap(v + 0.01 * s), "shifted": _ap(shifted + 0.01 * s)}, "synthetic_share": share} for s in (0, 1, 2)}

    per_seed = {
        "baseline": rows(0.40, 0.20),
        "random_paste": rows(0.42, 0.21, 0.5),
        "imitation_no_imitation": rows(0.42, 0.22, 0.5),
        "imitation_sim": rows(0.10, 0.05, 1.0),
        "imitation_cycle_1": rows(0.41, 0.23, 0.5),
        "imitation_cycle_2": rows(0.43, 0.26, 0.5),
        "imitation": rows(0.43, 0.26, 0.5),
        "policy": rows(0.42, 0.22, 0.5),
    }
    tests = summarise(per_seed)
    table = imitation_table(tests, per_seed)
    assert [r["name"] for r in table] == ["real", "sim", "real+sim (no imitation)", "cycle_1", "cycle_2"]
    assert table[0]["synthetic_share"] == 0.0 and table[1]["synthetic_share"] == 1.0
    assert table[4]["shifted_ap80_mean"] == pytest.approx(27.0) and table[4]["in_distribution_ap80_std"] == pytest.approx(1.0)
    assert {"in_distribution_ap50_mean", "in_distribution_ap80_mean", "shifted_ap50_mean", "shifted_ap80_std"} <= set(table[3])
    t = feedback_targets(tests)
    assert t["imitation"]["shifted"]["diff"] == pytest.approx(4.0) and t["imitation"]["target_met"]  # +4 shifted, +1 in-distribution
    assert t["policy"]["shifted"]["diff"] == pytest.approx(1.0) and not t["policy"]["target_met"]  # +1: below the +2 target
    del per_seed["imitation_no_imitation"]
    assert "imitation" not in feedback_targets(summarise(per_seed))


def test_summary_skips_a_test_set_a_row_was_not_evaluated_on():
    per_seed = {
        "baseline": {s: {"ap": {"in_distribution": _ap(0.4), "shifted": _ap(0.2), "shifted_severe": _ap(0.05)}} for s in (0, 1)},
        "old_row": {s: {"ap": {"in_distribution": _ap(0.5), "shifted": _ap(0.3)}} for s in (0, 1)},
    }
    tests = summarise(per_seed)
    assert set(tests["shifted_severe"]) == {"baseline"} and set(tests["shifted"]) == {"baseline", "old_row"}


def test_refresh_evaluates_saved_weights_again_when_the_test_sets_changed(tmp_path):
    import torch

    from synthloop.experiments.detection import copy_target, new_detector
    from synthloop.loops.checkpoint import save_checkpoint
    from synthloop.models.detection import LabelMap

    baseline = new_detector(LabelMap((1, 2), ("a", "b")), 0)
    trained = copy_target(baseline)
    with torch.no_grad():
        next(trained.model.parameters()).add_(1.0)  # the row's weights differ from the baseline's
    save_checkpoint(tmp_path / "row_model.pt", {"model": trained.model.state_dict()})
    old = {"ap": {"in_distribution": _ap(0.5), "shifted": _ap(0.01)}, "history": [1]}
    (tmp_path / "row.json").write_text(json.dumps({"key": "k", "result": old}))
    seen = []

    class FakeTests(Tests):
        def __init__(self):
            self.sets, self.signature = {"in_distribution": None, "shifted": None, "shifted_severe": None}, {"shifted": "mild v1"}

        def evaluate(self, target, batch_size):
            seen.append(next(target.model.parameters()).detach().clone())
            return {t: _ap(0.3) for t in self.sets}

    tests = FakeTests()
    new = tests.refresh(tmp_path / "row.json", old, baseline, 4, print)
    assert set(new["ap"]) == set(tests.sets) and new["tests"] == tests.signature and new["history"] == [1]
    assert torch.equal(seen[0], next(trained.model.parameters()))  # the saved weights, not the baseline's
    assert json.loads((tmp_path / "row.json").read_text()) == {"key": "k", "result": new}
    assert tests.refresh(tmp_path / "row.json", new, baseline, 4, print) is new and len(seen) == 1  # current: nothing evaluated


@pytest.mark.slow
def test_quick_benchmark_writes_the_contract_and_reuses_its_cache(tmp_path):
    # three rows keep it short (about 2 min on an idle 2-core box); the row list is the same code path for all of ROWS
    rows = ["baseline", "random_paste", "terse_teacher"]
    args = ["--quick", "--seeds", "0", "1", "--rows", *rows, "--run-dir", str(tmp_path / "run"), "--results-dir", str(tmp_path / "results")]
    docs = []
    for _ in range(2):
        r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "detection.py"), *args], check=False, capture_output=True, text=True, timeout=1200)
        assert r.returncode == 0, r.stderr[-3000:]
        docs.append(json.loads((tmp_path / "results" / "detection_methods_quick.json").read_text()))
    doc = docs[1]
    assert doc["seeds"] == [0, 1] and (doc["commit"] is None or len(doc["commit"]) == 40)
    assert set(doc["tests"]) == set(TESTS) == {"in_distribution", "shifted", "shifted_severe"}
    for t in doc["tests"].values():
        assert set(t) == set(rows)
        for name, row in t.items():
            assert set(CONTRACT) <= set(row)
            synthetic = ROWS[name] is not None
            assert (row["hard_positive_fraction"] is not None) == synthetic and (row["plausible_fraction"] is not None) == synthetic
    assert docs[0]["tests"] == docs[1]["tests"]  # the second run only re-reads the cache
    assert all((ROOT / p).is_file() or Path(p).is_file() for p in doc["plots"]) and len(doc["plots"]) == 3
    assert "cached" in (tmp_path / "results" / "detection_methods_quick.log").read_text()
