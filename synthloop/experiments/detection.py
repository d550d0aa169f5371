"""TERSE for detection on the digits-in-scenes data: the protocol of TERSE's Table 4 (AP at several
IoU thresholds), Fig. 8 (hardness of the synthetic data under the baseline detector) and Table 2
(ablations), as library code. ``benchmarks/detection.py`` is the command line around
:func:`run_benchmark`; its docstring and ``benchmarks/results/detection*.json`` record the
measured budget and results.

Every method starts from the same baseline (:func:`train_baseline`, cached in the run folder) and
runs the same A.2 loop (:class:`~synthloop.loops.terse_detection.SceneTerse`) with the same
cycles, synthetic images per cycle and T epochs at 1:1 real:synthetic; methods differ only in
how the synthetic images are made (:data:`METHODS`). Results are cached per configuration
(:func:`run_method`), so a rerun only re-evaluates.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from synthloop.compose.digit_scenes import digit_bank, load_digit_scenes
from synthloop.data.backgrounds import BackgroundBank
from synthloop.data.tensors import load_images
from synthloop.loops.checkpoint import load_checkpoint, save_checkpoint
from synthloop.loops.detection_training import evaluate_detector, train_detector
from synthloop.metrics.detection import hard_positive_fraction, object_hardness
from synthloop.models.detection import DetectionTarget, LabelMap, SmallDetector, count_parameters, dataset_targets
from synthloop.utils.atomic import atomic_write_json
from synthloop.utils.seeding import make_generator

NAME = "detection"
METHOD_NAMES = ("random_paste", "random_paste_artefacts", "terse_no_d", "terse_d")
AP_KEYS = ("ap50", "ap60", "ap70", "ap80", "ap")
HARD_THRESHOLD = 0.5
HIST_BINS = 20
SAMPLES_PER_METHOD = 6
CPL_BLENDS = ["none", "alpha", "gaussian", "box", "motion"]
"""Cut-Paste-Learn's blend modes (poisson left out: it is not a torch op and the loop blends in torch)."""

# -------------------------------------------------------------------------------------------------
# budgets

FULL: dict[str, Any] = {
    "sizes": None,  # the default 2,000 / 500 / 1,000
    "bank_digits": 5000,
    "baseline": {"epochs": 12, "batch_size": 8, "lr": 3e-3, "select_from_epoch": 6},
    # the loop's real set: a fixed random subset of the training images (T's real half and D's real images)
    "loop_real": 1000,
    # SceneTerseConfig values shared by every method (the loop's own defaults for the rest)
    "loop": {
        "cycles": 2,
        "s_steps": 40,
        "batch_size": 8,
        "lr_s": 1e-2,
        "hard_per_cycle": 300,
        "max_candidates_per_cycle": 900,
        "t_epochs": 1,
        "t_batch_size": 8,
        "d_steps": 20,
    },  # fmt: skip
    # the ablations (Table 2 analogue) run at a smaller budget, with their own terse_d / terse_no_d references
    "ablation_loop": {"cycles": 1, "s_steps": 20, "hard_per_cycle": 150, "max_candidates_per_cycle": 450, "d_steps": 10},
    "ablation_loop_real": 500,
    "eval_batch_size": 32,
}
QUICK: dict[str, Any] = {
    "sizes": {"train": 32, "val": 8, "test": 16},
    "bank_digits": 200,
    "baseline": {"epochs": 1, "batch_size": 8, "lr": 3e-3, "select_from_epoch": 1},
    "loop_real": 12,
    "loop": {
        "cycles": 1,
        "s_steps": 1,
        "batch_size": 2,
        "hard_per_cycle": 4,
        "max_candidates_per_cycle": 8,
        "t_epochs": 1,
        "t_batch_size": 4,
        "d_steps": 1,
        "s_channels": [8, 8, 8, 8],
        "s_branch_channels": 8,
        "s_input_size": 112,
    },  # fmt: skip
    "ablation_loop": {},
    "ablation_loop_real": 12,
    "eval_batch_size": 16,
}

