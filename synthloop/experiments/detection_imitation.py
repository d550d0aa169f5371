"""Imitation training's rows of the multi-seed detection benchmark (issue 12; seed 001's table).

:func:`run_imitation_rows` runs, for one seed, from the cached baseline:

- ``imitation_cycle_<k>``: :class:`~synthloop.loops.imitation.ImitationLoop` on the 250 real
  training scenes, failures mined on the real val split (500 images), at most 3 cycles of up to
  ``hard_per_cycle`` (300) re-simulated scenes, each cycle's T phase the TERSE rows' (``t_epochs``
  over the real set, 1:1, synthetic share capped at 0.5), ``patience`` 2 (the seed reports that
  cycle 1 may dip below the baseline and later cycles recover), the model after each cycle;
- ``imitation``: the cycle with the best val AP (``selected_cycle``; never chosen on a test), with
  the loop's ``history``;
- ``imitation_sim``: the seed's "Sim" row, a fresh detector trained from scratch on synthetic data
  only: the re-simulated scenes the selected cycle trained on, for as many optimiser steps as the
  imitation loop took up to that cycle (:data:`SIM_STEPS` ``"loop"``; ``"baseline"`` gives it the
  baseline's steps, ~940 at the full budget: 15-30 min on one core, beyond this row's budget);
- ``imitation_no_imitation``: "Real + Sim (no imitation)": the baseline fine-tuned for the same
  cycles with the same per-cycle scene counts, schedule and cap, the scenes made by the TERSE scene
  loop's random sampler (the ``random_paste`` method's settings) instead of from failures.

Conventions of :func:`~synthloop.experiments.detection_methods.run_row`: each row cached as
``run_dir/<name>.json`` (``{"key", "result"}``, the key over the loop's config, the baseline's
weights, the data sizes and real subset), its weights as ``<name>_model.pt``; the loop's folder
``run_dir/imitation-<key>/`` resumes per cycle. AP via ``tests.evaluate`` on whatever test sets it has.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from synthloop.data.tensors import load_images
from synthloop.experiments.detection import CPL_BLENDS, METHODS, Data, Log, _key, baseline_key, copy_target, loop_config, new_detector
from synthloop.experiments.detection_methods import _cached
from synthloop.loops.checkpoint import save_checkpoint
from synthloop.loops.detection_training import train_detector
from synthloop.loops.imitation import ImitationConfig, ImitationLoop, ValSet, coco_scorer, load_cycle, train_cycle
from synthloop.models.detection import DetectionTarget, dataset_targets
from synthloop.utils.atomic import atomic_write_json
from synthloop.utils.seeding import derive_seed, make_generator

MAX_CYCLES = 3
PATIENCE = 2
SIM_STEPS = "loop"


def imitation_config(budget: Mapping[str, Any], seed: int) -> ImitationConfig:
    """The loop's config at ``budget``: the TERSE rows' T schedule and scenes per cycle, random paste's blends."""
    lc = loop_config(budget, {}, seed)
    return ImitationConfig(
        seed=seed, max_cycles=MAX_CYCLES, patience=PATIENCE, scenes_per_cycle=lc.hard_per_cycle, t_epochs=lc.t_epochs, t_batch_size=lc.t_batch_size,
        real_ratio=lc.real_ratio, lr_t=lc.lr_t, fg_size=lc.fg_size, fg_fill=lc.fg_fill, min_visibility=lc.min_visibility, blend_modes=list(CPL_BLENDS),
    )  # fmt: skip


def val_set(data: Data) -> ValSet:
    """``data.val`` as the loop's validation split (COCO AP by pycocotools)."""
    val = data.val
    attrs = [[dict(a.attributes) for a in e.annotations if not a.iscrowd] for e in val.images]
    return ValSet(load_images(val), dataset_targets(val, data.label_map), [e.id for e in val.images], coco_scorer(val, data.label_map), attrs)


def _finish(
    name: str, target: DetectionTarget, tests: Any, budget: Mapping[str, Any], run_dir: Path, key: str, row: dict[str, Any], loop_s: float
) -> dict[str, Any]:
    t0 = time.perf_counter()
    row["ap"] = tests.evaluate(target, budget["eval_batch_size"])
    row["timings"] = {"loop_s": round(loop_s, 1), "eval_s": round(time.perf_counter() - t0, 1)}
    if getattr(tests, "signature", None) is not None:
        row["tests"] = tests.signature
    save_checkpoint(run_dir / f"{name}_model.pt", {"model": target.model.state_dict()})
    atomic_write_json(run_dir / f"{name}.json", {"key": key, "result": row})
    return row


def _log_row(log: Log, seed: int, name: str, row: Mapping[str, Any]) -> None:
    parts = [f"{t} AP50 {v['ap50']:.3f} AP80 {v['ap80']:.3f}" for t, v in row["ap"].items()]
    log(
        f"seed {seed} {name}: {' | '.join(parts)} | synthetic {row.get('synthetic_images')} share {row.get('synthetic_share')} | {row['timings']['loop_s']:.0f} s"
    )


