"""Imitation training for detection (Kishore et al., ICCV-W 2021; DAgger-style data aggregation).

Start from a detector trained on real data, then repeat one *imitation cycle*:

1. predict on a real validation split and mine its failures (false negatives, false positives,
   poorly localised boxes; :func:`~synthloop.loops.imitation_failures.mine_failures`);
2. re-simulate each failure ``per_failure`` times with randomised perturbations around its
   attributes through the scene compositor (:func:`~synthloop.loops.imitation_failures.resimulate`;
   at most ``scenes_per_cycle`` scenes: a seeded random subset of the failures when there are more);
3. fine-tune the detector (continuing from the previous cycle's weights) on the real training set
   plus *all* synthetic scenes so far for ``t_epochs`` passes over the real set, every batch
   ``real_ratio`` real:synthetic with the synthetic share capped at ``max_synthetic_share`` (the
   paper's 50 %) by :class:`~synthloop.loops.mixing.MixedBatchSampler` (the same schedule as one
   TERSE T phase, so the compute is comparable);
   (``resimulate: random``, the control: the same number of scenes per cycle, each drawn by
   :func:`~synthloop.loops.imitation_failures.random_scene` from the same banks and style but
   anchored on no failure; mining still runs, for the count, the record and the stop rule);
4. evaluate on the validation split; stop when the best ``select_metric`` has not grown by
   ``min_gain`` for ``patience`` cycles, after ``max_cycles``, or when no failure is left.

The validation split is the stopping signal, so none of its pixels is trained on: scenes are
composited from the foreground and background banks only (their backgrounds chosen by the mean
colour of the failure's surroundings). The model reported is the cycle with the best validation
score (cycle 0, the starting model, is recorded for reference and never selected).

Determinism and resume: failure ``i`` of cycle ``c`` draws from ``make_generator(seed,
"imitation", c, i)``, the subset from ``(seed, "imitation-subset", c)``, T's batches and modules
from ``(seed, "imitation-T", c)``; inference is deterministic, so mining again after a resume finds
the same failures. After every cycle ``cycle_NNN.pt`` (the model) and ``checkpoint.pt`` (model,
history, every scene's params) are written atomically; a resumed run replays the scenes from their
params (bit-identical) and continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from synthloop.compose.params import SceneParams
from synthloop.config import Config, check_range
from synthloop.errors import InputError
from synthloop.loops.checkpoint import load_checkpoint, save_checkpoint
from synthloop.loops.detection_training import train_detector
from synthloop.loops.imitation_failures import KINDS, Failure, InstanceIndex, Jitter, SceneStyle, mine_failures, random_scene, resimulate, resimulate_possible
from synthloop.loops.mixing import MixedBatchSampler, parse_ratio
from synthloop.loops.terse_detection_config import TORCH_BLEND_MODES
from synthloop.loops.terse_detection_scenes import SyntheticScene, replay_scene
from synthloop.metrics.classification import model_device
from synthloop.models.detection import DetectionTarget
from synthloop.models.targets import freeze
from synthloop.utils.atomic import atomic_write_json
from synthloop.utils.progress import Progress
from synthloop.utils.seeding import derive_seed, make_generator

CHECKPOINT = "checkpoint.pt"
METRICS = ("ap50", "ap60", "ap70", "ap80", "ap")


class ImitationConfig(Config):
    """The knobs of the imitation loop (module docstring). Defaults: the paper's 50 % cap; the
    perturbation bounds of the issue; the random paste's blend modes and photometric ranges."""

    seed: int = 0
    max_cycles: int = Field(3, ge=1, description="imitation cycles at most")
    min_gain: float = Field(0.005, ge=0.0, description="a cycle counts as a gain when select_metric grows by at least this over the best so far")
    patience: int = Field(1, ge=1, description="stop after this many cycles in a row without a gain (the paper: cycle 1 may dip, later ones recover)")
    select_metric: str = Field("ap", description="val metric for stopping and selection: ap50, ap60, ap70, ap80 or ap")
    iou_threshold: float = Field(0.5, gt=0.0, le=1.0, description="a confident detection overlapping no object of its class by this is a false positive")
    score_threshold: float = Field(0.5, gt=0.0, le=1.0, description="detections below this score are ignored in mining")
    loc_iou: float = Field(0.7, ge=0.1, le=1.0, description="an object whose best detection has IoU in [0.1, loc_iou) is poorly localised")
    resimulate: Literal["failures", "random"] = Field(
        "failures", description="failures: scenes around each mined failure (the paper); random: as many random-paste scenes (the control)"
    )
    per_failure: int = Field(2, ge=1, description="scenes re-simulated per failure")
    scenes_per_cycle: int = Field(300, ge=1, description="at most this many scenes per cycle (a random subset of failures beyond it)")
    scale: tuple[float, float] = Field((0.8, 1.25), description="factor on the failure's box size")
    aspect: tuple[float, float] = Field((0.9, 1.1), description="factor on the failure's box aspect (w/h)")
    shift: float = Field(0.1, ge=0.0, le=0.5, description="centre moves by at most this share of the canvas per axis")
    rotation: float = Field(10.0, ge=0.0, le=180.0, description="degrees, at most")
    distractors: tuple[int, int] = Field((0, 3), description="labelled objects of other classes per scene")
    background_candidates: int = Field(4, ge=1, description="random backgrounds compared by the failure's ring colour")
    blend_modes: list[str] = Field(default_factory=lambda: ["none", "alpha", "gaussian", "box", "motion"], description="one drawn per scene")
    photometric: bool = True
    brightness: tuple[float, float] = (0.7, 1.3)
    contrast: tuple[float, float] = (0.7, 1.3)
    fg_size: int = Field(64, ge=8)
    fg_fill: float = Field(0.8, gt=0.0, le=1.0)
    min_visibility: float = Field(0.5, ge=0.0, le=1.0)
    t_epochs: int = Field(1, ge=1, description="passes over the real set per cycle")
    t_batch_size: int = Field(8, ge=2)
    real_ratio: str = Field("1:1", description="real:synthetic per batch before the cap")
    max_synthetic_share: float = Field(0.5, gt=0.0, le=1.0, description="cap on the synthetic share of every batch (paper: 50 %)")
    lr_t: float = Field(1e-3, gt=0.0)
    t_augment: bool = False
    crop_size: int = Field(48, ge=8, description="side of each failure's crop in the report")

    @model_validator(mode="after")
    def _check(self) -> ImitationConfig:
        if self.select_metric not in METRICS:
            raise ValueError(f"select_metric must be one of {METRICS}, got {self.select_metric!r}")
        for name in ("scale", "aspect", "brightness", "contrast"):
            check_range(getattr(self, name))
        if self.scale[0] <= 0 or self.aspect[0] <= 0:
            raise ValueError("scale and aspect factors must be positive")
        if not 0 <= self.distractors[0] <= self.distractors[1]:
            raise ValueError(f"distractors must be (min, max) with 0 <= min <= max, got {self.distractors}")
        for m in self.blend_modes:
            if m not in TORCH_BLEND_MODES:
                raise ValueError(f"unknown blend mode {m!r}; valid: {', '.join(TORCH_BLEND_MODES)}")
        r, s = parse_ratio(self.real_ratio)
        if self.t_batch_size % (r + s):
            raise ValueError(f"t_batch_size {self.t_batch_size} must be a multiple of {r + s} (real_ratio {self.real_ratio})")
        if math.floor(self.max_synthetic_share * self.t_batch_size + 1e-9) == 0:
            raise ValueError(f"max_synthetic_share {self.max_synthetic_share} leaves no synthetic image in a batch of {self.t_batch_size}")
        return self

    def jitter(self) -> Jitter:
        return Jitter(tuple(self.scale), tuple(self.aspect), self.shift, self.rotation, tuple(self.distractors), self.background_candidates)

    def style(self) -> SceneStyle:
        return SceneStyle(
            tuple(self.blend_modes),
            self.photometric,
            tuple(self.brightness),
            tuple(self.contrast),
            self.fg_size,
            self.fg_fill,
            min_visibility=self.min_visibility,
        )