# lr_s has no effect without S; the random methods keep the value they were measured with (1e-3)
METHODS: dict[str, dict[str, Any]] = {
    "random_paste": {"synthesizer": "random", "keep": "all", "blend_modes": CPL_BLENDS, "artefacts": False, "lr_s": 1e-3},
    "random_paste_artefacts": {"synthesizer": "random", "keep": "all", "blend_modes": CPL_BLENDS, "artefacts": True, "lr_s": 1e-3},
    "terse_no_d": {"synthesizer": "terse", "keep": "hard", "discriminator": False},
    "terse_d": {"synthesizer": "terse", "keep": "hard", "discriminator": True},
}
ABLATIONS: dict[str, dict[str, Any]] = {
    "cleanup_off": {"cleanup": False},
    "s_dropout_off": {"s_dropout": 0.0},
    "artefacts_off": {"artefacts": False},
    "ratio_1_3": {"real_ratio": "1:3"},
    "discriminator_off": {"discriminator": False},
    "single_object": {"num_objects": 1},
    "photometric_off": {"photometric": False},
}
"""Each is ``terse_d`` with these overrides (one component removed or changed)."""

PAPER = {
    "source": "TERSE (Tripathi et al., CVPR 2019): SSD-300 on VOC 2007 test, person class",
    "table4_ap_pct": {
        "iou": [0.5, 0.6, 0.7, 0.8],
        "baseline": [78.93, 69.61, 52.97, 29.54],
        "cut_paste_learn": [76.65, 66.88, 52.12, 28.82],
        "context_da": [76.81, 66.91, 50.21, 28.14],
        "terse_no_d": [79.61, 70.39, 53.71, 31.96],
        "terse_d": [79.53, 70.67, 54.50, 32.22],
    },
    "table2_ablation_pct": {
        "note": "cumulative: column k adds one component to column k-1; baseline AP0.5 78.93, AP0.8 29.52",
        "columns": [
            {"components": [], "ap50": 79.02, "ap80": 29.64},
            {"components": ["cleanup"], "ap50": 79.13, "ap80": 30.72},
            {"components": ["cleanup", "dropout"], "ap50": 79.02, "ap80": 30.80},
            {"components": ["cleanup", "dropout", "artefacts"], "ap50": 79.34, "ap80": 31.25},
            {"components": ["cleanup", "dropout", "artefacts", "ratio_1_1"], "ap50": 79.61, "ap80": 31.96},
            {"components": ["cleanup", "dropout", "artefacts", "ratio_1_1", "discriminator"], "ap50": 79.53, "ap80": 32.22},
        ],
    },
    "fig8": "TERSE yields more than twice the fraction of hard positives (SSD person confidence < 0.5) of Cut-Paste-Learn and Context-DA; no exact figures are printed",
    "targets_from_issue": {"hard_positive_ratio_vs_random_paste": 3.0, "ap80_gain_over_baseline_points": 3.0, "ap80_above_random_paste": True},
}

Log = Callable[[str], None]


# -------------------------------------------------------------------------------------------------
# helpers


