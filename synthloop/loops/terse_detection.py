"""The TERSE scene loop for object detection (TERSE section 3, supplementary A.2).

Three players: the synthesizer S (:class:`~synthloop.models.synthesizer.SceneSynthesizer`) looks
at K foreground cut-outs and a background and predicts where (and, beyond the paper, with which
brightness and contrast) to paste each one; the target detector T
(:class:`~synthloop.models.detection.DetectionTarget`) and, optionally, the realism discriminator D
(:class:`~synthloop.models.discriminator.PatchDiscriminator`) judge the composites.

Composites (:meth:`SceneTerse.composite`, the same code for S's training batches, generation and
:func:`replay_scene`): a background is rendered at the real images' size; with ``artefacts`` a
second background is pasted into it through a foreground-shaped mask at a random placement
(TERSE section 3.1, so seams carry no label information); then the K cut-outs, each letterboxed
to ``fg_size`` (:func:`~synthloop.compose.batch.letterbox`), are warped on one after another
(:func:`~synthloop.compose.batch.paste_objects_batch`), with the A.2 mask clean-up when
``cleanup`` and one blend mode per composite drawn from ``blend_modes``. Clean-up level: A.2
subtracts ``mu = 1 - 1e-7`` from the warped *binary* segmentation mask, keeping only pixels whose
bilinear neighbours are all inside. On soft-alpha cut-outs (MNIST digits; any cut-out after the
antialiased letterbox resize) that erodes every edge by up to a pixel and erased most of a
digit's 3-4 px strokes (seen on rendered digit scenes: boxes around nearly empty patches). The
default ``cleanup_mu = 0.5`` cuts at the mask's 0.5 iso-line, the boundary a resampled binary
mask really has, then renormalises and blurs as in A.2; ``cleanup_mu: 0.9999999`` is the paper's
literal value.

Labels come from the *visible* part of each warped mask (later pastes occlude earlier ones): an object whose visible
area is below ``min_visibility`` of its full warped area (occluded, or cut by the border), or
whose visible box is thinner than :data:`~synthloop.models.detection.MIN_BOX_SIZE`, is left out
of the labels (it stays in the image). Boxes are those of the visible mask (> 0.5), detached.

One *cycle* (:meth:`SceneTerse.cycle`), as in A.2:

1. **S phase** (``synthesizer="terse"``): ``s_steps`` Adam steps on random fg/bg pairs with T and D
   frozen (:func:`~synthloop.models.freeze`: ``eval()`` mode, no ``requires_grad``, not in S's
   optimiser). S's loss is ``-bound(L_T) + adv_weight * g_loss(D(composite))`` (D term only when
   the discriminator is on), ``L_T`` T's detection loss (eq. 1) on the composite with its
   visible-object targets. **Bound**: the paper maximises ``L_T`` itself (eq. 3), which is
   unbounded above; S's outputs are squashed into ``ranges``, but a detector's loss can still
   reach large values on degenerate composites (its focal/cross-entropy terms grow like ``-log p``
   as T's probability for an object goes to 0), and S's gradient would then swamp D's term.
   ``bound(L) = s_loss_bound * tanh(L / s_loss_bound)`` is a soft clamp: slope 1 (the paper's
   objective) while ``L`` is small against ``s_loss_bound`` (at the default 10 and the losses of
   1-3 measured on digit scenes the slope is 0.91-0.99), saturating at ``s_loss_bound`` so S
   gains nothing from pushing an already hopeless object further.
   ``s_loss_bound: null`` restores the paper's raw ``-L_T``. Non-finite losses skip the step
   (counted in the history as ``s_skipped``).
   Translation anchors: an untrained S outputs nearly the middle of every range, which would
   stack all K objects at the canvas centre (each hiding the one before). So every object of a
   composite gets a random anchor ``u`` uniform in ``[0, 1]^2`` (part of the sampled layout, like
   the background) and S's translation is ``lerp(lo, hi, sigmoid(logit(u) + raw))`` with ``raw``
   S's raw output: at ``raw = 0`` the object sits at its anchor (a uniform random position, as in
   random cut-paste), and S can move it anywhere in the range. S still sees the cut-outs and
   the background, not the anchors; the other parameters are S's own (squashed into the ranges).
2. **Generation** (:meth:`SceneTerse.generate`): composites of random fg/bg pairs placed by S (in
   ``eval()`` mode with its dropout active, TERSE's source of variety; BatchNorm uses its running
   statistics) or, with ``synthesizer="random"``, by placements uniform in ``ranges`` (the random
   cut-paste baseline through the same code). T scores the labelled objects
   (:meth:`~synthloop.models.detection.DetectionTarget.confidence`); ``keep="hard"`` keeps a
   composite when some object's confidence is below ``hard_threshold`` (A.2's rule), until
   ``hard_per_cycle`` are kept or ``max_candidates_per_cycle`` were tried (the history records
   both); ``keep="all"`` keeps the first ``hard_per_cycle``. A composite with no labelled object
   counts as tried and is never kept.
3. **T phase**: :func:`~synthloop.loops.detection_training.train_detector` for ``t_epochs`` over the
   real set, every batch ``real_ratio`` real:synthetic from all scenes kept so far (S not used).
4. **D phase** (discriminator on): ``d_steps`` Adam steps (default: ``t_epochs`` passes over the
   real set in batches of ``batch_size``) on real images vs composites of the frozen S.

Randomness and determinism: every S step, D step and generation batch draws its pairs from a
``torch.Generator`` derived from ``(seed, phase, step counter)`` and runs S's dropout under a
seeded, restored global RNG (:func:`~synthloop.loops.training.scoped_rng`); T's epochs are seeded
per cycle. Nothing depends on the global RNG, so two runs with one seed give identical images
and history, and the step counters (saved in the checkpoint) are the whole RNG state: a run
resumed from the checkpoint written after any cycle continues exactly as the uninterrupted run.

Replay: every kept scene's ``params`` (JSON-able) hold the background params, the artefact's
params, the foreground indices and categories, the (K, 6) affine placements, the photometric
factors, the blend mode and the compositing settings; :func:`replay_scene` renders them again
bit-identically. Scenes are rendered one at a time (batch of 1) in generation and replay alike,
so the replayed image is the very computation that made the kept one.

Run folder (``run(out_dir)``): ``config.yaml`` (resolved), ``checkpoint.pt`` (S, T's model, D,
S's and D's optimisers, history, the kept scenes' params, step counters; written atomically
after every cycle), ``history.json`` and ``scenes.json`` (every kept scene's params). T's
optimiser is created afresh by ``train_detector`` in every cycle, so it needs no saving. Write the
kept scenes as a COCO data set with :func:`write_synthetic_coco`.

Speed, measured on this project's 2-core CPU machine (torch 2.14, one thread, while other jobs
kept the load average at 4-6, so an idle machine is faster) with the defaults (S: 627k
parameters with ``s_channels=[16, 32, 64]`` at ``s_input_size=64``; D: 175k at ``d_width=0.25``),
K = 3 objects, 128x128 digit scenes, batch 8, the default
:class:`~synthloop.models.detection.SmallDetector` as T, photo backgrounds with artefacts:

- one S step (8 composites: layouts, S forward/backward, paste, T's loss and D's term): 0.66-0.75 s
  (1.0-1.6 s with S at 128x128 input and four stages, hence the smaller default);
- one generated candidate (S forward in batches of 8, rendering, T's confidence): 38 ms (66 ms
  before generation reused the canvases S had already rendered);
- one D step (8 real vs 8 fresh composites): 0.25-0.39 s;
- one T epoch over 200 real images at 1:1 with 64 kept composites (50 steps of 8): 15-19 s.

Most of a candidate's time is rendering its two photo backgrounds (about 13 ms each) and S.
So a cycle with the benchmark-sized budget (40 S steps, 900 candidates, 20 D steps, one T epoch
over 1,000 real images) costs about 30 + 35 + 6 + 90 s.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from synthloop.compose.batch import SceneComposite, letterbox, paste_artefacts_batch, paste_objects_batch
from synthloop.config import Config, check_range
from synthloop.data.dataset import Annotation, ImageEntry
from synthloop.errors import InputError
from synthloop.functional.blend import BLEND_MODES
from synthloop.loops.checkpoint import load_checkpoint, save_checkpoint
from synthloop.loops.detection_training import train_detector
from synthloop.loops.mixing import parse_ratio
from synthloop.loops.training import scoped_rng
from synthloop.models.cpu_backend import guard_strided_1x1_convs
from synthloop.models.detection import MIN_BOX_SIZE, DetectionTarget, LabelMap
from synthloop.models.discriminator import PatchDiscriminator, d_loss, g_loss
from synthloop.models.synthesizer import ParamRanges, PhotometricRanges, SceneSynthesizer, to_color_params
from synthloop.models.targets import freeze
from synthloop.utils.atomic import atomic_write_json, atomic_write_text
from synthloop.utils.seeding import derive_seed, make_generator

Range = tuple[float, float]
Progress = Callable[[str, int, int], None]
"""``progress(task, done, total)``."""

SCENE_PARAMS_VERSION = 1
TORCH_BLEND_MODES: tuple[str, ...] = tuple(m for m in BLEND_MODES if m != "poisson")
"""Blend modes the loop can use: every torch blend ("none" passes no gradient through the object's
edge, the others are differentiable); Poisson blending runs in OpenCV and is left out."""
ANCHOR_EPS = 1e-3


class SceneRangesConfig(Config):
    """``(min, max)`` of each placement parameter (S's outputs are squashed into them; the random
    synthesizer draws uniformly from them).

    ``angle`` degrees; ``tx``/``ty`` offset of the object's centre from the canvas centre as a
    *fraction of the canvas* width/height (so one config fits any image size); ``shear`` factor;
    ``sx``/``sy`` scale of the ``fg_size`` letterboxed cut-out. Defaults: at ``fg_size`` 64 with
    ``fg_fill`` 0.8 a scale of 1 makes the cut-out's longer side 51 px, so 0.45-1.1 gives 23-56 px
    objects on a 128x128 canvas (the digit-scene benchmark's real digits are 20-50 px tall).
    """

    angle: Range = (-30.0, 30.0)
    tx: Range = (-0.4, 0.4)
    ty: Range = (-0.4, 0.4)
    shear: Range = (-0.2, 0.2)
    sx: Range = (0.45, 1.1)
    sy: Range = (0.45, 1.1)

    @field_validator("angle", "tx", "ty", "shear", "sx", "sy")
    @classmethod
    def _ordered(cls, value: Range) -> Range:
        return check_range(value)

    def to_param_ranges(self, canvas: tuple[int, int]) -> ParamRanges:
        """Ranges in :mod:`~synthloop.functional.geometry` units (``tx``/``ty`` in canvas pixels)."""
        H, W = canvas
        return ParamRanges(
            angle=tuple(self.angle), tx=(self.tx[0] * W, self.tx[1] * W), ty=(self.ty[0] * H, self.ty[1] * H),
            shear=tuple(self.shear), sx=tuple(self.sx), sy=tuple(self.sy),
        )  # fmt: skip


class PhotometricRangesConfig(Config):
    """``(min, max)`` of the learned (or, for the random synthesizer, drawn) brightness and contrast factors."""

    brightness: Range = (0.7, 1.3)
    contrast: Range = (0.7, 1.3)

    @field_validator("brightness", "contrast")
    @classmethod
    def _ordered(cls, value: Range) -> Range:
        return check_range(value)

    def to_photometric_ranges(self) -> PhotometricRanges:
        return PhotometricRanges(brightness=tuple(self.brightness), contrast=tuple(self.contrast))


class SceneTerseConfig(Config):
    """Every knob of the scene loop. Defaults follow TERSE A.2 where it states a value (5 cycles,
    1000 S batches of 16, weight decay 5e-4 for S, Adam 1e-4 for D, 100 generation batches = 1600
    candidates, keep confidence < 0.5, 3 T epochs, real:synthetic 1:1); the rest are this
    project's choices (see each description).

    S's learning rate is 1e-2, not the paper's 1e-4: measured against the digit-scene baseline
    detector (K = 3, batch 8, D on, 64 fixed evaluation candidates), the share of hard objects
    (confidence < 0.5) in S's composites went from 0.27 (untrained S) to 0.82 / 0.74 / 0.76 after
    20 / 40 / 60 S steps at 1e-2, but only to 0.28 / 0.36 / 0.38 at 3e-3 and 0.32 after 60 steps at
    1e-3 (uniform random placements: 0.41). The paper's S starts from a pretrained VGG and takes
    1000 steps per cycle.
    """

    seed: int = 0
    synthesizer: Literal["terse", "random"] = Field("terse", description="'random': no S, placements uniform in the ranges (random cut-paste)")
    keep: Literal["hard", "all"] = Field("hard", description="'all' keeps every generated composite (no hardness filter)")
    num_objects: int = Field(3, ge=1, description="K foregrounds per composite; 1 = the paper's single-object setting")
    photometric: bool = Field(True, description="learned brightness/contrast per object (random: drawn uniformly)")
    discriminator: bool = Field(True, description="realism D (used only with synthesizer='terse')")
    artefacts: bool = Field(True, description="TERSE background artefacts (one per composite)")
    cleanup: bool = Field(True, description="A.2 mask clean-up of the warped alpha")
    cleanup_sigma: float = Field(1.0, ge=0.0, description="Gaussian sigma (px) of the clean-up's feathering")
    cleanup_mu: float = Field(
        0.5, ge=0.0, lt=1.0,
        description="clean-up level: warped alpha below it is cut, the rest renormalised (paper: 1 - 1e-7, which erases thin soft-alpha strokes)",
    )  # fmt: skip
    s_dropout: float = Field(0.5, ge=0.0, lt=1.0, description="dropout in S (Table 2 ablation)")
    blend_modes: list[str] = Field(default_factory=lambda: ["alpha"], description="one drawn per composite; torch blends only")
    cycles: int = Field(5, ge=1, description="paper: 5")
    s_steps: int = Field(1000, ge=0, description="S batches per cycle; paper: 1000")
    batch_size: int = Field(16, ge=2, description="S, D and generation batch; paper: 16 (S's BatchNorm needs >= 2)")
    hard_per_cycle: int = Field(1600, ge=1, description="composites kept per cycle at most")
    max_candidates_per_cycle: int = Field(1600, ge=1, description="composites tried per cycle at most; paper: 100 batches of 16")
    t_epochs: int = Field(3, ge=0, description="passes over the real set per cycle; paper: 3")
    t_batch_size: int = Field(8, ge=2, description="T's batch (a multiple of the ratio's parts)")
    real_ratio: str = Field("1:1", description="real:synthetic per T batch; paper: 1:1")
    t_augment: bool = Field(False, description="train_detector's channel permutation + flip")
    lr_s: float = Field(
        1e-2, gt=0.0,
        description="Adam; paper: 1e-4 over 1000 batches with a pretrained VGG backbone (from scratch, 1e-3 barely moves S in 60 batches)",
    )  # fmt: skip
    s_weight_decay: float = Field(5e-4, ge=0.0, description="paper: 5e-4")
    lr_t: float = Field(1e-3, gt=0.0, description="train_detector's peak AdamW lr (paper: SGD 1e-5 for a converged SSD)")
    lr_d: float = Field(1e-4, gt=0.0, description="Adam; paper: 1e-4")
    adv_weight: float = Field(1.0, ge=0.0, description="weight of D's term in S's loss")
    d_steps: int | None = Field(None, ge=0, description="D steps per cycle; None = t_epochs passes over the real set in batches of batch_size")
    hard_threshold: float = Field(0.5, gt=0.0, le=1.0, description="hard when some object's confidence is below this; paper: 0.5")
    fg_size: int = Field(64, ge=8, description="cut-outs letterboxed to fg_size x fg_size before warping")
    fg_fill: float = Field(0.8, gt=0.0, le=1.0, description="share of fg_size the cut-out's longer side fills (paper: >= 0.7)")
    ranges: SceneRangesConfig = Field(default_factory=SceneRangesConfig)
    photometric_ranges: PhotometricRangesConfig = Field(default_factory=PhotometricRangesConfig)
    min_visibility: float = Field(0.5, ge=0.0, le=1.0, description="objects less visible than this are left out of the labels")
    s_loss_bound: float | None = Field(10.0, gt=0.0, description="soft clamp of T's loss in S's objective; None = the paper's raw -L_T")
    s_channels: list[int] = Field(default_factory=lambda: [16, 32, 64], description="S backbone widths (paper: VGG-16 conv1-5, pretrained)")
    s_branch_channels: int = Field(64, ge=1)
    s_input_size: int = Field(64, ge=8, description="S resizes its inputs to this (needs >= 7 * 2^len(s_channels))")
    d_width: float = Field(0.25, gt=0.0, description="PatchDiscriminator width multiplier (paper: 1.0)")

    @field_validator("blend_modes")
    @classmethod
    def _blends(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("blend_modes needs at least one mode")
        for m in value:
            if m not in TORCH_BLEND_MODES:
                valid = sorted(TORCH_BLEND_MODES)
                raise ValueError(f"unknown or non-torch blend mode {m!r}; valid: {', '.join(valid)}")
        return value

    @field_validator("real_ratio")
    @classmethod
    def _ratio(cls, value: str) -> str:
        try:
            parse_ratio(value)
        except InputError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SceneTerseConfig:
        r, s = parse_ratio(self.real_ratio)
        if self.t_batch_size % (r + s):
            raise ValueError(f"t_batch_size {self.t_batch_size} must be a multiple of {r + s} (real_ratio {self.real_ratio})")
        if not self.s_channels or min(self.s_channels) < 1:
            raise ValueError("s_channels must list positive widths")
        need = 7 * 2 ** len(self.s_channels)
        if self.s_input_size < need:
            raise ValueError(f"s_input_size {self.s_input_size} is too small for {len(self.s_channels)} backbone stages (needs >= {need})")
        return self


@dataclass
class SyntheticScene:
    """One composite with its labels: ``image`` ``(3, H, W)`` in [0, 1]; ``target`` ``{"boxes":
    (N, 4) float xyxy px, "labels": (N,) int64 1..C}`` of the labelled (visible) objects;
    ``category_ids`` their COCO ids; ``confidence`` ``(N,)`` T's confidence on each when the scene
    was generated (NaN when unknown); ``params`` JSON-able, enough to replay the image exactly."""

    image: torch.Tensor
    target: dict[str, torch.Tensor]
    category_ids: list[int]
    confidence: torch.Tensor
    params: dict[str, Any]


@dataclass
class SceneTerseResult:
    """What :meth:`SceneTerse.run` leaves: every kept composite in order and the per-cycle history."""

    scenes: list[SyntheticScene]
    history: list[dict[str, Any]]
    completed_cycles: int = 0
    out_dir: Path | None = None


# --------------------------------------------------------------------------------------------
# rendering (shared by S's batches, generation and replay)


def _background_tensor(backgrounds: Any, params: Mapping[str, Any], canvas: tuple[int, int]) -> torch.Tensor:
    """Render a background's params at ``canvas`` as ``(3, H, W)`` float32 in [0, 1]; a source that
    returns another size is resized (bilinear, antialiased) to the canvas."""
    arr = np.asarray(backgrounds.render_one(params, canvas))
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputError(f"background source returned an array of shape {arr.shape}, expected (H, W, 3)", field="backgrounds")
    t = torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1)
    t = t.float().div(255.0) if arr.dtype == np.uint8 else t.float()
    if tuple(t.shape[-2:]) != tuple(canvas):
        t = F.interpolate(t.unsqueeze(0), size=tuple(canvas), mode="bilinear", align_corners=False, antialias=True)[0]
    return t.clamp(0.0, 1.0)


def _cutout(foregrounds: Any, index: int, size: int, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut-out ``index`` letterboxed: RGB float in [0, 1] (uint8 is scaled; grey is repeated to RGB)."""
    rgb, alpha = (torch.as_tensor(v) for v in foregrounds.tensor(int(index)))
    rgb = rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
    alpha = alpha.float() / 255.0 if alpha.dtype == torch.uint8 else alpha.float()
    if rgb.ndim == 3 and rgb.shape[0] == 1:
        rgb = rgb.expand(3, -1, -1)
    if alpha.ndim == 2:
        alpha = alpha.unsqueeze(0)
    return letterbox(rgb, alpha, size, fill)


def _composite(
    params_list: Sequence[Mapping[str, Any]],
    foregrounds: Any,
    backgrounds: Any,
    *,
    affine: torch.Tensor | None = None,
    photometric: torch.Tensor | None = None,
    canvas_in: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, SceneComposite]:
    """Render composites of ``params_list`` (all with the same K, size and settings).

    ``affine`` ``(B, K, 6)`` / ``photometric`` ``(B, K, 4)`` override the numbers in the params (S's
    differentiable outputs); ``canvas_in`` ``(B, 3, H, W)`` is the background with artefacts when
    already rendered. Returns ``(canvas, composite)``. Composites are grouped by blend mode.
    """
    first = params_list[0]
    H, W = (int(v) for v in first["canvas"])
    size, fill = int(first["fg_size"]), float(first["fg_fill"])
    if canvas_in is None:
        canvas_in = _canvas(params_list, foregrounds, backgrounds, device=device)
    fgs, alphas = [], []
    for p in params_list:
        pairs = [_cutout(foregrounds, o["index"], size, fill) for o in p["objects"]]
        fgs.append(torch.stack([r for r, _ in pairs]))
        alphas.append(torch.stack([a for _, a in pairs]))
    fg = torch.stack(fgs).to(device)
    fa = torch.stack(alphas).to(device)
    if affine is None:
        affine = torch.tensor([[o["affine"] for o in p["objects"]] for p in params_list], dtype=torch.float32, device=device)
    if photometric is None and first["objects"] and first["objects"][0].get("photometric") is not None:
        photometric = torch.tensor([[o["photometric"] for o in p["objects"]] for p in params_list], dtype=torch.float32, device=device)
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(params_list):
        groups.setdefault(p["blend"]["mode"], []).append(i)
    parts: list[tuple[list[int], SceneComposite]] = []
    for mode, idx in groups.items():
        sel = torch.tensor(idx, device=device)
        comp = paste_objects_batch(
            fg[sel], fa[sel], canvas_in[sel], affine[sel],
            photometric_params=None if photometric is None else photometric[sel],
            blend_mode=mode, cleanup=bool(first["cleanup"]), cleanup_sigma=float(first["cleanup_sigma"]), cleanup_mu=float(first["cleanup_mu"]),
        )  # fmt: skip
        parts.append((idx, comp))
    if len(parts) == 1:
        return canvas_in, parts[0][1]
    order = torch.tensor([i for idx, _ in parts for i in idx], device=device)
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel(), device=device)
    cat = {name: torch.cat([getattr(c, name) for _, c in parts])[inv] for name in ("image", "alphas", "visible", "boxes", "visibility")}
    assert H == canvas_in.shape[-2] and W == canvas_in.shape[-1]
    return canvas_in, SceneComposite(**cat)


