"""The multi-seed detection benchmark of issue 11: a low-data real set (250 scenes), an
in-distribution and a shifted test, every row over several seeds (mean +- std), plausibility next
to hardness.

- Data (fixed, ``data_seed`` 0): the 250-real subset of the digits-in-scenes training set (the
  ``--real-train 250`` variant of :mod:`synthloop.experiments.detection`), val 500, the
  in-distribution test (1,000) and two shifted tests of 500 images each
  (:func:`~synthloop.compose.digit_scenes_shifted.load_shifted_test`): ``shifted`` (the ``mild``
  preset: smaller digits, stronger blur, busier scenes, where the baseline keeps headroom) and
  ``shifted_severe`` (the first version: also unseen procedural backgrounds; the baseline sits near
  the floor there). A row cached under other test sets is re-evaluated from its saved weights. A seed varies the
  baseline's initialisation and batch order and every loop's randomness.
- Rows (:data:`ROWS`): ``baseline`` (trained on the 250 real scenes, val-selected), and from a copy
  of it, with the same schedule (cycles, synthetic images per cycle, T epochs at 1:1):
  ``real_only_finetune``, ``random_paste``, ``worst_of_k``, ``terse_paper`` (the A.2 loop with D,
  called terse_d in the Table 4 benchmark) and ``terse_teacher`` (the plausibility options together;
  its teacher is the same seed's ``random_paste`` detector, a detector trained with random augmentation).
- Hardness: per pasted object, the same seed's baseline confidence < 0.5 (Fig. 8). Plausibility:
  the fraction of pasted objects a reference detector still detects (confidence >= 0.5); the
  reference is the seed-0 baseline fine-tuned with random paste at the same schedule under a seed
  of its own (:data:`REFERENCE_SEED`), i.e. a detector trained with heavy random augmentation that
  saw none of the rows' composites.

Every run is cached in ``run_dir/seed_<s>/`` (baseline checkpoint, one JSON per row keyed by its
configuration, resumable loop folders, the row's fine-tuned weights), so an interrupted benchmark
continues where it stopped.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from synthloop.compose.digit_scenes_shifted import SHIFT_VERSION, load_shifted_test
from synthloop.experiments.detection import (
    AP_KEYS,
    HARD_THRESHOLD,
    METHODS,
    Data,
    Log,
    _key,
    _rounded,
    baseline_confidence,
    baseline_key,
    copy_target,
    histogram,
    loop_config,
    make_budget,
    save_samples,
    train_baseline,
)
from synthloop.loops.checkpoint import load_checkpoint, save_checkpoint
from synthloop.loops.detection_training import evaluate_detector, train_detector
from synthloop.metrics.detection import hard_positive_fraction
from synthloop.metrics.plausibility import hard_plausible_fraction, mean_std, plausible_fraction, pooled_std
from synthloop.models.detection import DetectionTarget
from synthloop.utils.atomic import atomic_write_json
from synthloop.utils.seeding import derive_seed

SEEDS = (0, 1, 2)
REAL_TRAIN = 250
SHIFTED_COUNT = 500
REFERENCE_SEED = 1000
TESTS = ("in_distribution", "shifted", "shifted_severe")
TEST_SHIFTS = {"shifted": "mild", "shifted_severe": "severe"}
"""The shifted test sets: name -> :data:`~synthloop.compose.digit_scenes_shifted.SHIFTS` preset."""

TERSE_TEACHER: dict[str, Any] = {
    **METHODS["terse_d"],
    "objective": "teacher",
    "teacher": "frozen",
    "teacher_weight": 1.0,
    "constraints": True,
    "max_rotation": 10.0,
    "s_noise_dim": 8,
    "s_replay": 2,
    "mix_random": 0.25,
}
"""The plausibility options together: a frozen teacher (this seed's ``random_paste`` detector: the
baseline fine-tuned with random augmentation, :data:`TEACHER_ROW`) bounds S, constraints learned
from the 250 real scenes, stochastic S, a replay buffer of 2 S snapshots, a quarter random paste."""

TEACHER_ROW = "random_paste"
ROWS: dict[str, dict[str, Any] | None] = {
    "baseline": None,
    "real_only_finetune": None,
    "random_paste": METHODS["random_paste"],
    "worst_of_k": {**METHODS["random_paste"], "worst_of_k": 4},
    "terse_paper": METHODS["terse_d"],
    "terse_teacher": TERSE_TEACHER,
}
FEEDBACK_ROWS = ("imitation", "policy")
"""Rows of issue 12, each run by its own experiment module: ``imitation``
(:func:`synthloop.experiments.detection_imitation.run_imitation_rows`, which also returns the
``imitation_cycle_<k>``, ``imitation_sim`` and ``imitation_no_imitation`` rows of the imitation
table) and ``policy`` (:func:`synthloop.experiments.detection_policy.run_policy_row`)."""
ABLATIONS: dict[str, dict[str, Any]] = {
    "teacher_off": {"objective": "paper"},
    "constraints_off": {"constraints": False},
    "stochastic_off": {"s_noise_dim": 0},
    "replay_off": {"s_replay": 0},
    "mix_random_off": {"mix_random": 0.0},
}
"""Each is ``terse_teacher`` with one mechanism removed (run with ``ablations=True``)."""


def methods_budget(quick: bool) -> dict[str, Any]:
    """The budget: the 250-real low-data budget of the Table 4 benchmark with the data fixed and a
    shorter baseline (30 epochs, ~940 optimiser steps, val-selected from epoch 24) so 3 seeds fit on one CPU core."""
    budget, _ = make_budget(quick, real_train=REAL_TRAIN)
    budget = copy.deepcopy(budget)
    budget["data_seed"] = 0
    budget["shifted_count"] = 16 if quick else SHIFTED_COUNT
    if not quick:
        budget["baseline"].update(epochs=30, select_from_epoch=24)
    return budget


class Tests:
    """The evaluation sets: ``{"in_distribution": Dataset, "shifted": Dataset, "shifted_severe": Dataset}``;
    ``signature`` names what each one is, so a cached evaluation can tell whether it is current."""

    def __init__(self, data: Data, budget: Mapping[str, Any], cache_dir: str | Path | None):
        n = int(budget["shifted_count"])
        self.sets = {"in_distribution": data.test, **{name: load_shifted_test(0, n, shift=shift, cache_dir=cache_dir) for name, shift in TEST_SHIFTS.items()}}
        self.signature = {
            "in_distribution": f"digit_scenes test {len(data.test.images)}",
            **{name: f"digit_scenes_shifted v{SHIFT_VERSION} {shift} seed 0 x{n}" for name, shift in TEST_SHIFTS.items()},
        }

    def evaluate(self, target: DetectionTarget, batch_size: int) -> dict[str, dict[str, float]]:
        return {name: _rounded(evaluate_detector(target, ds, batch_size=batch_size)) for name, ds in self.sets.items()}

    def refresh(self, path: Path, hit: dict[str, Any], baseline: DetectionTarget, batch_size: int, log: Log) -> dict[str, Any]:
        """``hit`` (the cached result in ``path``) with its AP on the current test sets: when it was
        evaluated on other sets, its saved weights (``<name>_model.pt`` beside ``path``) are evaluated
        again and the cache rewritten (the training is not repeated)."""
        if hit.get("tests") == self.signature:
            return hit
        model_path = path.with_name(f"{path.stem}_model.pt")
        if not model_path.is_file():
            log(f"{path}: evaluated on other test sets and no saved weights to evaluate again; keeping the old AP")
            return hit
        target = copy_target(baseline)
        target.model.load_state_dict(load_checkpoint(model_path)["model"])
        hit = {**hit, "ap": self.evaluate(target, batch_size), "tests": self.signature}
        doc = json.loads(path.read_text())
        atomic_write_json(path, {**doc, "result": hit})
        log(f"{path.parent.name} {path.stem}: evaluated again on the current test sets ({', '.join(self.sets)})")
        return hit


def _cached(path: Path, key: str) -> dict[str, Any] | None:
    if path.is_file():
        doc = json.loads(path.read_text())
        if doc.get("key") == key:
            return doc["result"]
    return None


def run_row(
    name: str,
    data: Data,
    tests: Tests,
    baseline: DetectionTarget,
    budget: Mapping[str, Any],
    seed: int,
    run_dir: Path,
    log: Log,
    *,
    overrides: Mapping[str, Any] | None,
    teacher: DetectionTarget | None = None,
    cached_only: bool = False,
) -> dict[str, Any] | None:
    """One row for one seed: fine-tune a copy of ``baseline`` (real only when ``overrides`` is None,
    else through the scene loop), AP on both tests, the baseline's confidence on every kept object.
    Cached as ``run_dir/<name>.json``; the fine-tuned weights as ``<name>_model.pt``; the kept
    scenes' params stay in the loop folder (``<name>-<key>/scenes.json``)."""
    from synthloop.loops.terse_detection import SceneTerse

    cfg = loop_config(budget, overrides or {}, seed)
    key_doc = {
        "row": name,
        "config": cfg.to_dict(),
        "baseline": baseline_key(baseline),
        "sizes": data.sizes(),
        "real": data.loop_indices,
        "tests": list(TESTS[:2]),
    }  # the test sets stay out of the training key: Tests.refresh re-evaluates
    if teacher is not None:
        key_doc["teacher"] = baseline_key(teacher)
    key = _key(key_doc)
    hit = _cached(run_dir / f"{name}.json", key)
    if hit is not None:
        log(f"seed {seed} {name}: cached")
        return tests.refresh(run_dir / f"{name}.json", hit, baseline, budget["eval_batch_size"], log)
    if cached_only:
        log(f"seed {seed} {name}: not run yet (cached_only)")
        return None
    target = copy_target(baseline)
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    if overrides is None:  # real only, the methods' T schedule: as many images and steps per cycle as a 1:1 phase
        r, s = (int(v) for v in cfg.real_ratio.split(":"))
        for cycle in range(1, cfg.cycles + 1):
            train_detector(
                target,
                data.loop_images,
                data.loop_targets,
                epochs=cfg.t_epochs * (r + s) // r,
                batch_size=cfg.t_batch_size,
                lr=cfg.lr_t,
                seed=derive_seed(cfg.seed, "T", cycle),
            )
        scenes: list[Any] = []
    else:
        real_images, real_targets = data.train_images[data.loop_indices], [data.train_targets[i] for i in data.loop_indices]
        loop = SceneTerse(cfg, target, real_images, real_targets, data.foregrounds, data.backgrounds, teacher=teacher)
        result = loop.run(run_dir / f"{name}-{key}", resume=True)
        scenes = list(result.scenes)
        out["history"] = [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in h.items()} for h in result.history]
        out["constraints"] = loop.constraints.to_dict() if loop.constraints is not None else None
    loop_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    out["ap"], out["tests"] = tests.evaluate(target, budget["eval_batch_size"]), tests.signature
    eval_s = time.perf_counter() - t1
    if scenes:
        conf = baseline_confidence(baseline, scenes, budget["eval_batch_size"])
        out.update(
            hard_positive_fraction=round(hard_positive_fraction(conf, HARD_THRESHOLD), 4),
            synthetic_images=len(scenes),
            pasted_objects=int(conf.numel()),
            histogram=histogram(conf),
        )
        save_samples(run_dir / f"{name}_samples.pt", scenes, conf)
        torch.save({"confidence": conf}, run_dir / f"{name}_confidence.pt")
    save_checkpoint(run_dir / f"{name}_model.pt", {"model": target.model.state_dict()})
    out.update(config=cfg.to_dict() if overrides is not None else None, timings={"loop_s": round(loop_s, 1), "eval_s": round(eval_s, 1)})
    atomic_write_json(run_dir / f"{name}.json", {"key": key, "result": out})
    ap = out["ap"]
    log(
        f"seed {seed} {name}: in-dist AP50 {ap['in_distribution']['ap50']:.3f} AP80 {ap['in_distribution']['ap80']:.3f} | shifted AP50 {ap['shifted']['ap50']:.3f} "
        f"AP80 {ap['shifted']['ap80']:.3f} | hard {out.get('hard_positive_fraction')} | {loop_s:.0f} s"
    )
    return out