def _key(obj: Any) -> str:
    """A short content hash of a JSON-able object (cache keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _rounded(d: Mapping[str, float], n: int = 4) -> dict[str, float]:
    return {k: round(float(v), n) for k, v in d.items()}


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Data:
    """The real splits as datasets and tensors, the label map, the foreground and background banks."""

    def __init__(self, budget: Mapping[str, Any], seed: int, cache_dir: str | Path | None = None):
        # budget["data_seed"] fixes the data (splits, real-train subset, bank) while ``seed`` varies
        # the training (the multi-seed benchmark); without it the data follow ``seed``
        seed = int(budget.get("data_seed", seed))
        self.data_seed = seed
        splits = load_digit_scenes(seed, sizes=budget["sizes"], cache_dir=cache_dir)
        self.train, self.val, self.test = splits["train"], splits["val"], splits["test"]
        self.label_map = LabelMap.from_categories(self.train.categories)
        self.train_images = load_images(self.train)
        self.train_targets = dataset_targets(self.train, self.label_map)
        self.train_total = len(self.train.images)
        self.train_indices = list(range(self.train_total))
        if budget.get("real_train") is not None:  # low-data variant: a fixed seeded subset is all the real training data there is
            n_train = min(int(budget["real_train"]), self.train_total)
            self.train_indices = sorted(torch.randperm(self.train_total, generator=make_generator(seed, "detection-bench/real-train"))[:n_train].tolist())
            self.train_images = self.train_images[self.train_indices]
            self.train_targets = [self.train_targets[i] for i in self.train_indices]
        n_real = min(int(budget["loop_real"]), len(self.train_images))
        order = torch.randperm(len(self.train_images), generator=make_generator(seed, "detection-bench/loop-real"))[:n_real]
        self.loop_indices = sorted(order.tolist())
        self.loop_images = self.train_images[self.loop_indices]
        self.loop_targets = [self.train_targets[i] for i in self.loop_indices]
        n_abl = min(int(budget.get("ablation_loop_real", n_real)), n_real)
        self.ablation_indices = sorted(order[:n_abl].tolist())  # a subset of the loop's real images
        n_digits = int(budget["bank_digits"])
        pick = torch.randperm(50_000, generator=make_generator(seed, "detection-bench/bank"))[:n_digits]
        self.bank_indices = sorted(pick.tolist())
        self.foregrounds = digit_bank(indices=self.bank_indices, generator=make_generator(seed, "detection-bench/tints"), cache_dir=cache_dir)
        self.backgrounds = BackgroundBank(["photos"])

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_images), "val": len(self.val.images), "test": len(self.test.images)}


def new_detector(label_map: LabelMap, seed: int) -> DetectionTarget:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SmallDetector(label_map.num_classes, 128)
    return DetectionTarget(model, label_map)


def copy_target(target: DetectionTarget) -> DetectionTarget:
    return DetectionTarget(copy.deepcopy(target.model), target.label_map)


# -------------------------------------------------------------------------------------------------
# baseline


def train_baseline(data: Data, budget: Mapping[str, Any], seed: int, run_dir: Path, log: Log) -> tuple[DetectionTarget, dict[str, Any]]:
    """Train (or load from ``run_dir/baseline.pt``) the baseline; pick the epoch with the best val AP."""
    b = budget["baseline"]
    key_doc = {"baseline": b, "sizes": data.sizes(), "seed": seed, "model": "SmallDetector-default"}
    if "data_seed" in budget:
        key_doc["data_seed"] = int(budget["data_seed"])
    key = _key(key_doc)
    path = run_dir / "baseline.pt"
    target = new_detector(data.label_map, seed)
    if path.is_file():
        state = load_checkpoint(path)
        if state.get("key") == key:
            target.model.load_state_dict(state["model"])
            info = json.loads(state["info"])
            info["cached"] = True
            log(f"baseline: loaded from {path} (epoch {info['best_epoch']}, val AP50 {info['val']['ap50']:.3f})")
            return target, info
        log(f"baseline: {path} was made with other settings; training again")

    steps_per_epoch = -(-len(data.train_images) // int(b["batch_size"]))
    best: dict[str, Any] = {"score": -1.0}
    val_curve: list[dict[str, float]] = []
    eval_s = 0.0

    def progress(step: int, total: int, loss: float) -> None:
        nonlocal eval_s
        if step % steps_per_epoch and step != total:
            return
        epoch = -(-step // steps_per_epoch)
        if epoch < int(b["select_from_epoch"]) and step != total:
            log(f"baseline: epoch {epoch} loss {loss:.3f}")
            return
        t0 = time.perf_counter()
        ap = evaluate_detector(target, data.val, batch_size=budget["eval_batch_size"])
        eval_s += time.perf_counter() - t0
        val_curve.append({"epoch": epoch, **_rounded(ap)})
        score = ap["ap50"] + ap["ap"]  # selection: AP50 + AP[.5:.95] on val
        log(f"baseline: epoch {epoch} loss {loss:.3f} val AP50 {ap['ap50']:.3f} AP {ap['ap']:.3f}")
        if score > best["score"]:
            best.update(score=score, epoch=epoch, val=ap, state=_state(target.model))

    t0 = time.perf_counter()
    train_log = train_detector(
        target, data.train_images, data.train_targets, epochs=int(b["epochs"]), batch_size=int(b["batch_size"]), lr=float(b["lr"]), seed=seed, progress=progress
    )
    train_s = time.perf_counter() - t0 - eval_s
    target.model.load_state_dict(best["state"])
    info = {
        "best_epoch": best["epoch"],
        "val": _rounded(best["val"]),
        "val_curve": val_curve,
        "epoch_losses": [round(v, 4) for v in train_log.epoch_losses],
        "train_s": round(train_s, 1),
        "val_eval_s": round(eval_s, 1),
        "images_seen": train_log.images_seen,
        "parameters": count_parameters(target.model),
        "cached": False,
    }
    save_checkpoint(path, {"key": key, "model": target.model.state_dict(), "info": json.dumps(info)})
    log(f"baseline: best val epoch {info['best_epoch']}, trained in {train_s:.0f} s (+{eval_s:.0f} s val) -> {path}")
    return target, info


# -------------------------------------------------------------------------------------------------
# one method through the A.2 loop


PLAUSIBLE_RANGES: dict[str, Any] = {
    "angle": [-10.0, 10.0],  # the real generator's rotation (uniform +-10 degrees)
    "shear": [-0.05, 0.05],  # the real set has no shear; a sliver keeps the range non-degenerate for S's squashing
    "tx": [-0.3, 0.3],  # centre within 20-80 % of the canvas: a 50 px digit stays inside the 128 px image, as real digits do
    "ty": [-0.3, 0.3],
    "sx": [0.5, 1.0],  # fg_size 64 at fg_fill 0.8: scale 1 = 51 px, so 26-51 px (real heights 20-50 px); aspect distortion at most 2:1
    "sy": [0.5, 1.0],
}
"""``--ranges plausible``: placement ranges for S and the random synthesizer narrowed to the real
set's documented generator (:mod:`synthloop.compose.digit_scenes`: heights 20-50 px, same scale on
both axes, rotation +-10 degrees, no shear, boxes inside the image), against the degenerate
placements S found with the loop's default ranges (squashed aspect, pushed to the border,
extreme shear). The loop's defaults: angle +-30, shear +-0.2, tx/ty +-0.4, sx/sy 0.45-1.1."""