@dataclass
class ValSet:
    """The real validation split: ``images`` ``(N, 3, H, W)``, torchvision ``targets``, COCO
    ``image_ids``, optional per-object annotation ``attributes``, and ``score(predictions) -> {ap50,
    ..., ap}`` (COCO AP of one prediction dict per image, e.g. :func:`coco_scorer`)."""

    images: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    image_ids: list[int]
    score: Callable[[list[dict[str, torch.Tensor]]], dict[str, float]]
    attributes: list[list[dict[str, Any]]] | None = None


def coco_scorer(
    dataset: Any, label_map: Any, scales: Sequence[tuple[float, float]] | None = None
) -> Callable[[list[dict[str, torch.Tensor]]], dict[str, float]]:
    """AP of predictions on ``dataset``'s images (in its order) by pycocotools; ``scales`` map the
    boxes back to each image's own pixels (the job's resized sets)."""
    from synthloop.metrics.detection import coco_ap

    def score(predictions: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        records: list[dict[str, Any]] = []
        for i, (entry, det) in enumerate(zip(dataset.images, predictions)):
            if scales is not None:
                sx, sy = scales[i]
                det = dict(det, boxes=det["boxes"].cpu() / torch.tensor([sx, sy, sx, sy]))
            records += label_map.to_coco(entry.id, det)
        return coco_ap(dataset, records)

    return score


def predict_all(target: DetectionTarget, images: torch.Tensor, batch_size: int = 32) -> list[dict[str, torch.Tensor]]:
    """``target``'s detections on every image (frozen, no gradient, on its device), on the CPU."""
    device = model_device(target.model)
    out: list[dict[str, torch.Tensor]] = []
    with freeze(target.model), torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            for det in target.predict(images[start : start + batch_size].to(device)):
                out.append({k: v.detach().cpu() for k, v in det.items()})
    return out


def batch_plan(n_real: int, n_syn: int, cfg: ImitationConfig, seed: int) -> list[list[list[int]]]:
    """Per epoch, the batches :func:`train_detector` draws for one cycle (indices into ``cat([real,
    synthetic])``): the same sampler and seed derivation, so shares measured here are the drawn ones."""
    if n_syn == 0:
        return []
    sampler = MixedBatchSampler(
        n_real, n_syn, cfg.t_batch_size, cfg.real_ratio, max_synthetic_share=cfg.max_synthetic_share, seed=derive_seed(seed, "detector-mix")
    )
    return [sampler.batches(e) for e in range(cfg.t_epochs)]


def synthetic_share(plan: Sequence[Sequence[Sequence[int]]], n_real: int) -> float:
    """Share of synthetic indices among all indices drawn in ``plan``."""
    total = sum(len(b) for e in plan for b in e)
    return sum(1 for e in plan for b in e for i in b if i >= n_real) / total if total else 0.0


def train_cycle(
    target: DetectionTarget,
    real_images: torch.Tensor,
    real_targets: Sequence[Mapping[str, torch.Tensor]],
    scenes: Sequence[SyntheticScene],
    cfg: ImitationConfig,
    cycle: int,
) -> dict[str, Any]:
    """One cycle's T phase on real + ``scenes`` (the module docstring's step 3); returns steps, share, seconds."""
    seed = derive_seed(cfg.seed, "imitation-T", cycle)
    syn_images = torch.stack([s.image for s in scenes]) if scenes else None
    syn_targets = [s.target for s in scenes] if scenes else None
    log = train_detector(
        target, real_images, real_targets, synthetic_images=syn_images, synthetic_targets=syn_targets, ratio=cfg.real_ratio,
        max_synthetic_share=cfg.max_synthetic_share if scenes else None, epochs=cfg.t_epochs, batch_size=cfg.t_batch_size, lr=cfg.lr_t,
        augment=cfg.t_augment, seed=seed,
    )  # fmt: skip
    plan = batch_plan(real_images.shape[0], len(scenes), cfg, seed)
    return {"steps": log.steps, "synthetic_share": round(synthetic_share(plan, real_images.shape[0]), 5), "train_s": round(log.seconds, 2)}


@dataclass
class ImitationResult:
    """What :meth:`ImitationLoop.run` leaves: per cycle history (cycle 0 = the start), the scenes of
    every cycle, the failures mined in each cycle, the selected cycle."""

    history: list[dict[str, Any]]
    scenes: list[list[SyntheticScene]]
    failures: list[list[Failure]] = field(default_factory=list)
    selected_cycle: int | None = None
    stop_reason: str = ""


class ImitationLoop:
    """The loop (module docstring) on a trained ``target`` (trained in place), the real training set,
    the validation split and the foreground / background banks."""

    def __init__(
        self,
        config: ImitationConfig,
        target: DetectionTarget,
        real_images: torch.Tensor,
        real_targets: Sequence[Mapping[str, torch.Tensor]],
        val: ValSet,
        foregrounds: Any,
        backgrounds: Any,
        *,
        eval_batch_size: int = 32,
    ):
        self.config = config
        self.target = target
        if not isinstance(real_images, torch.Tensor) or real_images.ndim != 4 or real_images.shape[0] == 0:
            raise InputError("real_images must be a non-empty Tensor[N, 3, H, W]", field="real_images")
        if val.images.shape[-2:] != real_images.shape[-2:]:
            raise InputError(f"val images are {tuple(val.images.shape[-2:])}, real ones {tuple(real_images.shape[-2:])}", field="val.images")
        self.real_images, self.real_targets = real_images, list(real_targets)
        self.val = val
        self.canvas = (int(real_images.shape[-2]), int(real_images.shape[-1]))
        self.index = InstanceIndex(foregrounds, config.style())
        known = set(target.label_map.category_ids)
        for c in self.index.by_category:
            if c not in known:
                raise InputError(f"a foreground has category id {c}, not in the label map (known: {sorted(known)})", field="foregrounds.category_id")
        self.foregrounds, self.backgrounds = foregrounds, backgrounds
        self.eval_batch_size = eval_batch_size

    # ------------------------------------------------------------------ steps

    def mine(self, predictions: list[dict[str, torch.Tensor]]) -> list[Failure]:
        cfg = self.config
        return mine_failures(
            self.val.images, self.val.targets, predictions, category_ids=self.target.label_map.category_ids, image_ids=self.val.image_ids,
            attributes=self.val.attributes, iou_threshold=cfg.iou_threshold, score_threshold=cfg.score_threshold, loc_iou=cfg.loc_iou, crop_size=cfg.crop_size,
        )  # fmt: skip

    def scenes_for(self, failures: Sequence[Failure], cycle: int) -> list[SyntheticScene]:
        """Re-simulated scenes of ``cycle`` (a seeded subset of ``failures`` beyond the budget)."""
        cfg = self.config
        chosen = list(failures)
        limit = max(1, cfg.scenes_per_cycle // cfg.per_failure)
        if len(chosen) > limit:
            pick = torch.randperm(len(chosen), generator=make_generator(cfg.seed, "imitation-subset", cycle))[:limit]
            chosen = [chosen[i] for i in sorted(pick.tolist())]
        out: list[SyntheticScene] = []
        if cfg.resimulate == "random":  # the control: as many scenes as the failures would give, anchored on none
            n = sum(cfg.per_failure for f in chosen if resimulate_possible(f, self.index))
            for i in range(min(n, cfg.scenes_per_cycle)):
                p = random_scene(self.index, self.backgrounds, self.canvas, make_generator(cfg.seed, "imitation-random", cycle, i), jitter=cfg.jitter())
                p.meta["cycle"] = cycle
                out.append(self.replay(p))
            return out
        for f in chosen:
            g = make_generator(cfg.seed, "imitation", cycle, f.index)
            for p in resimulate(f, self.index, self.backgrounds, self.canvas, g, jitter=cfg.jitter(), per_failure=cfg.per_failure):
                p.meta["cycle"] = cycle
                out.append(self.replay(p))
        return out[: cfg.scenes_per_cycle]

    def replay(self, params: SceneParams | Mapping[str, Any]) -> SyntheticScene:
        return replay_scene(params, self.foregrounds, self.backgrounds, self.target.label_map)

    def evaluate(self) -> tuple[dict[str, float], list[dict[str, torch.Tensor]]]:
        preds = predict_all(self.target, self.val.images, self.eval_batch_size)
        return {k: round(float(v), 5) for k, v in self.val.score(preds).items()}, preds

    # ------------------------------------------------------------------ the loop

    def run(
        self, out_dir: str | Path | None = None, *, resume: bool = False, progress: Progress | None = None, stop_after: int | None = None
    ) -> ImitationResult:
        """Run cycles until a stop rule fires (``stop_after``: at most this many cycles in this call,
        for tests of resume). With ``out_dir``, checkpoints after every cycle; ``resume`` continues from one."""
        cfg = self.config
        out = Path(out_dir) if out_dir is not None else None
        history: list[dict[str, Any]] = []
        params: list[list[dict[str, Any]]] = []
        scenes: list[list[SyntheticScene]] = []
        failures: list[list[Failure]] = []
        if out is not None and resume and (out / CHECKPOINT).is_file():
            state = load_checkpoint(out / CHECKPOINT)
            self.target.model.load_state_dict(state["model"])
            history, params = json.loads(state["history"]), json.loads(state["params"])
            scenes = [[self.replay(p) for p in cyc] for cyc in params]
            failures = [[Failure(**d) for d in cyc] for cyc in json.loads(state["failures"])]
        if progress is not None:
            progress("imitation: validation", 0, 1)
        ap, preds = self.evaluate()
        if progress is not None:
            progress("imitation: validation", 1, 1)
        if not history:
            history.append({"cycle": 0, "val": ap, "failures": {}, "scenes_added": 0, "synthetic_images": 0, "synthetic_share": 0.0, "seconds": 0.0})
        stop = self._stop_reason(history)
        done_now = 0
        while stop is None and (stop_after is None or done_now < stop_after):
            cycle = len(history)
            t0 = time.perf_counter()
            mined = self.mine(preds)
            if not mined:
                stop = "no failures left on the validation split"
                break
            new = self.scenes_for(mined, cycle)
            scenes.append(new)
            failures.append(mined)
            params.append([s.params.to_dict() for s in new])
            if progress is not None:
                progress(f"imitation cycle {cycle}: training", 0, 1)
            info = train_cycle(self.target, self.real_images, self.real_targets, [s for c in scenes for s in c], cfg, cycle)
            ap, preds = self.evaluate()
            if progress is not None:
                progress(f"imitation cycle {cycle}: training", 1, 1)
            counts = {k: sum(1 for f in mined if f.kind == k) for k in KINDS}
            history.append({
                "cycle": cycle, "val": ap, "failures": counts, "failures_used": len({s.params.meta["failure"]["index"] for s in new if "failure" in s.params.meta}),
                "scenes_added": len(new), "synthetic_images": sum(len(c) for c in scenes), **info, "seconds": round(time.perf_counter() - t0, 2),
            })  # fmt: skip
            if out is not None:
                self._save(out, cycle, history, params, failures)
            done_now += 1
            stop = self._stop_reason(history)
        selected = max(range(1, len(history)), key=lambda c: history[c]["val"][cfg.select_metric], default=None)
        return ImitationResult(history, scenes, failures, selected, stop or "stopped by the caller")

    def _stop_reason(self, history: Sequence[Mapping[str, Any]]) -> str | None:
        cfg = self.config
        done = len(history) - 1
        if done >= cfg.max_cycles:
            return f"max_cycles ({cfg.max_cycles}) reached"
        vals = [h["val"][cfg.select_metric] for h in history]
        best, since = vals[0], 0
        for v in vals[1:]:
            if v - best >= cfg.min_gain:
                best, since = v, 0
            else:
                best, since = max(best, v), since + 1
        if since >= cfg.patience:
            return f"val {cfg.select_metric} gained less than {cfg.min_gain} over the best for {since} cycle(s)"
        return None

    def _save(self, out: Path, cycle: int, history: list[dict[str, Any]], params: list[list[dict[str, Any]]], failures: list[list[Failure]]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        found = [[f.to_dict() for f in cyc] for cyc in failures]
        save_checkpoint(out / f"cycle_{cycle:03d}.pt", {"model": self.target.model.state_dict(), "cycle": cycle})
        atomic_write_json(out / f"scenes_{cycle:03d}.json", params[cycle - 1])
        atomic_write_json(out / f"failures_{cycle:03d}.json", found[cycle - 1])
        atomic_write_json(out / "cycles.json", history)
        state = {"model": self.target.model.state_dict(), "history": json.dumps(history), "params": json.dumps(params), "failures": json.dumps(found)}
        save_checkpoint(out / CHECKPOINT, state)


def load_cycle(target: DetectionTarget, out_dir: str | Path, cycle: int) -> DetectionTarget:
    """Load cycle ``cycle``'s weights (``cycle_NNN.pt``) into ``target``."""
    target.model.load_state_dict(load_checkpoint(Path(out_dir) / f"cycle_{cycle:03d}.pt")["model"])
    return target


__all__ = [
    "ImitationConfig", "ImitationLoop", "ImitationResult", "ValSet", "batch_plan", "coco_scorer", "load_cycle", "predict_all", "synthetic_share", "train_cycle",
]  # fmt: skip
