"""The ``policy`` row of the multi-seed detection benchmark (issue 12 part 2): a learned generator
policy (:mod:`synthloop.loops.policy`, the cross-entropy method over the random paste generator's
parameters, starting at random paste's defaults) searched with short fine-tunes of the seed's
baseline scored on a fixed 150-image subset of the real validation split, then the final fine-tune.

**Equal final-training compute.** The final fine-tune is exactly the random paste row's
(:data:`~synthloop.experiments.detection.METHODS` ``random_paste`` through ``loop_config(budget,
...)``: ``cycles x hard_per_cycle`` scenes, ``t_epochs`` at 1:1 from the baseline) with the policy's
final mean setting in place of the default ranges, blends and counts; so the row compares with
``random_paste`` at equal final-training compute, and its search is the extra compute
(``timings.search_s``, ``timings.short_finetunes``).

**Search size** (:data:`SEARCH`). The issue asks for "the same compute as TERSE". Measured per
seed in ``benchmarks/results/detection_methods.json``, the ``terse_teacher`` loop took 1.1-2.5x
(mean 1.8x) the random paste loop (= this row's final fine-tune) under the same conditions
(145 / 129, 101 / 41, 160 / 93 s). One short fine-tune (32 real + 32 policy scenes: generation,
8 steps of 8, AP on 150 val images) took 10-36 s (median ~15 s) on the shared 2-core box at load
5-8, where the final fine-tune took 131 s; a first run with 3 iterations of 4 (12 fine-tunes)
spent 232 s searching (search + final = 2.8x the final fine-tune, above terse_teacher's range).
So the search is 2 iterations of 4 candidates (8 short fine-tunes, ~1.2x the final fine-tune),
putting search + final at ~2.2x the random paste loop: inside the terse_teacher row's measured
1.1-2.5x. Elite 2 of 4 with smoothing 0.7: the short fine-tune's reward is very noisy (two
near-identical settings scored AP80 0.15 and 0.23 on the val subset in that run), and averaging
the two best damps chasing a single lucky candidate.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from synthloop.experiments.detection import METHODS, Data, Log, _key, baseline_confidence, baseline_key, copy_target, histogram, loop_config, save_samples
from synthloop.experiments.detection_methods import Tests, _cached
from synthloop.loops.checkpoint import save_checkpoint
from synthloop.loops.policy import CEMConfig, CEMPolicy, FinetuneReward, search
from synthloop.loops.policy_space import apply_setting, default_space
from synthloop.metrics.detection import hard_positive_fraction
from synthloop.models.detection import DetectionTarget
from synthloop.report.policy import plot_policy
from synthloop.utils.atomic import atomic_write_json

NAME = "policy"
BASE_ROW = "random_paste"
SEARCH: dict[str, Any] = {
    "iterations": 2,
    "population": 4,
    "elite": 2,
    "alpha": 0.7,
    "init_std": 0.2,
    "min_std": 0.05,
    "val_images": 150,
    "real_per_finetune": 32,
    "synthetic_per_finetune": 32,
}
"""The search at the benchmark's budget (see the module docstring): 8 short fine-tunes, elite 2 of 4, smoothing 0.7."""
QUICK_SEARCH: dict[str, Any] = {**SEARCH, "iterations": 2, "population": 2, "elite": 1, "val_images": 8, "real_per_finetune": 4, "synthetic_per_finetune": 4}
"""The quick budget's search (a smoke run of the same code)."""
CEM_KEYS = ("iterations", "population", "elite", "alpha", "init_std", "min_std")


def search_sizes(budget: Mapping[str, Any]) -> dict[str, Any]:
    """:data:`QUICK_SEARCH` for the quick budget (fixed small ``sizes``), else :data:`SEARCH`."""
    return dict(QUICK_SEARCH if budget.get("sizes") is not None else SEARCH)