def run_imitation_rows(
    data: Data, tests: Any, baseline: DetectionTarget, budget: Mapping[str, Any], seed: int, run_dir: Path, log: Log, *, cached_only: bool = False
) -> dict[str, dict[str, Any]]:
    """The imitation rows for one seed (module docstring); ``{}`` under ``cached_only`` when they were not run yet."""
    run_dir = Path(run_dir)
    cfg = imitation_config(budget, seed)
    key = _key({"row": "imitation", "config": cfg.to_dict(), "baseline": baseline_key(baseline), "sizes": data.sizes(), "real": data.loop_indices})
    hit = _cached(run_dir / "imitation.json", key)
    if hit is not None:
        rows = {f"imitation_cycle_{c}": _cached(run_dir / f"imitation_cycle_{c}.json", key) for c in range(1, len(hit["history"]))}
        rows.update({n: _cached(run_dir / f"{n}.json", key) for n in ("imitation", "imitation_sim", "imitation_no_imitation")})
        if all(r is not None for r in rows.values()):
            log(f"seed {seed} imitation: cached")
            return {k: v for k, v in rows.items() if v is not None}
    if cached_only:
        log(f"seed {seed} imitation: not run yet (cached_only)")
        return {}
    run_dir.mkdir(parents=True, exist_ok=True)
    target = copy_target(baseline)
    loop = ImitationLoop(
        cfg, target, data.loop_images, data.loop_targets, val_set(data), data.foregrounds, data.backgrounds, eval_batch_size=budget["eval_batch_size"]
    )
    result = loop.run(run_dir / f"imitation-{key}", resume=True)
    history = result.history
    rows: dict[str, dict[str, Any]] = {}
    for c in range(1, len(history)):
        name = f"imitation_cycle_{c}"
        row = _cached(run_dir / f"{name}.json", key)
        if row is None:
            h = history[c]
            row = {"val": h["val"], "synthetic_share": h["synthetic_share"], "synthetic_images": h["synthetic_images"], "failures": h["failures"], "cycle": c}
            row = _finish(
                name,
                load_cycle(copy_target(baseline), run_dir / f"imitation-{key}", c),
                tests,
                budget,
                run_dir,
                key,
                row,
                sum(x["seconds"] for x in history[1 : c + 1]),
            )
            _log_row(log, seed, name, row)
        rows[name] = row
    best = result.selected_cycle
    assert best is not None, "the loop ran no cycle"
    sel = load_cycle(copy_target(baseline), run_dir / f"imitation-{key}", best)
    save_checkpoint(run_dir / "imitation_model.pt", {"model": sel.model.state_dict()})
    rows["imitation"] = {**rows[f"imitation_cycle_{best}"], "selected_cycle": best, "history": history, "stop_reason": result.stop_reason}
    atomic_write_json(run_dir / "imitation.json", {"key": key, "result": rows["imitation"]})
    scenes = [s for cyc in result.scenes[:best] for s in cyc]
    rows["imitation_sim"] = _cached(run_dir / "imitation_sim.json", key) or _sim_row(
        data, tests, budget, seed, run_dir, key, cfg, scenes, history[1 : best + 1], log
    )
    rows["imitation_no_imitation"] = _cached(run_dir / "imitation_no_imitation.json", key) or _random_row(
        data, tests, baseline, budget, seed, run_dir, key, cfg, [h["scenes_added"] for h in history[1:]], log
    )
    return rows


def _sim_row(data: Data, tests: Any, budget: Mapping[str, Any], seed: int, run_dir: Path, key: str, cfg: ImitationConfig, scenes: list[Any], history: list[dict[str, Any]], log: Log) -> dict[str, Any]:  # fmt: skip
    """A fresh detector trained from scratch on the selected cycle's synthetic scenes only."""
    t0 = time.perf_counter()
    target = new_detector(data.label_map, seed)
    b = budget["baseline"]
    steps = sum(h["steps"] for h in history) if SIM_STEPS == "loop" else int(b["epochs"]) * math.ceil(len(data.train_images) / int(b["batch_size"]))
    epochs = max(1, math.ceil(steps * cfg.t_batch_size / max(len(scenes), 1)))
    train_detector(
        target, torch.stack([s.image for s in scenes]), [s.target for s in scenes], epochs=epochs, batch_size=cfg.t_batch_size, lr=float(b["lr"]),
        seed=derive_seed(seed, "imitation-sim"),
    )  # fmt: skip
    row = {"synthetic_share": 1.0, "synthetic_images": len(scenes), "epochs": epochs, "target_steps": steps, "sim_steps": SIM_STEPS}
    row = _finish("imitation_sim", target, tests, budget, run_dir, key, row, time.perf_counter() - t0)
    _log_row(log, seed, "imitation_sim", row)
    return row


def _random_row(
    data: Data,
    tests: Any,
    baseline: DetectionTarget,
    budget: Mapping[str, Any],
    seed: int,
    run_dir: Path,
    key: str,
    cfg: ImitationConfig,
    counts: list[int],
    log: Log,
) -> dict[str, Any]:
    """The baseline fine-tuned like the imitation cycles, on random-paste scenes (same counts per cycle)."""
    from synthloop.loops.terse_detection import SceneTerse

    t0 = time.perf_counter()
    target = copy_target(baseline)
    rcfg = loop_config(budget, {**METHODS["random_paste"], "max_candidates_per_cycle": max(max(counts), 1) * 4}, seed)
    sampler = SceneTerse(rcfg, target, data.loop_images, data.loop_targets, data.foregrounds, data.backgrounds)
    scenes: list[Any] = []
    info: dict[str, Any] = {}
    for c, n in enumerate(counts, start=1):
        scenes += sampler.generate(n, keep="all", generator=make_generator(seed, "imitation-random", c))
        info = train_cycle(target, data.loop_images, data.loop_targets, scenes, cfg, c)
    row = {"synthetic_share": info.get("synthetic_share", 0.0), "synthetic_images": len(scenes), "cycles": len(counts), "config": rcfg.to_dict()}
    row = _finish("imitation_no_imitation", target, tests, budget, run_dir, key, row, time.perf_counter() - t0)
    _log_row(log, seed, "imitation_no_imitation", row)
    return row


__all__ = ["MAX_CYCLES", "PATIENCE", "SIM_STEPS", "imitation_config", "run_imitation_rows", "val_set"]
