"""The detection protocol (synthloop.experiments.detection) and its benchmark's quick mode end to
end (the script run as a user runs it): the output contract other tools read, the plots, and the
run-folder cache that lets a rerun skip the baseline and finished methods."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from synthloop.experiments import detection as bench

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("baseline", "random_paste", "random_paste_artefacts", "terse_no_d", "terse_d")
AP_KEYS = ("ap50", "ap60", "ap70", "ap80", "ap")

pytestmark = pytest.mark.slow  # two quick runs of the benchmark: about 25 s on an idle 2-core box


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("detection_bench")
    args = ["--quick", "--run-dir", str(tmp / "run"), "--results-dir", str(tmp / "results"), "--only", *METHODS[1:], "single_object"]
    docs = []
    for _ in range(2):
        r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "detection.py"), *args], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        docs.append(json.loads((tmp / "results" / "detection_quick.json").read_text()))
    return tmp, docs[0], docs[1]


def test_output_contract(quick_run):
    tmp, first, _ = quick_run
    doc = json.loads((tmp / "results" / "detection_quick.json").read_text())
    assert doc["commit"] is None or len(doc["commit"]) == 40
    assert set(doc["methods"]) == set(METHODS)
    for name in METHODS:
        m = doc["methods"][name]
        for key in AP_KEYS:
            assert 0.0 <= m[key] <= 1.0, (name, key, m[key])
        # AP at a stricter IoU can never exceed AP at a looser one (same detections)
        assert m["ap50"] >= m["ap60"] >= m["ap70"] >= m["ap80"]
        if name != "baseline":
            assert 0.0 <= m["hard_positive_fraction"] <= 1.0
            assert m["synthetic_images"] > 0 and m["pasted_objects"] >= m["synthetic_images"]
            hist = doc["hardness_histograms"][name]
            assert sum(hist["counts"]) == m["pasted_objects"]
            hard_bins = sum(c for c, lo in zip(hist["counts"], hist["bin_edges"]) if lo < 0.5)
            assert hard_bins / m["pasted_objects"] == pytest.approx(m["hard_positive_fraction"], abs=1e-3)
    # every method synthesises the same number of images (the equal-budget protocol)
    counts = {doc["methods"][n]["synthetic_images"] for n in METHODS[1:] if doc["methods"][n]["config"]["keep"] == "all"}
    assert len(counts) == 1
    assert doc["methods"]["random_paste"]["config"]["synthesizer"] == "random"
    assert doc["methods"]["terse_d"]["config"]["discriminator"] is True
    assert doc["methods"]["terse_no_d"]["config"]["discriminator"] is False
    assert doc["ablations"]["single_object"]["ap50"] <= 1.0
    assert doc["ablation_details"]["single_object"]["objects_per_image"] == 1.0
    for key in ("protocol", "deviations", "paper", "machine", "timings"):
        assert doc[key]
    for plot in ("detection_quick_hardness.png", "detection_quick_ap.png", "detection_quick_samples.png"):
        assert (tmp / "results" / plot).stat().st_size > 1000
    assert (tmp / "results" / "detection_quick.log").read_text().count("baseline: test AP50") == 2


def test_rerun_uses_the_cache(quick_run):
    _, first, second = quick_run
    assert first["timings"]["baseline_cached"] is False
    assert second["timings"]["baseline_cached"] is True
    for name in METHODS[1:]:
        assert first["methods"][name]["cached"] is False
        assert second["methods"][name]["cached"] is True
        for key in AP_KEYS:
            assert second["methods"][name][key] == first["methods"][name][key]


def test_low_data_variant_uses_one_fixed_subset_everywhere():
    """``--real-train N``: the baseline's and the loop's real images are the same N training images,
    drawn once (seeded), and the val/test splits are untouched."""
    budget = {**bench.QUICK, **bench.low_data_budget(bench.QUICK, 10)}
    full = bench.Data(bench.QUICK, 0)
    low = bench.Data(budget, 0)
    again = bench.Data(budget, 0)
    assert low.sizes() == {**full.sizes(), "train": 10}
    assert low.train_indices == again.train_indices and len(set(low.train_indices)) == 10
    assert set(low.train_indices) < set(range(full.train_total))
    assert torch.equal(low.train_images, full.train_images[low.train_indices])
    assert [t["boxes"].tolist() for t in low.train_targets] == [full.train_targets[i]["boxes"].tolist() for i in low.train_indices]
    # loop_real = N: the loop sees exactly the low-data training set
    assert low.loop_indices == list(range(10)) and torch.equal(low.loop_images, low.train_images)
    full_budget = bench.low_data_budget(bench.FULL, 250)
    assert full_budget["loop_real"] == 250 and full_budget["baseline"]["epochs"] > bench.FULL["baseline"]["epochs"]
    assert full_budget["baseline"]["select_from_epoch"] <= full_budget["baseline"]["epochs"]


def test_plausible_ranges_reach_every_method():
    budget = {**bench.FULL, "loop": {**bench.FULL["loop"], "ranges": bench.PLAUSIBLE_RANGES}}
    for name, overrides in bench.METHODS.items():
        ranges = bench.loop_config(budget, overrides, 0).ranges
        for key, (lo, hi) in bench.PLAUSIBLE_RANGES.items():
            assert tuple(getattr(ranges, key)) == (lo, hi), (name, key)
    # narrower than the loop's defaults on every parameter
    default = bench.loop_config(bench.FULL, {}, 0).ranges
    for key, (lo, hi) in bench.PLAUSIBLE_RANGES.items():
        dlo, dhi = getattr(default, key)
        assert dlo <= lo and hi <= dhi and (dlo, dhi) != (lo, hi), key