def plausibility(
    row: Mapping[str, Any], reference: DetectionTarget, data: Data, budget: Mapping[str, Any], run_dir: Path, name: str
) -> dict[str, float] | None:
    """The reference's confidence on the row's kept objects (replayed from the loop folder) -> the
    plausible fraction and the hard-and-plausible fraction (cached in ``<name>_plausible.json``)."""
    from synthloop.loops.terse_detection import replay_scene

    if "hard_positive_fraction" not in row:
        return None
    cache = run_dir / f"{name}_plausible.json"
    ref_key = baseline_key(reference)
    hit = _cached(cache, ref_key)
    if hit is not None:
        return hit
    folder = run_dir / f"{name}-{json.loads((run_dir / f'{name}.json').read_text())['key']}"  # the loop folder of the cached row
    scenes = [replay_scene(p, data.foregrounds, data.backgrounds, data.label_map) for p in json.loads((folder / "scenes.json").read_text())]
    ref_conf = baseline_confidence(reference, scenes, budget["eval_batch_size"])
    conf = torch.load(run_dir / f"{name}_confidence.pt", weights_only=True)["confidence"]
    out = {"plausible_fraction": round(plausible_fraction(ref_conf), 4), "hard_plausible_fraction": round(hard_plausible_fraction(conf, ref_conf), 4)}
    atomic_write_json(cache, {"key": ref_key, "result": out})
    return out


