"""The limited-real protocol on a tiny budget: the output contract other tools read (``commit``
and ``rows`` with name / real_per_class / ratio / aug / acc_mean / acc_std, written by
``benchmarks/limited_real.py``), refiner quality figures, the run-folder cache, and the pieces the
protocol rests on."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from synthloop.experiments import limited_real as lr

ROOT = Path(__file__).resolve().parents[2]


TINY = dict(
    synthetic=120, val_digits=60, reference_digits=100, test_digits=100, clf_steps=3, clf_batch=32, reference_steps=3,
    cyclegan_steps=2, mrgan_pretrain_g=1, mrgan_pretrain_d=1, mrgan_steps=1, pixelda_steps=2, ratios=["1:1", "1:15"],
)  # fmt: skip


def _tiny():
    return lr.Budget.quick(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY.items()})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.set_num_threads(1)  # module-scoped: runs before the function-scoped autouse fixture that does this
    tmp = tmp_path_factory.mktemp("limited_real")
    b = _tiny()
    cmd = [sys.executable, str(ROOT / "benchmarks" / "limited_real.py"), "--quick", "--budget", json.dumps(TINY), "--name", "limited_real_tiny",
           "--run-dir", str(tmp / "run"), "--results-dir", str(tmp / "results")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # the script as a user runs it: it writes the plots and the JSON
    assert r.returncode == 0, r.stderr[-3000:]
    res = lr.run(b, tmp / "run", log=lambda _m: None)  # from the run folder's cache: the same rows, nothing trained again
    return tmp, b, res, json.loads((tmp / "results" / "limited_real_tiny.json").read_text())


def test_output_contract(tiny_run):
    tmp, b, _, _ = tiny_run
    doc = json.loads((tmp / "results" / "limited_real_tiny.json").read_text())
    assert doc["commit"] is None or len(doc["commit"]) == 40
    rows = doc["rows"]
    for r in rows:
        assert {"name", "real_per_class", "ratio", "aug", "acc_mean", "acc_std"} <= set(r)
        assert 0.0 <= r["acc_mean"] <= 1.0 and r["acc_std"] >= 0.0
        assert r["ratio"] is None or r["ratio"] in b.ratios
        assert isinstance(r["aug"], bool)
    names = {r["name"] for r in rows}
    expected = {"real_only", "real+raw", "syn_raw"} | {f"syn_{m}" for m in lr.REFINERS} | {f"real+{m}" for m in lr.REFINERS}
    assert expected <= names
    assert {f"ablation:+{v}" for v in lr.ABLATION_ORDER} | {"ablation:none"} <= names
    mixes = [(r["ratio"], r["aug"]) for r in rows if r["name"] == "real+raw"]
    assert sorted(mixes) == sorted((q, a) for q in b.ratios for a in (False, True))
    best = doc["best_mix"]["10"]
    assert (best["ratio"], best["aug"]) in {(m["ratio"], m["aug"]) for m in best["per_aug"].values()}
    for m in lr.REFINERS:  # each refiner at the best real+raw ratio of each augmentation setting
        mixes = {(r["ratio"], r["aug"]) for r in rows if r["name"] == f"real+{m}"}
        assert mixes == {(best["per_aug"][k]["ratio"], best["per_aug"][k]["aug"]) for k in ("no_aug", "aug")}
    assert set(doc["targets"]["10"]) >= {"best_on_validation", "no_aug", "aug"}
    for key in ("label_preservation", "mask_iou"):
        assert set(doc[key]["10"]) == set(lr.REFINERS)
        assert all(0.0 <= v <= 1.0 for v in doc[key]["10"].values())
    assert doc["paper"] and doc["deviations"] and doc["protocol"]["budget"]["seeds"] == [0]
    for plot in doc["plots"].values():
        assert (ROOT / plot).exists() or Path(plot).exists()


def test_run_folder_caches_runs_and_refined_sets(tiny_run):
    tmp, b, res, _ = tiny_run
    saved = json.loads((tmp / "run" / "runs.json").read_text())
    assert saved["fingerprint"]["synthetic"] == b.synthetic
    keys = {(r["name"], r["real_per_class"], r["ratio"], r["aug"]) for r in res.rows}
    assert len(saved["runs"]) == len(keys) - 1  # ablation:+augment is the syn_raw set, not run again
    assert all(0.0 <= v["test"] <= 1.0 for v in saved["runs"].values())
    assert sorted(p.name for p in (tmp / "run").glob("refined_*.pt")) == sorted(f"refined_{m}_10.pt" for m in lr.REFINERS)
    fingerprint = {k: v for k, v in asdict(b).items() if k not in ("ablation", "ablation_seeds")}
    again = lr.Cache(tmp / "run", fingerprint)  # the same budget: everything is reused
    assert again.runs == saved["runs"] and again.get(next(iter(saved["runs"]))) is not None
    assert again.load_tensor("refined_mrgan_10.pt")["images"].shape == (b.synthetic, 1, 28, 28)
    cache = lr.Cache(tmp / "run", {**fingerprint, "synthetic": b.synthetic + 1})  # another budget: start over
    assert cache.runs == {} and not list((tmp / "run").glob("refined_*.pt"))


def test_real_subsets_are_balanced_nested_and_fixed_by_seed():
    y = torch.arange(1000) % 10
    x = torch.arange(1000, dtype=torch.float32).view(-1, 1, 1, 1)
    small, ys = lr.real_subset((x, y), 3, seed=5)
    big, _ = lr.real_subset((x, y), 20, seed=5)
    assert torch.bincount(ys, minlength=10).tolist() == [3] * 10
    assert set(small.flatten().tolist()) <= set(big.flatten().tolist())
    assert torch.equal(small, lr.real_subset((x, y), 3, seed=5)[0])
    assert not torch.equal(small, lr.real_subset((x, y), 3, seed=6)[0])


def test_augment_2d_is_seeded_and_changes_images():
    x = torch.zeros(4, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1.0
    a = lr.augment_2d(x, torch.Generator().manual_seed(0))
    b = lr.augment_2d(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert (a - x).abs().amax(dim=(1, 2, 3)).min() > 0.1
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0


def test_mixed_batches_hold_the_exact_ratio():
    b = lr.Budget(clf_steps=7, clf_batch=32)
    batches = lr.batch_indices(b, 20, 500, "1:15", torch.Generator().manual_seed(0), seed=3)
    assert len(batches) == 7
    assert all(sum(i < 20 for i in batch) == 2 and len(batch) == 32 for batch in batches)