def _canvas(params_list: Sequence[Mapping[str, Any]], foregrounds: Any, backgrounds: Any, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """Backgrounds with their artefacts, ``(B, 3, H, W)``; no gradient needed (nothing learned)."""
    out = []
    for p in params_list:
        canvas = tuple(int(v) for v in p["canvas"])
        bg = _background_tensor(backgrounds, p["background"], canvas).to(device).unsqueeze(0)
        art = p.get("artefact")
        if art is not None:
            other = _background_tensor(backgrounds, art["background"], canvas).to(device).unsqueeze(0)
            _, shape = _cutout(foregrounds, art["shape_index"], int(p["fg_size"]), float(p["fg_fill"]))
            affine = torch.tensor([art["affine"]], dtype=torch.float32, device=device)
            bg = paste_artefacts_batch(bg, other, shape.unsqueeze(0).to(device), affine, blend_mode=p["blend"]["mode"])
        out.append(bg)
    return torch.cat(out)


def _labels(comp: SceneComposite, i: int, params: Mapping[str, Any], label_map: LabelMap) -> tuple[dict[str, torch.Tensor], list[int], list[int]]:
    """Target of composite ``i``: the objects visible enough with a box of at least MIN_BOX_SIZE.
    Returns ``(target, category_ids, object positions k)``."""
    boxes = comp.boxes[i].detach().float().cpu()
    vis = comp.visibility[i].detach().cpu()
    min_vis = float(params["min_visibility"])
    keep = []
    for k, obj in enumerate(params["objects"]):
        w, h = float(boxes[k, 2] - boxes[k, 0]), float(boxes[k, 3] - boxes[k, 1])
        if float(vis[k]) >= min_vis and float(vis[k]) > 0 and w >= MIN_BOX_SIZE and h >= MIN_BOX_SIZE:
            keep.append(k)
    cats = [int(params["objects"][k]["category_id"]) for k in keep]
    labels = [label_map.label(c, field=f"objects[{k}].category_id") for c, k in zip(cats, keep)]
    target = {"boxes": boxes[keep].reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.int64)}
    return target, cats, keep