def reference_detector(data: Data, tests: Tests, baseline: DetectionTarget, budget: Mapping[str, Any], run_dir: Path, log: Log) -> DetectionTarget:
    """The plausibility reference: ``baseline`` fine-tuned with random paste under :data:`REFERENCE_SEED` (cached)."""
    run_row("reference_random_paste", data, tests, baseline, budget, REFERENCE_SEED, run_dir, log, overrides=METHODS["random_paste"])
    ref = copy_target(baseline)
    ref.model.load_state_dict(load_checkpoint(run_dir / "reference_random_paste_model.pt")["model"])
    return ref


def run_methods_benchmark(
    budget: Mapping[str, Any],
    seeds: Sequence[int],
    run_dir: Path,
    log: Log,
    *,
    cache_dir: str | Path | None = None,
    rows: Sequence[str] | None = None,
    ablations: bool = False,
    cached_only: bool = False,
) -> dict[str, Any]:
    """Every row (and, with ``ablations``, every ablation) for every seed; returns
    ``{"per_seed": {row: {seed: result}}, "reference": ..., "timings": ...}``."""
    names = list(rows) if rows is not None else [*ROWS, *FEEDBACK_ROWS]
    per_seed: dict[str, dict[int, dict[str, Any]]] = {}
    t_start = time.perf_counter()
    data: Data | None = None
    for seed in seeds:
        sdir = run_dir / f"seed_{seed}"
        sdir.mkdir(parents=True, exist_ok=True)
        if cached_only and not (sdir / "baseline.pt").is_file():
            log(f"seed {seed}: no baseline yet (cached_only): skipped")
            continue
        data = Data(budget, seed, cache_dir)
        tests = Tests(data, budget, cache_dir)
        baseline, info = train_baseline(data, budget, seed, sdir, log)
        todo = {n: ROWS[n] for n in names if n != "baseline" and n not in FEEDBACK_ROWS}
        if ablations:
            todo.update({f"ablation_{a}": {**TERSE_TEACHER, **o} for a, o in ABLATIONS.items()})
        base_cache, base_key = sdir / "baseline_eval.json", _key({"baseline": baseline_key(baseline), "tests": tests.signature})
        base = _cached(base_cache, base_key)
        if base is None:
            base = {"ap": tests.evaluate(baseline, budget["eval_batch_size"]), "training": info, "tests": tests.signature}
            atomic_write_json(base_cache, {"key": base_key, "result": base})
        per_seed.setdefault("baseline", {})[seed] = base
        for name, overrides in todo.items():
            teacher = None
            if overrides is not None and overrides.get("objective") == "teacher":  # the teacher: this seed's random-paste detector
                if not (sdir / f"{TEACHER_ROW}_model.pt").is_file():
                    if cached_only:
                        continue
                    run_row(TEACHER_ROW, data, tests, baseline, budget, seed, sdir, log, overrides=ROWS[TEACHER_ROW])
                teacher = copy_target(baseline)
                teacher.model.load_state_dict(load_checkpoint(sdir / f"{TEACHER_ROW}_model.pt")["model"])
            row = run_row(name, data, tests, baseline, budget, seed, sdir, log, overrides=overrides, teacher=teacher, cached_only=cached_only)
            if row is not None:
                per_seed.setdefault(name, {})[seed] = row
        for name in (n for n in names if n in FEEDBACK_ROWS):
            for key, row in _feedback_rows(name, data, tests, baseline, budget, seed, sdir, log, cached_only).items():
                per_seed.setdefault(key, {})[seed] = row
    # plausibility: the reference is built from the seed-0 baseline, so it waits until that baseline exists
    ref_dir = run_dir / "seed_0"
    ref_ready = not cached_only or (run_dir / "reference_random_paste_model.pt").is_file()
    if data is not None and (ref_dir / "baseline.pt").is_file() and ref_ready:
        base0, _ = train_baseline(data, budget, 0, ref_dir, log)  # loads the cached checkpoint (same data for every seed)
        reference = reference_detector(data, Tests(data, budget, cache_dir), base0, budget, run_dir, log)
        for name, by_seed in per_seed.items():
            for seed, row in by_seed.items():
                by_seed[seed] = {**row, **(plausibility(row, reference, data, budget, run_dir / f"seed_{seed}", name) or {})}
    else:
        log("plausibility: the seed-0 baseline is not trained yet; run again with seed 0 to add it")
    return {"per_seed": per_seed, "wall_s": round(time.perf_counter() - t_start, 1)}