PLAUSIBLE_RANGES_RATIONALE = (
    "from the real generator (digit_scenes): heights 20-50 px at one scale on both axes -> sx/sy 0.5-1.0 (26-51 px, at most 2:1 aspect distortion); "
    "rotation +-10 -> angle +-10; no shear -> shear +-0.05; boxes inside the image -> tx/ty +-0.3 of the canvas (a 50 px digit stays inside). "
    "Loop defaults: angle +-30, shear +-0.2, tx/ty +-0.4, sx/sy 0.45-1.1."
)


def low_data_budget(budget: Mapping[str, Any], n: int) -> dict[str, Any]:
    """The ``--real-train N`` budget: only N real training images, the loop's real set all of them.

    The baseline keeps its batch size and peak lr; its epochs grow as 2000/N so that it gets about
    as many optimiser steps as the main baseline, capped at 40 epochs (a wall-time limit on the
    shared box; at N=250 that is 1,250 steps against the main run's 3,000), the epoch with the
    best val AP picked from the second half of training (val is the full 500 images, as in the
    main run)."""
    base = dict(budget["baseline"])
    total = 2000 if budget["sizes"] is None else int(budget["sizes"]["train"])
    scale = max(1.0, total / max(int(n), 1))
    epochs = min(int(round(base["epochs"] * scale)), 40) if budget["sizes"] is None else base["epochs"]
    base.update(epochs=epochs, select_from_epoch=max(1, epochs // 2))
    return {"real_train": int(n), "loop_real": int(n), "ablation_loop_real": min(int(budget["ablation_loop_real"]), int(n)), "baseline": base}


def loop_config(budget: Mapping[str, Any], overrides: Mapping[str, Any], seed: int, *, ablation: bool = False):
    from synthloop.loops.terse_detection_config import SceneTerseConfig

    values = {"seed": seed, **budget["loop"], **(budget["ablation_loop"] if ablation else {}), **overrides}
    return SceneTerseConfig(**values)


def baseline_key(baseline: DetectionTarget) -> str:
    return _key({k: round(float(v.double().sum()), 6) for k, v in baseline.model.state_dict().items()})


def real_only_control(data: Data, baseline: DetectionTarget, budget: Mapping[str, Any], seed: int, run_dir: Path, log: Log) -> dict[str, Any]:
    """The baseline fine-tuned on the loop's real images alone with the methods' T schedule (same
    cycles, same optimiser steps and images per cycle, batches all real): separates the effect of
    the synthetic images from that of training longer."""
    from synthloop.utils.seeding import derive_seed

    cfg = loop_config(budget, {}, seed)
    r, s_part = (int(v) for v in cfg.real_ratio.split(":"))
    epochs = cfg.t_epochs * (r + s_part) // r  # as many images (and steps) per cycle as a 1:1 T phase
    key = _key({"cycles": cfg.cycles, "epochs": epochs, "lr": cfg.lr_t, "bs": cfg.t_batch_size, "baseline": baseline_key(baseline), "real": data.loop_indices})
    cache = run_dir / "real_only_finetune.json"
    if cache.is_file() and json.loads(cache.read_text()).get("key") == key:
        log("real_only_finetune: cached")
        return json.loads(cache.read_text())["result"] | {"cached": True}
    target = copy_target(baseline)
    t0 = time.perf_counter()
    for cycle in range(1, cfg.cycles + 1):
        train_detector(
            target,
            data.loop_images,
            data.loop_targets,
            epochs=epochs,
            batch_size=cfg.t_batch_size,
            lr=cfg.lr_t,
            augment=cfg.t_augment,
            seed=derive_seed(cfg.seed, "T", cycle),
        )
    train_s = time.perf_counter() - t0
    ap = evaluate_detector(target, data.test, batch_size=budget["eval_batch_size"])
    out = {**_rounded(ap), "cycles": cfg.cycles, "epochs_per_cycle": epochs, "timings": {"train_s": round(train_s, 1)}, "cached": False}
    atomic_write_json(cache, {"key": key, "result": out})
    log(f"real_only_finetune: AP50 {ap['ap50']:.3f} AP80 {ap['ap80']:.3f} AP {ap['ap']:.3f} | {train_s:.0f} s")
    return out


def baseline_confidence(baseline: DetectionTarget, scenes: Sequence[Any], batch_size: int) -> torch.Tensor:
    """The baseline's confidence on every pasted object of ``scenes`` (image order, then object order)."""
    if not scenes:
        return torch.empty(0)
    images = torch.stack([s.image for s in scenes])
    targets = [{"boxes": s.target["boxes"], "labels": s.target["labels"]} for s in scenes]
    return 1.0 - object_hardness(baseline, images, targets, batch_size=batch_size)


def histogram(conf: torch.Tensor, bins: int = HIST_BINS) -> dict[str, Any]:
    counts = torch.histc(conf.double(), bins=bins, min=0.0, max=1.0) if conf.numel() else torch.zeros(bins, dtype=torch.float64)
    total = max(int(conf.numel()), 1)
    return {
        "bin_edges": [round(i / bins, 4) for i in range(bins + 1)],
        "counts": [int(c) for c in counts.tolist()],
        "fractions": [round(float(c) / total, 5) for c in counts.tolist()],
    }


def run_method(
    name: str,
    overrides: Mapping[str, Any],
    data: Data,
    baseline: DetectionTarget,
    budget: Mapping[str, Any],
    seed: int,
    run_dir: Path,
    log: Log,
    *,
    ablation: bool = False,
) -> dict[str, Any]:
    """Fine-tune a copy of the baseline with the A.2 loop under ``overrides``; AP on test and hardness.

    The result is cached as ``run_dir/<name>.json`` (keyed by the config and the baseline), so an
    interrupted benchmark resumes at the first method it had not finished.
    """
    from synthloop.loops.terse_detection import SceneTerse

    cfg = loop_config(budget, overrides, seed, ablation=ablation)
    cfg_doc = cfg.to_dict()
    real_idx = data.ablation_indices if ablation else data.loop_indices
    key = _key({"config": cfg_doc, "baseline": baseline_key(baseline), "sizes": data.sizes(), "bank": data.bank_indices, "real": real_idx})
    cache = run_dir / f"{name}.json"
    if cache.is_file():
        doc = json.loads(cache.read_text())
        if doc.get("key") == key:
            log(f"{name}: cached result from {cache}")
            return doc["result"] | {"cached": True}

    target = copy_target(baseline)
    t0 = time.perf_counter()
    real_images, real_targets = data.train_images[real_idx], [data.train_targets[i] for i in real_idx]
    loop = SceneTerse(cfg, target, real_images, real_targets, data.foregrounds, data.backgrounds)
    # a folder per configuration: an interrupted run of the same configuration resumes from its last cycle
    result = loop.run(run_dir / f"{name}-{key}", resume=True)
    loop_s = time.perf_counter() - t0
    scenes = list(result.scenes)
    for i, h in enumerate(result.history):
        log(f"{name}: cycle {i + 1} " + " ".join(f"{k} {v:.4g}" for k, v in h.items() if isinstance(v, (int, float))))

    t1 = time.perf_counter()
    ap = evaluate_detector(target, data.test, batch_size=budget["eval_batch_size"])
    eval_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    conf = baseline_confidence(baseline, scenes, budget["eval_batch_size"])
    hard_s = time.perf_counter() - t2
    gen_conf = torch.cat([s.confidence.float().reshape(-1) for s in scenes]) if scenes else torch.empty(0)
    out: dict[str, Any] = {
        **_rounded(ap),
        "hard_positive_fraction": round(hard_positive_fraction(conf, HARD_THRESHOLD), 4) if conf.numel() else None,
        "mean_baseline_confidence": round(float(conf.mean()), 4) if conf.numel() else None,
        "hard_positive_fraction_at_generation": round(hard_positive_fraction(gen_conf, HARD_THRESHOLD), 4) if gen_conf.numel() else None,
        "synthetic_images": len(scenes),
        "loop_real_images": len(real_idx),
        "pasted_objects": int(conf.numel()),
        "objects_per_image": round(conf.numel() / max(len(scenes), 1), 3),
        "histogram": histogram(conf),
        "history": [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in h.items()} for h in result.history],
        "config": cfg_doc,
        "timings": {"loop_s": round(loop_s, 1), "test_eval_s": round(eval_s, 1), "hardness_s": round(hard_s, 1)},
        "cached": False,
    }
    save_samples(run_dir / f"{name}_samples.pt", scenes, conf)
    atomic_write_json(cache, {"key": key, "result": out})
    log(
        f"{name}: AP50 {ap['ap50']:.3f} AP80 {ap['ap80']:.3f} AP {ap['ap']:.3f} | hard positives {out['hard_positive_fraction']} "
        f"of {out['pasted_objects']} objects in {len(scenes)} images | loop {loop_s:.0f} s"
    )
    return out


def save_samples(path: Path, scenes: Sequence[Any], conf: torch.Tensor, n: int = SAMPLES_PER_METHOD) -> None:
    """The first ``n`` kept composites with their boxes and the baseline's confidence per object."""
    counts = [int(s.target["boxes"].shape[0]) for s in scenes]
    per_image = list(conf.split(counts)) if scenes else []
    doc = {
        "images": [s.image.clamp(0, 1).mul(255).round().to(torch.uint8) for s in scenes[:n]],
        "boxes": [s.target["boxes"].float() for s in scenes[:n]],
        "confidence": [c.float() for c in per_image[:n]],
    }
    save_checkpoint(path, doc)


def protocol(budget: Mapping[str, Any], data: Data, seed: int, threads: int, ablation_runs: bool) -> dict[str, Any]:
    from synthloop.loops.terse_detection_config import SceneTerseConfig

    defaults = SceneTerseConfig(**budget["loop"]).to_dict()
    return {
        "seed": seed,
        "torch_threads": threads,
        "data": {
            "real": "load_digit_scenes(seed): 128x128 photo crops with 1-5 tinted MNIST digits, fixed generator (gaussian blend sigma 0.5, no artefacts)",
            "sizes": data.sizes(),
            "foreground_bank": f"digit_bank: {len(data.bank_indices)} MNIST training digits drawn at random (seeded), random RGB tint per digit",
            "backgrounds": "BackgroundBank(['photos']): the 14 built-in photographs, random crops",
        },
        "detector": "SmallDetector (torchvision FCOS, compact 4-stage backbone, 2-level FPN), 128x128, from scratch",
        "baseline": {
            **budget["baseline"],
            "optimizer": "AdamW, weight decay 1e-4, one-cycle lr",
            "selection": "epoch with the best val AP50 + AP among the evaluated ones",
        },
        "loop_real_images": f"{len(data.loop_indices)} of the {len(data.train_images)} training images (fixed seeded subset): T's real half and D's real images in the loop",
        "real_train": (
            None
            if budget.get("real_train") is None
            else f"low-data variant: baseline and every loop see only {len(data.train_images)} of the {data.train_total} real training images (fixed seeded subset, indices under protocol.real_train_indices); val/test unchanged"
        ),
        "real_train_indices": data.train_indices if budget.get("real_train") is not None else None,
        "loop_shared": budget["loop"],
        "loop_resolved_defaults": defaults,
        "methods": METHODS,
        "ablations": ABLATIONS if ablation_runs else {},
        "ablation_loop_overrides": budget["ablation_loop"],
        "ablation_loop_real_images": f"{len(data.ablation_indices)} of the loop's real images",
        "equal_budget": "every method: same cycles, same synthetic images per cycle (hard_per_cycle), same T epochs per cycle at the same real:synthetic ratio, starting from the same baseline weights",
        "final_model": "the fine-tuned detector after the last cycle (no model selection on val for the methods)",
        "hardness": "per pasted object: the baseline's highest score among detections of the object's class with IoU >= 0.5 (0 when none); hard positive: < 0.5",
        "metrics": "pycocotools COCOeval bbox on the test split: AP at IoU 0.5/0.6/0.7/0.8 and AP[.5:.95], area all, 100 detections",
    }


DEVIATIONS = [
    "Data: 128x128 digits-in-scenes (10 digit classes, 2,000 real training images) instead of Pascal VOC person detection; backgrounds are the 14 built-in photos instead of COCO images; foregrounds are MNIST digits (no segmentation clean-up of noisy annotations is needed, so the 'clean-up' ablation only switches the A.2 mask clean-up of the warped alpha).",
    "Target: SmallDetector (FCOS, 830k parameters, trained from scratch in minutes on a CPU) instead of SSD-300 with a VGG-16 backbone; the synthesizer is the small SceneSynthesizer, not the VGG-16-backbone network of A.2.",
    "Budget: 2 cycles of 40 S steps (batch 8; paper: 5 cycles of 1,000 batches of 16), 300 kept composites per cycle (600 in all), one T epoch per cycle over a fixed 1,000-image subset of the real training set at 1:1 (paper: 3 epochs), 20 D steps per cycle, on a shared 2-core CPU (see protocol.loop_shared). S's learning rate is 1e-2 (the loop's default; paper 1e-4) because S gets 80 steps instead of 5,000. The paper does not state its fine-tuning length.",
    "Ablations run at a smaller budget than the main methods (1 cycle, 20 S steps, 150 kept composites, 500 real images; protocol.ablation_loop_overrides) with their own terse_d ('full_terse_d') and D-off references, so ablation columns compare with each other, not with the methods table.",
    "Cut-Paste-Learn / Context-DA: not their software; random pasting is the same loop with S replaced by uniform placement over the same ranges and CPL's blends (none/alpha/gaussian/box/motion; poisson left out because the loop blends with torch ops). Context-DA is not reproduced.",
    "Hardness: per pasted object (several digits per composite) as the baseline's confidence of the right class at IoU >= 0.5, instead of the composite's p(person); one seed, not an average over runs.",
    "Table 2: the paper adds components cumulatively (columns 1-6); here each ablation removes (or changes) one component from the full terse_d, plus two settings the paper lacks (single object per composite, photometric head off). The ratio ablation uses 1:3 real:synthetic (train_detector needs both parts of a batch).",
    "Several foregrounds per composite and learned brightness/contrast are on in terse_d (the paper's future work); single_object is the paper's setting.",
    "T's fine-tuning uses train_detector (AdamW, one-cycle, peak lr 1e-3, the loop's default) rather than the paper's SGD at 1e-5; a sensitivity run at peak 1e-4 is in detection_lr_t_0.0001.json. A real-only fine-tune with the same schedule (controls.real_only_finetune) separates the effect of the synthetic images from that of training longer.",
    "Methods are not model-selected on val: the detector after the last cycle is evaluated (the baseline is the best of its evaluated epochs on val).",
]


# -------------------------------------------------------------------------------------------------
# the whole protocol


def make_budget(quick: bool, *, lr_t: float | None = None, real_train: int | None = None, ranges: str = "default") -> tuple[dict[str, Any], str]:
    """The budget of a run and its result name (``detection[_quick][_lr_t_X][_real_train_N][_ranges_plausible]``).

    ``lr_t``: T's fine-tuning peak lr for every method (a sensitivity run); ``real_train``: the
    low-data variant (:func:`low_data_budget`); ``ranges="plausible"``: every method under
    :data:`PLAUSIBLE_RANGES`.
    """
    budget = copy.deepcopy(QUICK if quick else FULL)
    name = f"{NAME}_quick" if quick else NAME
    if lr_t is not None:  # a sensitivity run: its own result files, same run folder (its runs have their own keys)
        budget["loop"]["lr_t"] = lr_t
        name += f"_lr_t_{lr_t:g}"
    if real_train is not None:  # the low-data variant: its own run folder (its baseline differs) and result files
        budget.update(low_data_budget(budget, real_train))
        name += f"_real_train_{real_train}"
    if ranges == "plausible":  # every method under the narrowed ranges (the same baseline: copy baseline.pt into the run folder to reuse it)
        budget["loop"]["ranges"] = copy.deepcopy(PLAUSIBLE_RANGES)
        name += "_ranges_plausible"
    return budget, name


@dataclass
class BenchmarkRun:
    """What :func:`run_benchmark` measured (AP in [0, 1]; seconds as measured when each part ran)."""

    data: Data
    data_s: float
    baseline_ap: dict[str, float]
    baseline_info: dict[str, Any]
    baseline_eval_s: float
    methods: dict[str, dict[str, Any]]
    controls: dict[str, dict[str, Any]]
    ablations: dict[str, dict[str, Any]]
    same_schedule_used: bool = False


def run_benchmark(
    budget: Mapping[str, Any],
    seed: int,
    run_dir: Path,
    log: Log,
    *,
    cache_dir: str | Path | None = None,
    only: Sequence[str] | None = None,
    ablations: bool = True,
    baseline_only: bool = False,
) -> BenchmarkRun:
    """Baseline, every method of :data:`METHODS`, the real-only control and the ablations (each
    cached in ``run_dir``); ``only`` runs just these names (others come from the cache if there)."""
    t0 = time.perf_counter()
    data = Data(budget, seed, cache_dir)
    data_s = time.perf_counter() - t0
    log(f"data: {data.sizes()} loaded in {data_s:.1f} s")

    baseline, base_info = train_baseline(data, budget, seed, run_dir, log)
    t0 = time.perf_counter()
    base_ap = evaluate_detector(baseline, data.test, batch_size=budget["eval_batch_size"])
    base_eval_s = time.perf_counter() - t0
    log(f"baseline: test AP50 {base_ap['ap50']:.3f} AP80 {base_ap['ap80']:.3f} AP {base_ap['ap']:.3f}")
    run = BenchmarkRun(data, data_s, base_ap, base_info, base_eval_s, {"baseline": {**_rounded(base_ap), "training": base_info}}, {}, {})
    if baseline_only:
        return run

    wanted = set(only) if only is not None else None

    def selected(name: str, cache_name: str) -> bool:
        return wanted is None or name in wanted or (run_dir / f"{cache_name}.json").is_file()

    for mname, overrides in METHODS.items():
        if selected(mname, mname):
            run.methods[mname] = run_method(mname, overrides, data, baseline, budget, seed, run_dir, log)
    if selected("real_only_finetune", "real_only_finetune"):
        run.controls["real_only_finetune"] = real_only_control(data, baseline, budget, seed, run_dir, log)
    if ablations:
        _run_ablations(run, selected, baseline, budget, seed, run_dir, log)
    return run


def _run_ablations(
    run: BenchmarkRun, selected: Callable[[str, str], bool], baseline: DetectionTarget, budget: Mapping[str, Any], seed: int, run_dir: Path, log: Log
) -> None:
    data, methods = run.data, run.methods
    same_schedule = run.same_schedule_used = not budget["ablation_loop"] and data.ablation_indices == data.loop_indices
    if same_schedule and "terse_d" in methods:
        run.ablations["full_terse_d"] = methods["terse_d"]
    elif selected("full_terse_d", "ablation_full_terse_d"):
        run.ablations["full_terse_d"] = run_method("ablation_full_terse_d", METHODS["terse_d"], data, baseline, budget, seed, run_dir, log, ablation=True)
    for aname, extra in ABLATIONS.items():
        if not selected(aname, f"ablation_{aname}"):
            continue
        if aname == "discriminator_off" and same_schedule and "terse_no_d" in methods:
            run.ablations[aname] = methods["terse_no_d"]
            continue
        run.ablations[aname] = run_method(f"ablation_{aname}", {**METHODS["terse_d"], **extra}, data, baseline, budget, seed, run_dir, log, ablation=True)


def checks(methods: Mapping[str, Mapping[str, Any]], baseline_ap: Mapping[str, float]) -> dict[str, Any]:
    """The issue's targets: terse_d's hard-positive ratio over random_paste (>= 3) and its AP80 gain (>= 3 points)."""
    synthetic = {k: v for k, v in methods.items() if k != "baseline"}
    hard = {k: v["hard_positive_fraction"] for k, v in synthetic.items()}
    out: dict[str, Any] = {}
    if {"terse_d", "random_paste"} <= synthetic.keys() and hard["random_paste"]:
        out["terse_d_hard_ratio_vs_random_paste"] = round(hard["terse_d"] / hard["random_paste"], 3)
        out["terse_d_hard_ratio_target_met"] = out["terse_d_hard_ratio_vs_random_paste"] >= 3.0
    if "terse_d" in synthetic:
        gain = 100 * (synthetic["terse_d"]["ap80"] - baseline_ap["ap80"])
        out["terse_d_ap80_gain_points"] = round(gain, 2)
        out["terse_d_ap80_gain_target_met"] = gain >= 3.0
        if "random_paste" in synthetic:
            out["terse_d_ap80_above_random_paste"] = synthetic["terse_d"]["ap80"] > synthetic["random_paste"]["ap80"]
    return out


def sample_rows(run_dir: Path, names: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """The samples :func:`run_method` saved, per method, for the sample grid."""
    return [(nm, load_checkpoint(run_dir / f"{nm}_samples.pt")) for nm in names if (run_dir / f"{nm}_samples.pt").is_file()]