def replay_scene(params: Mapping[str, Any], foregrounds: Any, backgrounds: Any, label_map: LabelMap) -> SyntheticScene:
    """Render a scene again from its ``params`` (bit-identical to the kept one: same code, batch of 1).

    ``confidence`` is the one recorded at generation (NaN when the params hold none).

    Raises:
        InputError: params of another version, or a category missing from ``label_map``.
    """
    return _render_scene(params, foregrounds, backgrounds, label_map)


def _render_scene(params: Mapping[str, Any], foregrounds: Any, backgrounds: Any, label_map: LabelMap, canvas: torch.Tensor | None = None) -> SyntheticScene:
    """:func:`replay_scene`; ``canvas`` ``(1, 3, H, W)`` is the scene's background with artefacts when
    already rendered by :func:`_canvas` (a deterministic function of the params, so reusing it
    changes no bit)."""
    if int(params.get("version", -1)) != SCENE_PARAMS_VERSION:
        raise InputError(f"scene params of version {params.get('version')!r}; this synthloop reads version {SCENE_PARAMS_VERSION}", field="version")
    with torch.no_grad():
        _, comp = _composite([params], foregrounds, backgrounds, canvas_in=None if canvas is None else canvas.cpu())
    target, cats, _ = _labels(comp, 0, params, label_map)
    conf = params.get("confidence")
    confidence = torch.tensor(conf, dtype=torch.float32) if conf is not None else torch.full((len(cats),), float("nan"))
    return SyntheticScene(comp.image[0].detach().cpu(), target, cats, confidence, dict(params))