def _feedback_rows(
    name: str, data: Data, tests: Tests, baseline: DetectionTarget, budget: Mapping[str, Any], seed: int, sdir: Path, log: Log, cached_only: bool
) -> dict[str, dict[str, Any]]:
    """The rows of one :data:`FEEDBACK_ROWS` entry for one seed (``{}`` when not run yet under
    ``cached_only``), each on the current test sets (:meth:`Tests.refresh`)."""
    if name == "imitation":
        from synthloop.experiments.detection_imitation import run_imitation_rows

        rows = run_imitation_rows(data, tests, baseline, budget, seed, sdir, log, cached_only=cached_only) or {}
    else:
        from synthloop.experiments.detection_policy import run_policy_row

        row = run_policy_row(data, tests, baseline, budget, seed, sdir, log, cached_only=cached_only)
        rows = {"policy": row} if row is not None else {}
    batch = budget["eval_batch_size"]
    return {k: tests.refresh(sdir / f"{k}.json", r, baseline, batch, log) if (sdir / f"{k}.json").is_file() else r for k, r in rows.items()}


IMITATION_TABLE = {"real": "baseline", "sim": "imitation_sim", "real+sim (no imitation)": "imitation_no_imitation"}
"""Seed 001's table rows before the cycles: table name -> benchmark row (``cycle_<k>`` -> ``imitation_cycle_<k>``)."""