def _compact(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history as the row keeps it: per iteration the policy (mean/std per parameter), every
    candidate's setting, reward and AP, the elite and the seconds (scenes stay in the search folder)."""
    out = []
    for h in history:
        pol = {k: h["policy"][k] for k in ("mean", "std", "mean_u", "std_u")}
        upd = {k: h["updated"][k] for k in ("mean", "std", "mean_u", "std_u")}
        cands = [{k: c[k] for k in ("setting", "reward", "ap50", "ap80", "synthetic_images", "objects", "seconds") if k in c} for c in h["candidates"]]
        out.append({"iteration": h["iteration"], "policy": pol, "candidates": cands, "elite": h["elite"], "updated": upd, "seconds": h["seconds"]})
    return out


def run_policy_row(
    data: Data,
    tests: Tests,
    baseline: DetectionTarget,
    budget: Mapping[str, Any],
    seed: int,
    run_dir: Path,
    log: Log,
    *,
    cached_only: bool = False,
    sizes: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The ``policy`` row for one seed (the conventions of
    :func:`~synthloop.experiments.detection_methods.run_row`): search the policy, fine-tune a copy of
    ``baseline`` with its final mean setting at the random paste row's schedule, AP on every test
    set of ``tests``, the baseline's confidence on every kept object. Cached as ``run_dir/policy.json``
    (keyed by the configuration); weights ``policy_model.pt``; plot ``policy.png``; the loop folder
    ``policy-<key>/`` holds the final scenes' params (``scenes.json``) and the search
    (``search/policy_search.json``, ``search/search_scenes/``), both resumable. ``sizes`` overrides
    :func:`search_sizes`."""
    from synthloop.loops.terse_detection import SceneTerse

    size = {**search_sizes(budget), **(sizes or {})}
    base = loop_config(budget, METHODS[BASE_ROW], seed)
    space = default_space(base.blend_modes, data.backgrounds.sources)
    key_doc = {
        "row": NAME, "base": base.to_dict(), "space": space.to_dict(), "search": size, "baseline": baseline_key(baseline),
        "sizes": data.sizes(), "real": data.loop_indices, "tests": sorted(tests.sets),
    }  # fmt: skip
    key = _key(key_doc)
    hit = _cached(run_dir / f"{NAME}.json", key)
    if hit is not None:
        log(f"seed {seed} {NAME}: cached")
        return hit
    if cached_only:
        log(f"seed {seed} {NAME}: not run yet (cached_only)")
        return None
    folder = run_dir / f"{NAME}-{key}"
    t0 = time.perf_counter()
    reward = FinetuneReward(
        base, space, baseline, data.loop_images, data.loop_targets, data.foregrounds, data.backgrounds, data.val,
        val_images=int(size["val_images"]), real_per_finetune=int(size["real_per_finetune"]),
        synthetic_per_finetune=int(size["synthetic_per_finetune"]), eval_batch_size=budget["eval_batch_size"],
    )  # fmt: skip
    start_s = time.perf_counter() - t0
    policy = CEMPolicy(space, CEMConfig(seed=seed, **{k: size[k] for k in CEM_KEYS}))
    result = search(policy, reward, out_dir=folder / "search", log=log)
    search_s = start_s + sum(h["seconds"] for h in result.history)  # the search's own time, resumed parts included
    setting = result.final["setting"]
    cfg = apply_setting(base, space, setting)
    target = copy_target(baseline)
    t1 = time.perf_counter()
    loop = SceneTerse(cfg, target, data.loop_images, data.loop_targets, data.foregrounds, space.backgrounds(setting, data.backgrounds))
    scenes = list(loop.run(folder, resume=True).scenes)
    loop_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    ap = tests.evaluate(target, budget["eval_batch_size"])
    eval_s = time.perf_counter() - t2
    conf = baseline_confidence(baseline, scenes, budget["eval_batch_size"])
    out: dict[str, Any] = {
        "ap": ap,
        "synthetic_images": len(scenes),
        "pasted_objects": int(conf.numel()),
        "hard_positive_fraction": round(hard_positive_fraction(conf, 0.5), 4) if conf.numel() else None,
        "histogram": histogram(conf),
        "policy_history": _compact(result.history),
        "final_policy": {k: result.final[k] for k in ("mean", "std", "mean_u", "std_u", "setting")},
        "config": cfg.to_dict(),
        "search": {
            **size,
            "reward": "(AP50 + AP80) / 2 on the val subset minus the baseline's",
            "start_ap_val_subset": {k: round(float(v), 4) for k, v in reward.start_ap.items()},
        },
        "timings": {"search_s": round(search_s, 1), "loop_s": round(loop_s, 1), "eval_s": round(eval_s, 1), "short_finetunes": result.evaluations},
    }
    if scenes:
        save_samples(run_dir / f"{NAME}_samples.pt", scenes, conf)
        torch.save({"confidence": conf}, run_dir / f"{NAME}_confidence.pt")
    save_checkpoint(run_dir / f"{NAME}_model.pt", {"model": target.model.state_dict()})
    plot_policy(result.history, run_dir / f"{NAME}.png")
    atomic_write_json(run_dir / f"{NAME}.json", {"key": key, "result": out})
    log(
        f"seed {seed} {NAME}: "
        + " | ".join(f"{t} AP50 {v['ap50']:.3f} AP80 {v['ap80']:.3f}" for t, v in ap.items())
        + f" | search {search_s:.0f} s ({result.evaluations} fine-tunes) + loop {loop_s:.0f} s"
    )
    return out


__all__ = ["BASE_ROW", "NAME", "QUICK_SEARCH", "SEARCH", "run_policy_row", "search_sizes"]