# --------------------------------------------------------------------------------------------
# the loop


def _mean(rows: Sequence[Mapping[str, float]], key: str) -> float | None:
    vals = [r[key] for r in rows if key in r and math.isfinite(r[key])]
    return float(sum(vals) / len(vals)) if vals else None


def _uniform(g: torch.Generator, lo: torch.Tensor, hi: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(*shape, lo.numel(), generator=g, dtype=torch.float64).float()


class SceneTerse:
    """The A.2 loop: S (or random placements), T, optionally D, on real images + foreground and background banks.

    Args:
        config: :class:`SceneTerseConfig`.
        target: T, a :class:`DetectionTarget` (or a bare torchvision detection model, wrapped with
            ``label_map``; its ``num_classes`` must match it). Trained in place.
        real_images: ``(N, 3, H, W)`` in [0, 1]: T's and D's real data; composites are rendered at ``(H, W)``.
        real_targets: their torchvision targets.
        foregrounds: cut-outs (:class:`~synthloop.compose.sources.TensorInstances`, ``BankInstances``:
            ``__len__``, ``tensor(i) -> (rgb, alpha)``, ``category_of(i)``).
        backgrounds: a background source (``sample_one(size, generator) -> params``,
            ``render_one(params, size) -> (H, W, 3)``), e.g. :class:`~synthloop.data.backgrounds.BackgroundBank`.
        label_map: needed only when ``target`` is a bare model (default: ``target.label_map``).
        synthesizer, discriminator: optional prebuilt S and D.
        device: where the networks run.

    Raises:
        InputError: empty foreground bank, a foreground category missing from the label map
            (naming it), malformed real data, a model whose ``num_classes`` does not match.
    """

    def __init__(
        self,
        config: SceneTerseConfig,
        target: DetectionTarget | nn.Module,
        real_images: torch.Tensor,
        real_targets: Sequence[Mapping[str, torch.Tensor]],
        foregrounds: Any,
        backgrounds: Any,
        *,
        label_map: LabelMap | None = None,
        synthesizer: nn.Module | None = None,
        discriminator: nn.Module | None = None,
        device: torch.device | str = "cpu",
    ):
        self.config = cfg = config
        self.device = torch.device(device)
        if not isinstance(target, DetectionTarget):
            if label_map is None:
                raise InputError("a bare detection model needs label_map (or pass a DetectionTarget)", field="label_map")
            target = DetectionTarget(target, label_map)
        self.target = target
        guard_strided_1x1_convs(target.model)
        self.label_map = target.label_map
        if not isinstance(real_images, torch.Tensor) or real_images.ndim != 4 or real_images.shape[1] != 3 or real_images.shape[0] == 0:
            shape = tuple(real_images.shape) if isinstance(real_images, torch.Tensor) else type(real_images).__name__
            raise InputError(f"real_images must be a non-empty Tensor[N, 3, H, W], got {shape}", field="real_images")
        if len(real_targets) != real_images.shape[0]:
            raise InputError(f"{len(real_targets)} real targets for {real_images.shape[0]} real images", field="real_targets")
        target.check_targets(real_images, real_targets)
        self.real_images = real_images
        self.real_targets = [{"boxes": torch.as_tensor(t["boxes"]).float().reshape(-1, 4), "labels": torch.as_tensor(t["labels"]).long()} for t in real_targets]
        self.canvas = (int(real_images.shape[-2]), int(real_images.shape[-1]))
        if foregrounds is None or len(foregrounds) == 0:
            raise InputError("the foreground bank is empty", field="foregrounds")
        known = set(self.label_map.category_ids)
        self._fg_categories = [int(foregrounds.category_of(i)) for i in range(len(foregrounds))]
        for i, c in enumerate(self._fg_categories):
            if c not in known:
                raise InputError(
                    f"foreground {i} has category id {c}, which is not in the label map (known ids: {sorted(known)})",
                    field=f"foregrounds[{i}].category_id",
                )
        self.foregrounds = foregrounds
        self.backgrounds = backgrounds
        self.param_ranges = cfg.ranges.to_param_ranges(self.canvas)
        lo, hi = self.param_ranges.bounds()
        self._aff_lo, self._aff_hi = torch.tensor(lo), torch.tensor(hi)
        plo, phi = cfg.photometric_ranges.to_photometric_ranges().bounds()
        self._ph_lo, self._ph_hi = torch.tensor(plo), torch.tensor(phi)
        self.synthesizer: nn.Module | None = None
        self.discriminator: nn.Module | None = None
        with scoped_rng(derive_seed(cfg.seed, "scene-terse-init"), self.device):
            if cfg.synthesizer == "terse":
                if synthesizer is None:
                    synthesizer = SceneSynthesizer(
                        ranges=self.param_ranges,
                        photometric=cfg.photometric_ranges.to_photometric_ranges() if cfg.photometric else None,
                        num_objects=cfg.num_objects,
                        channels=tuple(cfg.s_channels),
                        branch_channels=cfg.s_branch_channels,
                        input_size=(cfg.s_input_size, cfg.s_input_size),
                        dropout=cfg.s_dropout,
                    )
                self.synthesizer = synthesizer.to(self.device)
                if cfg.discriminator:
                    self.discriminator = (discriminator if discriminator is not None else PatchDiscriminator(3, width=cfg.d_width)).to(self.device)
        self.opt_s = torch.optim.Adam(self.synthesizer.parameters(), lr=cfg.lr_s, weight_decay=cfg.s_weight_decay) if self.synthesizer is not None else None
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999)) if self.discriminator is not None else None
        self.target.model.to(self.device)
        self.scenes: list[SyntheticScene] = []
        self.history: list[dict[str, Any]] = []
        self.completed_cycles = 0
        self.counters = {"s": 0, "d": 0}
        self.last_generation: dict[str, int] = {}

    # ------------------------------------------------------------------ sampling and rendering

    def _uniform_affine(self, g: torch.Generator, n: int) -> list[list[float]]:
        """Random cut-paste placements: every parameter uniform in its range, except that ``sy``
        follows ``sx`` (clamped into its range), so cut-outs keep their aspect ratio as far as the
        ranges allow (Cut-Paste-Learn scales uniformly)."""
        p = _uniform(g, self._aff_lo, self._aff_hi, (n,))
        p[:, 5] = p[:, 4].clamp(float(self._aff_lo[5]), float(self._aff_hi[5]))
        return p.tolist()

    def sample_layout(self, g: torch.Generator, cycle: int = 0) -> dict[str, Any]:
        """Everything random about a composite except S's outputs: background, foregrounds, blend,
        artefact; with ``synthesizer="random"`` also the placements (and photometrics)."""
        cfg = self.config
        k = cfg.num_objects
        bg = self.backgrounds.sample_one(self.canvas, g)
        index = torch.randint(len(self.foregrounds), (k,), generator=g).tolist()
        mode = cfg.blend_modes[int(torch.randint(len(cfg.blend_modes), (), generator=g))]
        artefact = None
        if cfg.artefacts:
            other = self.backgrounds.sample_one(self.canvas, g)
            shape_index = int(torch.randint(len(self.foregrounds), (), generator=g))
            artefact = {"background": other, "shape_index": shape_index, "affine": self._uniform_affine(g, 1)[0]}
        objects = [{"index": int(i), "category_id": self._fg_categories[int(i)]} for i in index]
        if cfg.synthesizer == "terse":
            for o, u in zip(objects, torch.rand(k, 2, generator=g, dtype=torch.float64).tolist()):
                o["anchor"] = [float(v) for v in u]
        else:
            for o, a in zip(objects, self._uniform_affine(g, k)):
                o["affine"] = a
            if cfg.photometric:
                ph = _uniform(g, self._ph_lo, self._ph_hi, (k,))
                for o, v in zip(objects, to_color_params(ph).tolist()):
                    o["photometric"] = v
        return {
            "version": SCENE_PARAMS_VERSION,
            "cycle": int(cycle),
            "canvas": list(self.canvas),
            "fg_size": cfg.fg_size,
            "fg_fill": cfg.fg_fill,
            "cleanup": cfg.cleanup,
            "cleanup_sigma": cfg.cleanup_sigma,
            "cleanup_mu": cfg.cleanup_mu,
            "min_visibility": cfg.min_visibility,
            "background": bg,
            "artefact": artefact,
            "blend": {"mode": mode},
            "objects": objects,
        }

    def _synth_inputs(self, layouts: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        """S's inputs: RGBA cut-outs ``(B, K, 4, s, s)`` and the canvases with artefacts ``(B, 3, H, W)``."""
        cfg = self.config
        rgba = torch.stack(
            [torch.stack([torch.cat(_cutout(self.foregrounds, o["index"], cfg.fg_size, cfg.fg_fill)) for o in p["objects"]]) for p in layouts]
        ).to(self.device)
        return rgba, _canvas(layouts, self.foregrounds, self.backgrounds, device=self.device)

    def _place(self, layouts: Sequence[Mapping[str, Any]], canvas: torch.Tensor, rgba: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """S's placements ``(B, K, 6)`` and photometrics ``(B, K, 4)`` (or None), differentiable."""
        assert self.synthesizer is not None
        out = self.synthesizer(rgba, canvas)
        photo = to_color_params(out["photometric"]) if "photometric" in out else None
        # translation relative to a random anchor per object (see the module docstring): at raw
        # output 0 an object sits at its anchor, and S moves it anywhere inside the range
        u = torch.tensor([[o["anchor"] for o in p["objects"]] for p in layouts], dtype=out["raw"].dtype, device=self.device)
        u = u.clamp(ANCHOR_EPS, 1.0 - ANCHOR_EPS)
        lo = self._aff_lo[1:3].to(self.device, out["raw"].dtype)
        hi = self._aff_hi[1:3].to(self.device, out["raw"].dtype)
        t = torch.lerp(lo, hi, torch.sigmoid(torch.logit(u) + out["raw"][..., 1:3]))
        params = torch.cat([out["params"][..., :1], t, out["params"][..., 3:]], -1)
        return params, photo

    def composite(self, layouts: Sequence[Mapping[str, Any]], affine: torch.Tensor | None = None, photometric: torch.Tensor | None = None) -> SceneComposite:
        """Render ``layouts`` (with ``affine``/``photometric`` overriding their numbers) as one batch."""
        return _composite(layouts, self.foregrounds, self.backgrounds, affine=affine, photometric=photometric, device=self.device)[1]

    def _targets(self, comp: SceneComposite, layouts: Sequence[Mapping[str, Any]]) -> list[dict[str, torch.Tensor]]:
        return [{k: v.to(self.device) for k, v in _labels(comp, i, p, self.label_map)[0].items()} for i, p in enumerate(layouts)]

    def _frozen(self, *modules: nn.Module | None) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        for m in modules:
            if m is not None:
                stack.enter_context(freeze(m))
        return stack

    def _bound(self, loss_t: torch.Tensor) -> torch.Tensor:
        tau = self.config.s_loss_bound
        return loss_t if tau is None else tau * torch.tanh(loss_t / tau)

    # ------------------------------------------------------------------ single steps

    def s_step(self) -> dict[str, float]:
        """One S step on ``batch_size`` random fg/bg pairs, T and D frozen (see the module docstring).

        Returns ``loss_s`` (minimised), ``loss_t`` (T's loss on the composites), ``loss_adv`` (with D),
        ``objects`` (labelled objects per composite) and ``skipped`` (1 when the loss was not finite).
        """
        if self.synthesizer is None or self.opt_s is None:
            raise InputError("there is no synthesizer to train (synthesizer='random')", field="synthesizer")
        cfg = self.config
        step = self.counters["s"]
        self.counters["s"] += 1
        g = make_generator(cfg.seed, "S-pairs", step)
        layouts = [self.sample_layout(g, self.completed_cycles + 1) for _ in range(cfg.batch_size)]
        rgba, canvas = self._synth_inputs(layouts)
        out: dict[str, float] = {}
        with scoped_rng(derive_seed(cfg.seed, "S-dropout", step), self.device), self._frozen(self.target.model, self.discriminator):
            self.synthesizer.train()
            affine, photo = self._place(layouts, canvas, rgba)
            comp = _composite(layouts, self.foregrounds, self.backgrounds, affine=affine, photometric=photo, canvas_in=canvas, device=self.device)[1]
            targets = self._targets(comp, layouts)
            loss_t = self.target.loss(comp.image, targets)
            loss = -self._bound(loss_t)
            if self.discriminator is not None:
                adv = g_loss(self.discriminator(comp.image))
                loss = loss + cfg.adv_weight * adv
                out["loss_adv"] = float(adv.detach())
            out.update(loss_s=float(loss.detach()), loss_t=float(loss_t.detach()), objects=sum(int(t["labels"].numel()) for t in targets) / len(targets))
            self.opt_s.zero_grad(set_to_none=True)
            if torch.isfinite(loss):
                loss.backward()
                self.opt_s.step()
                out["skipped"] = 0.0
            else:
                out["skipped"] = 1.0
        return out

    def _fake_batch(self, g: torch.Generator, n: int, dropout_seed: int) -> torch.Tensor:
        """``n`` composites of the frozen S (or random placements), no gradient."""
        layouts = [self.sample_layout(g, self.completed_cycles + 1) for _ in range(n)]
        with torch.no_grad():
            if self.synthesizer is None:
                return self.composite(layouts).image
            rgba, canvas = self._synth_inputs(layouts)
            with scoped_rng(dropout_seed, self.device), self._generation_mode():
                affine, photo = self._place(layouts, canvas, rgba)
            return _composite(layouts, self.foregrounds, self.backgrounds, affine=affine, photometric=photo, canvas_in=canvas, device=self.device)[1].image

    def d_step(self, real: torch.Tensor | None = None, fake: torch.Tensor | None = None) -> dict[str, float]:
        """One D step: ``real`` images vs ``fake`` composites (both ``(B, 3, H, W)``; by default
        ``batch_size`` random real images and composites of the frozen S). Returns ``loss_d``."""
        if self.discriminator is None or self.opt_d is None:
            raise InputError("the discriminator is off (discriminator: true with synthesizer: terse)", field="discriminator")
        cfg = self.config
        step = self.counters["d"]
        self.counters["d"] += 1
        g = make_generator(cfg.seed, "D", step)
        if real is None:
            real = self.real_images[torch.randint(self.real_images.shape[0], (cfg.batch_size,), generator=g)]
        if fake is None:
            fake = self._fake_batch(g, cfg.batch_size, derive_seed(cfg.seed, "D-dropout", step))
        self.discriminator.train()
        loss = d_loss(self.discriminator(real.to(self.device)), self.discriminator(fake.detach().to(self.device)))
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return {"loss_d": float(loss.detach())}

    @contextlib.contextmanager
    def _generation_mode(self):
        """S in ``eval()`` (BatchNorm running statistics) with its dropout layers active; restored after."""
        s = self.synthesizer
        if s is None:
            yield
            return
        saved = [(m, m.training) for m in s.modules()]
        try:
            s.eval()
            for m in s.modules():
                if isinstance(m, nn.modules.dropout._DropoutNd):
                    m.train()
            yield
        finally:
            for m, flag in saved:
                m.training = flag

    def generate(self, n: int, *, keep: str | None = None, generator: torch.Generator | None = None) -> list[SyntheticScene]:
        """Generate composites and keep up to ``n`` (``keep`` ``"hard"`` or ``"all"``, default the
        config's), trying at most ``max_candidates_per_cycle``. ``self.last_generation`` then holds
        ``tried``, ``scored`` (with labelled objects), ``hard`` and ``kept``."""
        cfg = self.config
        keep = keep or cfg.keep
        if keep not in ("hard", "all"):
            raise InputError(f"keep must be 'hard' or 'all', got {keep!r}", field="keep")
        cycle = self.completed_cycles + 1
        g = generator if generator is not None else make_generator(cfg.seed, "generate", cycle)
        kept: list[SyntheticScene] = []
        tried = scored = hard_count = 0
        while len(kept) < n and tried < cfg.max_candidates_per_cycle:
            b = min(cfg.batch_size, cfg.max_candidates_per_cycle - tried)
            layouts = [self.sample_layout(g, cycle) for _ in range(b)]
            dropout_seed = int(torch.randint(0, 2**62, (), generator=g))
            canvas = None
            if self.synthesizer is not None:
                with torch.no_grad():
                    rgba, canvas = self._synth_inputs(layouts)
                    with scoped_rng(dropout_seed, self.device), self._generation_mode():
                        affine, photo = self._place(layouts, canvas, rgba)
                for i, p in enumerate(layouts):
                    for k, o in enumerate(p["objects"]):
                        o["affine"] = affine[i, k].detach().cpu().tolist()
                        if photo is not None:
                            o["photometric"] = photo[i, k].detach().cpu().tolist()
            # the canvases S saw are reused on the CPU only (replay renders on the CPU)
            reuse = canvas is not None and self.device.type == "cpu"
            # one scene at a time, through replay's code, so a kept scene replays bit-identically
            rendered = [
                _render_scene(p, self.foregrounds, self.backgrounds, self.label_map, canvas[i : i + 1] if reuse else None)
                for i, p in enumerate(layouts)
            ]
            has = [i for i, s in enumerate(rendered) if s.target["labels"].numel()]
            conf: dict[int, torch.Tensor] = {}
            if has:
                images = torch.stack([rendered[i].image for i in has]).to(self.device)
                tgts = [{k: v.to(self.device) for k, v in rendered[i].target.items()} for i in has]
                with self._frozen(self.target.model), torch.no_grad():
                    for i, c in zip(has, self.target.confidence(images, tgts)):
                        conf[i] = c.detach().float().cpu()
            for i, scene in enumerate(rendered):
                tried += 1
                if i in conf:
                    scored += 1
                    is_hard = bool((conf[i] < cfg.hard_threshold).any())
                    hard_count += int(is_hard)
                    if keep == "all" or is_hard:
                        scene.confidence = conf[i]
                        scene.params["confidence"] = [float(v) for v in conf[i].tolist()]
                        scene.params["index"] = tried - 1
                        kept.append(scene)
                if len(kept) >= n:
                    break
        self.last_generation = {"tried": tried, "scored": scored, "hard": hard_count, "kept": len(kept)}
        return kept

    # ------------------------------------------------------------------ phases

    def _d_steps(self) -> int:
        cfg = self.config
        if cfg.d_steps is not None:
            return cfg.d_steps
        return cfg.t_epochs * math.ceil(self.real_images.shape[0] / cfg.batch_size)

    def cycle(self, progress: Progress | None = None) -> dict[str, Any]:
        """One A.2 cycle: S steps (T, D frozen) -> generate and keep -> T epochs at ``real_ratio``
        -> D steps (S frozen). Appends the kept scenes and the cycle's record; returns the record."""
        cfg = self.config
        cycle = self.completed_cycles + 1
        record: dict[str, Any] = {"cycle": cycle}
        t0 = time.perf_counter()
        rows = []
        if self.synthesizer is not None:
            for i in range(cfg.s_steps):
                rows.append(self.s_step())
                if progress is not None:
                    progress(f"cycle {cycle}: synthesizer", i + 1, cfg.s_steps)
        t1 = time.perf_counter()
        new = self.generate(cfg.hard_per_cycle, generator=make_generator(cfg.seed, "generate", cycle))
        t2 = time.perf_counter()
        self.scenes.extend(new)
        gen = self.last_generation
        if progress is not None:
            progress(f"cycle {cycle}: generation", gen["kept"], cfg.hard_per_cycle)
        syn_images = torch.stack([s.image for s in self.scenes]) if self.scenes else None
        syn_targets = [s.target for s in self.scenes] if self.scenes else None
        t_progress = (lambda step, total, loss: progress(f"cycle {cycle}: target", step, total)) if progress is not None else None
        self.target.model.train()  # train_detector leaves the mode to the caller (BatchNorm statistics)
        log = train_detector(
            self.target,
            self.real_images,
            self.real_targets,
            synthetic_images=syn_images,
            synthetic_targets=syn_targets,
            ratio=cfg.real_ratio,
            epochs=cfg.t_epochs,
            batch_size=cfg.t_batch_size,
            lr=cfg.lr_t,
            augment=cfg.t_augment,
            seed=derive_seed(cfg.seed, "T", cycle),
            progress=t_progress,
        )
        self.target.model.eval()
        t3 = time.perf_counter()
        d_rows = []
        if self.discriminator is not None:
            n_d = self._d_steps()
            for i in range(n_d):
                d_rows.append(self.d_step())
                if progress is not None:
                    progress(f"cycle {cycle}: discriminator", i + 1, n_d)
        t4 = time.perf_counter()
        record.update(
            s_steps=len(rows),
            s_loss=_mean(rows, "loss_s"),
            s_target_loss=_mean(rows, "loss_t"),
            s_adv_loss=_mean(rows, "loss_adv"),
            s_objects_per_image=_mean(rows, "objects"),
            s_skipped=int(sum(r.get("skipped", 0.0) for r in rows)),
            candidates_tried=gen["tried"],
            candidates_scored=gen["scored"],
            candidates_hard=gen["hard"],
            hard_fraction=gen["hard"] / gen["scored"] if gen["scored"] else None,
            kept=gen["kept"],
            kept_total=len(self.scenes),
            kept_objects=sum(int(s.target["labels"].numel()) for s in new),
            t_loss=log.epoch_losses[-1] if log.epoch_losses else None,
            t_steps=log.steps,
            d_steps=len(d_rows),
            d_loss=_mean(d_rows, "loss_d"),
            s_seconds=t1 - t0,
            generate_seconds=t2 - t1,
            t_seconds=t3 - t2,
            d_seconds=t4 - t3,
        )
        record = {k: v for k, v in record.items() if v is not None}
        self.history.append(record)
        self.completed_cycles = cycle
        return record

    # ------------------------------------------------------------------ checkpoints and the run

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue (model and optimiser states, history, kept scenes' params, counters)."""
        state: dict[str, Any] = {
            "cycle": self.completed_cycles,
            "config": json.dumps(self.config.to_dict(), sort_keys=True),
            "target": self.target.model.state_dict(),
            "history": json.dumps(self.history),
            "scenes": json.dumps([s.params for s in self.scenes]),
            "counters": dict(self.counters),
        }
        if self.synthesizer is not None and self.opt_s is not None:
            state.update(synthesizer=self.synthesizer.state_dict(), opt_s=self.opt_s.state_dict())
        if self.discriminator is not None and self.opt_d is not None:
            state.update(discriminator=self.discriminator.state_dict(), opt_d=self.opt_d.state_dict())
        return state

    def load_state(self, state: Mapping[str, Any], path: Path | None = None) -> None:
        """Restore from :meth:`state_dict` (kept scenes are replayed from their params).

        Raises:
            InputError: the checkpoint was made with another configuration (``cycles`` may differ).
        """
        saved = json.loads(state["config"])
        current = self.config.to_dict()
        diff = sorted(k for k in set(saved) | set(current) if k != "cycles" and saved.get(k) != current.get(k))
        if diff:
            detail = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in diff)
            raise InputError(f"the run was started with a different configuration ({detail}); resume with the same settings", file=path, field=diff[0])
        self.target.model.load_state_dict(state["target"])
        if self.synthesizer is not None and self.opt_s is not None:
            self.synthesizer.load_state_dict(state["synthesizer"])
            self.opt_s.load_state_dict(state["opt_s"])
        if self.discriminator is not None and self.opt_d is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.history = json.loads(state["history"])
        self.counters = {k: int(v) for k, v in state["counters"].items()}
        self.completed_cycles = int(state["cycle"])
        self.scenes = [replay_scene(p, self.foregrounds, self.backgrounds, self.label_map) for p in json.loads(state["scenes"])]

    def run(
        self,
        out_dir: str | Path | None = None,
        *,
        resume: bool = False,
        progress: Progress | None = None,
        max_cycles: int | None = None,
    ) -> SceneTerseResult:
        """Run cycles until ``config.cycles`` are done (or ``max_cycles`` in total, to stop early).

        With ``out_dir``: ``config.yaml``, and after every cycle ``checkpoint.pt``, ``history.json``
        and ``scenes.json`` (all written atomically). ``resume=True`` continues from the checkpoint.

        Raises:
            InputError: ``out_dir`` already holds a checkpoint and ``resume`` is false; the
                checkpoint has another configuration; ``resume`` without ``out_dir``.
        """
        cfg = self.config
        out = Path(out_dir) if out_dir is not None else None
        if out is not None:
            ckpt = out / "checkpoint.pt"
            if ckpt.is_file():
                if not resume:
                    raise InputError("the run folder already holds a checkpoint; resume it or choose another folder", file=ckpt)
                self.load_state(load_checkpoint(ckpt, map_location=self.device), ckpt)
            atomic_write_text(out / "config.yaml", cfg.to_yaml())
        elif resume:
            raise InputError("resuming needs a run folder", field="out_dir")
        stop = cfg.cycles if max_cycles is None else min(cfg.cycles, max_cycles)
        while self.completed_cycles < stop:
            self.cycle(progress)
            if out is not None:
                save_checkpoint(out / "checkpoint.pt", self.state_dict())
                atomic_write_json(out / "history.json", self.history)
                atomic_write_json(out / "scenes.json", [s.params for s in self.scenes], indent=None)
        return SceneTerseResult(list(self.scenes), list(self.history), self.completed_cycles, out)


# --------------------------------------------------------------------------------------------
# writing


def write_synthetic_coco(scenes: Sequence[SyntheticScene], out_dir: str | Path, label_map: LabelMap) -> Path:
    """Write ``scenes`` as a COCO data set: ``out_dir/images/000001.png`` ... (8-bit PNG) and
    ``out_dir/annotations.json`` (box-only annotations of the labelled objects with their
    generation confidence in ``attributes``; every image's replay params in its ``attributes``
    under ``"params"``), through :func:`synthloop.data.coco.write_coco_json`. Everything appears
    at once (staged folder). Returns the path of ``annotations.json``."""
    from synthloop.data._io import staged_dir
    from synthloop.data.coco import ANNOTATIONS_FILE, write_coco_json
    from synthloop.data.images import encode_png
    from synthloop.utils.atomic import atomic_write_bytes

    out_dir = Path(out_dir)
    entries = []
    with staged_dir(out_dir) as stage:
        for i, s in enumerate(scenes):
            img = s.image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            name = f"images/{i + 1:06d}.png"
            atomic_write_bytes(stage / name, encode_png(np.ascontiguousarray(img)))
            H, W = img.shape[:2]
            anns = []
            boxes = s.target["boxes"].detach().double().cpu().reshape(-1, 4).tolist()
            conf = s.confidence.detach().cpu().tolist() if s.confidence.numel() == len(boxes) else [float("nan")] * len(boxes)
            for (x0, y0, x1, y1), label, c in zip(boxes, s.target["labels"].tolist(), conf):
                attrs = {"confidence": float(c)} if math.isfinite(c) else {}
                anns.append(Annotation(category_id=label_map.category_id(int(label)), bbox=(x0, y0, x1 - x0, y1 - y0), attributes=attrs))
            entries.append(ImageEntry(id=i + 1, file_name=name, width=W, height=H, annotations=anns, attributes={"params": s.params}))
        write_coco_json(stage / ANNOTATIONS_FILE, entries, label_map.categories, info={"description": "TERSE synthetic composites (synthloop.loops.terse_detection)"})
    return out_dir / ANNOTATIONS_FILE


__all__ = [
    "PhotometricRangesConfig",
    "SceneRangesConfig",
    "SceneTerse",
    "SceneTerseConfig",
    "SceneTerseResult",
    "SyntheticScene",
    "replay_scene",
    "write_synthetic_coco",
]