def imitation_table(tests: Mapping[str, Mapping[str, Mapping[str, Any]]], per_seed: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Issue 12's ``imitation_table``: seed 001's rows (``real``, ``sim``, ``real+sim (no imitation)``,
    ``cycle_1`` ...) from the summarised ``tests``, with the synthetic share (mean over seeds; 0 for
    the real-only baseline). Rows not run are left out."""
    names = dict(IMITATION_TABLE)
    k = 1
    while f"imitation_cycle_{k}" in per_seed:
        names[f"cycle_{k}"] = f"imitation_cycle_{k}"
        k += 1
    out = []
    for table_name, row in names.items():
        if row not in per_seed or "in_distribution" not in tests or row not in tests["in_distribution"]:
            continue
        shares = [r.get("synthetic_share") for r in per_seed[row].values()]
        entry: dict[str, Any] = {"name": table_name, "row": row, "seeds": sorted(per_seed[row])}
        for t in ("in_distribution", "shifted"):
            cell = tests.get(t, {}).get(row)
            if cell is not None:
                entry.update({f"{t}_ap50_mean": cell["ap50_mean"], f"{t}_ap80_mean": cell["ap80_mean"], f"{t}_ap80_std": cell["ap80_std"]})
        entry["synthetic_share"] = 0.0 if row == "baseline" else (round(mean_std([float(v) for v in shares])[0], 4) if None not in shares else None)
        out.append(entry)
    return out


def summarise(per_seed: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The contract's ``tests``: per test set, per row, mean and std (over seeds) of AP50/AP80/AP
    (in %, like the paper's tables), the hard-positive and plausible fractions (means over seeds).
    A test set is summarised for the rows evaluated on it in every seed (all of them, once
    :meth:`Tests.refresh` has run)."""
    present = [t for t in TESTS if any(t in r["ap"] for by_seed in per_seed.values() for r in by_seed.values())]
    out: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in present}
    for name, by_seed in per_seed.items():
        for t in present:
            if not all(t in r["ap"] for r in by_seed.values()):
                continue
            row: dict[str, Any] = {"seeds": sorted(by_seed)}
            for k in ("ap50", "ap80", "ap"):
                m, s = mean_std([100.0 * r["ap"][t][k] for r in by_seed.values()])
                row[f"{k}_mean"], row[f"{k}_std"] = round(m, 2), round(s, 2)
            row["ap_by_iou_mean"] = [round(mean_std([100.0 * r["ap"][t][k] for r in by_seed.values()])[0], 2) for k in AP_KEYS[:4]]
            row["ap_by_iou_std"] = [round(mean_std([100.0 * r["ap"][t][k] for r in by_seed.values()])[1], 2) for k in AP_KEYS[:4]]
            for k in ("hard_positive_fraction", "plausible_fraction", "hard_plausible_fraction"):
                vals = [r[k] for r in by_seed.values() if r.get(k) is not None]
                row[k] = round(mean_std(vals)[0], 4) if vals else None
            out[t][name] = row
    return out


FEEDBACK_TARGETS = (("imitation", "imitation_no_imitation", 2.0), ("policy", "random_paste", 2.0))
"""Issue 12's targets: ``(row, compared with, AP80 points needed on the shifted test)``; imitation
must also not lose in-distribution."""


def feedback_targets(tests: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Issue 12's targets per row of :data:`FEEDBACK_TARGETS` that was run: the AP80 difference on
    each test set with the pooled std, and whether the target is met (shifted: ``>= need`` and
    beyond the pooled std; in-distribution, imitation only: not below by more than the pooled std)."""
    out: dict[str, Any] = {}
    for row, other, need in FEEDBACK_TARGETS:
        cells: dict[str, Any] = {}
        for t in ("in_distribution", "shifted"):
            rows = tests.get(t, {})
            if row in rows and other in rows:
                d = rows[row]["ap80_mean"] - rows[other]["ap80_mean"]
                p = pooled_std(rows[row]["ap80_std"], rows[other]["ap80_std"])
                cells[t] = {"vs": other, "diff": round(d, 2), "pooled_std": round(p, 2), "beyond_pooled_std": abs(d) > p}
        if "shifted" in cells:
            met = cells["shifted"]["diff"] >= need and cells["shifted"]["beyond_pooled_std"]
            if row == "imitation" and "in_distribution" in cells:
                met = met and not (cells["in_distribution"]["diff"] < 0 and cells["in_distribution"]["beyond_pooled_std"])
            out[row] = {**cells, "target": f"shifted AP80 >= {other} + {need}" + (", no in-distribution loss" if row == "imitation" else ""), "target_met": met}
    return out


def comparisons(tests: Mapping[str, Mapping[str, Mapping[str, Any]]], best: str = "terse_teacher") -> dict[str, Any]:
    """The issue's targets, per test set: ``best`` - random_paste and - baseline in AP80 points with
    the pooled std (a difference counts only beyond it); hard-positive ratio vs random paste at its plausibility."""
    out: dict[str, Any] = {}
    for t, rows in tests.items():
        if best not in rows:
            continue
        b = rows[best]
        res: dict[str, Any] = {}
        for other, need in (("random_paste", 2.0), ("baseline", 3.0)):
            if other in rows:
                o = rows[other]
                d, p = b["ap80_mean"] - o["ap80_mean"], pooled_std(b["ap80_std"], o["ap80_std"])
                res[f"ap80_vs_{other}"] = {
                    "diff": round(d, 2),
                    "pooled_std": round(p, 2),
                    "beyond_pooled_std": abs(d) > p,
                    "target": need,
                    "target_met": d >= need and d > p,
                }
        out[t] = res
    rp = tests["in_distribution"].get("random_paste", {})
    for name, row in tests["in_distribution"].items():
        if row.get("hard_positive_fraction") and rp.get("hard_positive_fraction"):
            out.setdefault("hard_positive_ratio_vs_random_paste", {})[name] = {
                "ratio": round(row["hard_positive_fraction"] / rp["hard_positive_fraction"], 3),
                "plausible_at_least_random_paste": (row.get("plausible_fraction") or 0) >= (rp.get("plausible_fraction") or 0),
            }
    return out


__all__ = [
    "ABLATIONS",
    "REFERENCE_SEED",
    "ROWS",
    "SEEDS",
    "TERSE_TEACHER",
    "TESTS",
    "TEST_SHIFTS",
    "Tests",
    "comparisons",
    "methods_budget",
    "run_methods_benchmark",
    "summarise",
]
