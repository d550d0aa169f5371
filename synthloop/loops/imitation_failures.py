"""Failure mining and re-simulation for imitation training (Kishore et al., ICCV-W 2021).

:func:`mine_failures` compares a detector's predictions on real validation images with their
ground truth and returns one :class:`Failure` per problem, exclusive kinds:

- ``false_negative``: a ground-truth object whose best confident (score >= ``score_threshold``)
  detection of its own class overlaps it by IoU < :data:`MIN_LOC_IOU` (0.1): nothing was found there.
- ``poor_localisation``: the best such detection has IoU in ``[MIN_LOC_IOU, loc_iou)``: the object
  was seen but boxed badly (with ``loc_iou`` above the AP threshold this includes boxes that count
  at AP50 but not at AP80).
- ``false_positive``: a confident detection with IoU < ``iou_threshold`` to every ground-truth
  object of its class that is not the best match of a poorly localised object (so an off-by-N-px
  box is one failure, not two). When it overlaps an object of another class by IoU >= 0.1 the
  record names that class (``true_category_id``): a confusion rather than a hallucination.

Each record carries the scene attributes the re-simulation needs: class, box, size, aspect,
normalised centre, occlusion / truncation (from the annotation's ``occlusion`` / ``truncation``
attributes when present, else from the boxes: the share of the box covered by other ground-truth
boxes, and 1.0 when the box touches the image border -- a box alone cannot tell how much is cut
off), the mean colour of a ring around the box outside every ground-truth box, and a small crop for
the report. The crop is val pixels: it never reaches a training image (re-simulation reads only the
statistics; ``tests/loops/test_imitation_failures.py`` checks that changing it changes nothing).

:func:`resimulate` turns one failure into ``per_failure`` scenes through the TERSE scene loop's
compositor (:class:`~synthloop.compose.params.SceneParams` with a frame, composited and replayed by
:func:`~synthloop.loops.terse_detection_scenes.replay_scene`):

- the failure's class: a random instance of that class from the bank (false negatives, poor
  localisation, confusions), scaled so its box matches the failure's width and height times a
  common scale factor in ``scale`` and an aspect factor in ``aspect``, its centre the failure's
  moved by at most ``shift`` of the canvas per axis (clamped into the canvas), rotated by at most
  ``rotation`` degrees; drawn last (on top), except that a failure occluded by >= 0.1 gets one
  distractor drawn over it at an offset that covers about the same share;
- the background: of ``background_candidates`` random bank backgrounds, the one whose ring around
  the new box is closest in mean colour to the failure's ring (context without copying val pixels);
- 0-3 (``distractors``) labelled objects of other classes at random places and sizes (the random
  paste ranges), as the real scenes hold several objects;
- a hallucination (false positive with no object under it) becomes a *hard negative*: the similar
  background with nothing of the hallucinated class, the distractors kept off the box, so the
  detector learns that such a region is background (pasting the class nearby would teach its look,
  which the detector already fires on).

:func:`random_scene` is the control that keeps everything but the failure: the same compositor,
style, banks and random-paste ranges, 1 + ``distractors`` objects of random classes at random
places, one random background (``meta["random"]`` instead of ``meta["failure"]``).

Every scene's params record the failure (``meta["failure"]``) and the drawn factors
(``meta["jitter"]``) so tests and reports can check the bounds; all randomness comes from the
generator passed in (the loop derives it from ``(seed, cycle, failure index)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from synthloop.compose.params import BlendSpec, CutoutFrame, ObjectParams, SceneParams
from synthloop.errors import InputError

MIN_LOC_IOU = 0.1
KINDS = ("false_negative", "false_positive", "poor_localisation")
RANDOM_SCALE = (0.45, 1.1)  # the random paste ranges (SceneRangesConfig defaults) for distractors
RANDOM_SHIFT = 0.4


@dataclass
class Failure:
    """One failure on a validation image (see the module docstring). ``box`` xyxy pixels;
    ``center`` normalised to [0, 1]; ``background_mean`` RGB in [0, 1]; ``crop`` uint8 ``(3, s, s)``
    of the val image around the box (for the report only)."""

    index: int
    image_index: int
    image_id: int
    kind: str
    category_id: int
    box: list[float]
    score: float
    iou: float
    size: list[float]
    aspect: float
    center: list[float]
    occlusion: float
    truncation: float
    background_mean: list[float]
    true_category_id: int | None = None
    crop: torch.Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("crop")
        return d


def _ring_mean(image: torch.Tensor, box: Sequence[float], others: torch.Tensor, margin: float) -> list[float]:
    """Mean colour of the pixels within ``margin`` px of ``box`` but outside it and outside every box in ``others``."""
    _, H, W = image.shape
    x0, y0, x1, y1 = box
    ys = torch.arange(H, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(W, dtype=torch.float32)[None, :] + 0.5
    outer = (xs >= x0 - margin) & (xs <= x1 + margin) & (ys >= y0 - margin) & (ys <= y1 + margin)
    ring = outer & ~((xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1))
    for ox0, oy0, ox1, oy1 in others.tolist():
        ring &= ~((xs >= ox0) & (xs <= ox1) & (ys >= oy0) & (ys <= oy1))
    if not bool(ring.any()):
        ring = outer if bool(outer.any()) else torch.ones(H, W, dtype=torch.bool)
    return [round(float(v), 5) for v in image[:, ring].mean(1)]


def _covered(box: Sequence[float], others: torch.Tensor, shape: tuple[int, int]) -> float:
    """Share of ``box`` covered by the union of ``others`` (rasterised at pixel centres)."""
    H, W = shape
    x0, y0, x1, y1 = box
    ys = torch.arange(H, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(W, dtype=torch.float32)[None, :] + 0.5
    inside = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
    if not bool(inside.any()) or others.numel() == 0:
        return 0.0
    cover = torch.zeros(H, W, dtype=torch.bool)
    for ox0, oy0, ox1, oy1 in others.tolist():
        cover |= (xs >= ox0) & (xs <= ox1) & (ys >= oy0) & (ys <= oy1)
    return round(float((cover & inside).sum()) / float(inside.sum()), 4)


def _crop(image: torch.Tensor, box: Sequence[float], size: int) -> torch.Tensor:
    _, H, W = image.shape
    x0, y0, x1, y1 = box
    m = 0.5 * max(x1 - x0, y1 - y0, 4.0)
    a, b = max(math.floor(x0 - m), 0), min(math.ceil(x1 + m), W)
    c, d = max(math.floor(y0 - m), 0), min(math.ceil(y1 + m), H)
    patch = image[:, c:d, a:b] if (d > c and b > a) else image
    out = F.interpolate(patch[None].float(), size=(size, size), mode="bilinear", align_corners=False)[0]
    return out.clamp(0, 1).mul(255).round().to(torch.uint8)


def _attr(attrs: Mapping[str, Any] | None, *names: str) -> float | None:
    for n in names:
        if attrs is not None and isinstance(attrs.get(n), (int, float)) and not isinstance(attrs.get(n), bool):
            return float(attrs[n])
    return None


def _record(
    kind: str, image: torch.Tensor, gt: torch.Tensor, box: torch.Tensor, exclude: int | None, attrs: Mapping[str, Any] | None, **kw: Any
) -> dict[str, Any]:
    _, H, W = image.shape
    b = [float(v) for v in box.tolist()]
    w, h = max(b[2] - b[0], 1e-6), max(b[3] - b[1], 1e-6)
    others = torch.cat([gt[:exclude], gt[exclude + 1 :]]) if exclude is not None else gt
    occ = _attr(attrs, "occlusion")
    if occ is None:
        vis = _attr(attrs, "visibility")
        occ = 1.0 - vis if vis is not None else _covered(b, others, (H, W))
    trunc = _attr(attrs, "truncation")
    if trunc is None:
        trunc = 1.0 if (b[0] <= 1 or b[1] <= 1 or b[2] >= W - 1 or b[3] >= H - 1) else 0.0
    margin = max(4.0, 0.25 * max(w, h))
    return dict(
        kind=kind, box=[round(v, 3) for v in b], size=[round(w, 3), round(h, 3)], aspect=round(w / h, 4),
        center=[round((b[0] + b[2]) / 2 / W, 5), round((b[1] + b[3]) / 2 / H, 5)], occlusion=float(occ), truncation=float(trunc),
        background_mean=_ring_mean(image, b, gt, margin), **kw,
    )  # fmt: skip


def mine_failures(
    images: torch.Tensor,
    targets: Sequence[Mapping[str, torch.Tensor]],
    predictions: Sequence[Mapping[str, torch.Tensor]],
    *,
    category_ids: Sequence[int],
    image_ids: Sequence[int] | None = None,
    attributes: Sequence[Sequence[Mapping[str, Any]]] | None = None,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.5,
    loc_iou: float = 0.7,
    crop_size: int = 48,
) -> list[Failure]:
    """Every failure of ``predictions`` (one dict per image: ``boxes``, ``labels`` 1..C, ``scores``)
    against ``targets`` on ``images`` ``(N, 3, H, W)``; ``category_ids[label - 1]`` is a label's COCO
    id; ``attributes[i][j]`` the optional annotation attributes of object ``j`` of image ``i``.
    Records come in image order, then objects, then detections (see the module docstring)."""
    if len(targets) != images.shape[0] or len(predictions) != images.shape[0]:
        raise InputError(f"{images.shape[0]} images, {len(targets)} targets and {len(predictions)} predictions", field="predictions")
    if not MIN_LOC_IOU <= loc_iou <= 1.0:
        raise InputError(f"loc_iou must lie in [{MIN_LOC_IOU}, 1], got {loc_iou}", field="loc_iou")
    out: list[Failure] = []
    for i in range(images.shape[0]):
        image = images[i].detach().float().cpu()
        gt = torch.as_tensor(targets[i]["boxes"]).float().reshape(-1, 4).cpu()
        gl = torch.as_tensor(targets[i]["labels"]).long().reshape(-1).cpu()
        p = predictions[i]
        keep = torch.as_tensor(p["scores"]).float().cpu() >= score_threshold
        pb = torch.as_tensor(p["boxes"]).float().reshape(-1, 4).cpu()[keep]
        pl = torch.as_tensor(p["labels"]).long().reshape(-1).cpu()[keep]
        ps = torch.as_tensor(p["scores"]).float().cpu()[keep]
        iou = box_iou(gt, pb) if gt.numel() and pb.numel() else torch.zeros(gt.shape[0], pb.shape[0])
        same = gl[:, None] == pl[None, :]
        iou_same = torch.where(same, iou, torch.zeros_like(iou))
        claimed: set[int] = set()
        recs: list[dict[str, Any]] = []
        attrs = attributes[i] if attributes is not None else None
        for j in range(gt.shape[0]):
            best, k = (float(iou_same[j].max()), int(iou_same[j].argmax())) if pb.shape[0] else (0.0, -1)
            a = attrs[j] if attrs is not None and j < len(attrs) else None
            cat = int(category_ids[int(gl[j]) - 1])
            if best < MIN_LOC_IOU:
                recs.append(_record("false_negative", image, gt, gt[j], j, a, category_id=cat, score=0.0, iou=round(best, 4)))
            elif best < loc_iou:
                claimed.add(k)
                recs.append(_record("poor_localisation", image, gt, gt[j], j, a, category_id=cat, score=round(float(ps[k]), 4), iou=round(best, 4)))
            else:
                claimed.add(k)
        for k in range(pb.shape[0]):
            if k in claimed or (iou_same.shape[0] and float(iou_same[:, k].max()) >= iou_threshold):
                continue
            true_cat = None
            if gt.shape[0] and float(iou[:, k].max()) >= MIN_LOC_IOU:
                j = int(iou[:, k].argmax())
                true_cat = int(category_ids[int(gl[j]) - 1]) if int(gl[j]) != int(pl[k]) else None
            cat = int(category_ids[int(pl[k]) - 1])
            best = float(iou_same[:, k].max()) if iou_same.shape[0] else 0.0
            recs.append(
                _record(
                    "false_positive", image, gt, pb[k], None, None, category_id=cat, score=round(float(ps[k]), 4), iou=round(best, 4), true_category_id=true_cat
                )
            )
        image_id = int(image_ids[i]) if image_ids is not None else i
        for r in recs:
            out.append(Failure(index=len(out), image_index=i, image_id=image_id, crop=_crop(image, r["box"], crop_size), **r))
    return out


# --------------------------------------------------------------------------------------------
# re-simulation


@dataclass(frozen=True)
class Jitter:
    """Perturbation bounds around a failure (see the module docstring)."""

    scale: tuple[float, float] = (0.8, 1.25)
    aspect: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.1
    rotation: float = 10.0
    distractors: tuple[int, int] = (0, 3)
    background_candidates: int = 4


@dataclass(frozen=True)
class SceneStyle:
    """How a re-simulated scene is composited (the random paste's choices by default)."""

    blend_modes: tuple[str, ...] = ("none", "alpha", "gaussian", "box", "motion")
    photometric: bool = True
    brightness: tuple[float, float] = (0.7, 1.3)
    contrast: tuple[float, float] = (0.7, 1.3)
    fg_size: int = 64
    fg_fill: float = 0.8
    cleanup_sigma: float = 1.0
    cleanup_mu: float = 0.5
    min_visibility: float = 0.5


class InstanceIndex:
    """Instances of a foreground bank by category, and each cut-out's size at scale 1 in the frame."""

    def __init__(self, foregrounds: Any, style: SceneStyle):
        if foregrounds is None or len(foregrounds) == 0:
            raise InputError("the foreground bank is empty", field="foregrounds")
        self.foregrounds = foregrounds
        self.style = style
        self.by_category: dict[int, list[int]] = {}
        for i in range(len(foregrounds)):
            self.by_category.setdefault(int(foregrounds.category_of(i)), []).append(i)
        self._sizes: dict[int, tuple[float, float]] = {}

    def base_size(self, index: int) -> tuple[float, float]:
        """``(w, h)`` px of instance ``index``'s alpha box when pasted at scale 1 (longer side = fill * size)."""
        if index not in self._sizes:
            _, alpha = self.foregrounds.tensor(index)
            a = torch.as_tensor(alpha).reshape(-1, *alpha.shape[-2:])[0] > 0.5
            ys, xs = torch.nonzero(a, as_tuple=True)
            h0, w0 = a.shape
            bw = float(xs.max() - xs.min() + 1) if xs.numel() else float(w0)
            bh = float(ys.max() - ys.min() + 1) if ys.numel() else float(h0)
            longer = self.style.fg_fill * self.style.fg_size / max(h0, w0)
            self._sizes[index] = (bw * longer, bh * longer)
        return self._sizes[index]


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64))


def _pick(g: torch.Generator, items: Sequence[int]) -> int:
    return int(items[int(torch.randint(len(items), (), generator=g))])


def _photometric(g: torch.Generator, style: SceneStyle) -> list[float] | None:
    if not style.photometric:
        return None
    return [_u(g, *style.brightness), _u(g, *style.contrast), 1.0, 0.0]


def _background(
    g: torch.Generator, backgrounds: Any, canvas: tuple[int, int], box: Sequence[float], target: Sequence[float], k: int
) -> tuple[dict[str, Any], float]:
    """Of ``k`` random backgrounds, the one whose ring around ``box`` is closest in mean colour to ``target``."""
    best, best_d = None, math.inf
    w, h = box[2] - box[0], box[3] - box[1]
    margin = max(4.0, 0.25 * max(w, h))
    for _ in range(max(1, k)):
        params = backgrounds.sample_one(canvas, g)
        img = torch.from_numpy(np.asarray(backgrounds.render_one(params, canvas), dtype=np.float32)).permute(2, 0, 1)
        mean = _ring_mean(img, box, torch.empty(0, 4), margin)
        d = math.dist(mean, target)
        if d < best_d:
            best, best_d = params, d
    assert best is not None
    return best, round(best_d, 5)


def _object(g: torch.Generator, index: int, cat: int, affine: list[float], style: SceneStyle, blend: BlendSpec) -> ObjectParams:
    return ObjectParams(int(index), int(cat), [float(v) for v in affine], photometric=_photometric(g, style), blend=blend, cleanup=True)


def resimulate_possible(failure: Failure, index: InstanceIndex) -> bool:
    """False when the class to paste has no asset in the bank (:func:`resimulate` returns no scene)."""
    paste_cat = failure.category_id if failure.kind != "false_positive" else failure.true_category_id
    return paste_cat is None or paste_cat in index.by_category


def resimulate(
    failure: Failure, index: InstanceIndex, backgrounds: Any, canvas: tuple[int, int], g: torch.Generator, *, jitter: Jitter = Jitter(), per_failure: int = 2
) -> list[SceneParams]:
    """``per_failure`` scene params around ``failure`` (see the module docstring); draws only from ``g``."""
    H, W = canvas
    style = index.style
    cats = sorted(index.by_category)
    paste_cat = failure.category_id if failure.kind != "false_positive" else failure.true_category_id
    if not resimulate_possible(failure, index):
        return []  # the simulator has no asset of this class (the paper's first saturation reason)
    out = []
    for r in range(per_failure):
        f_scale, f_aspect = _u(g, *jitter.scale), _u(g, *jitter.aspect)
        cx = min(max(failure.center[0] + _u(g, -jitter.shift, jitter.shift), 0.0), 1.0)
        cy = min(max(failure.center[1] + _u(g, -jitter.shift, jitter.shift), 0.0), 1.0)
        angle = _u(g, -jitter.rotation, jitter.rotation)
        w = failure.size[0] * f_scale * math.sqrt(f_aspect)
        h = failure.size[1] * f_scale / math.sqrt(f_aspect)
        box = [cx * W - w / 2, cy * H - h / 2, cx * W + w / 2, cy * H + h / 2]
        blend = BlendSpec(style.blend_modes[int(torch.randint(len(style.blend_modes), (), generator=g))])  # one per scene (the batched compositor's rule)
        bg, bg_dist = _background(g, backgrounds, canvas, box, failure.background_mean, jitter.background_candidates)
        objects: list[ObjectParams] = []
        main: ObjectParams | None = None
        if paste_cat is not None:
            inst = _pick(g, index.by_category[paste_cat])
            bw, bh = index.base_size(inst)
            main = _object(g, inst, paste_cat, [angle, (cx - 0.5) * W, (cy - 0.5) * H, 0.0, w / bw, h / bh], style, blend)
        others = [c for c in cats if c != failure.category_id] or cats
        n_dis = int(torch.randint(jitter.distractors[0], jitter.distractors[1] + 1, (), generator=g))
        over = None
        if main is not None and failure.occlusion >= 0.1 and n_dis == 0:
            n_dis = 1
        for d in range(n_dis):
            inst = _pick(g, index.by_category[_pick(g, others)])
            s = _u(g, *RANDOM_SCALE)
            tx, ty = _u(g, -RANDOM_SHIFT, RANDOM_SHIFT), _u(g, -RANDOM_SHIFT, RANDOM_SHIFT)
            if main is not None and d == 0 and failure.occlusion >= 0.1:  # reproduce the occluder: overlap about the same share, drawn on top
                off = (1.0 - min(failure.occlusion, 0.9)) * w
                tx, ty = (cx * W + off - W / 2) / W, (cy - 0.5)
            elif failure.kind == "false_positive" and paste_cat is None:  # hard negative: keep the hallucinated region free
                for _ in range(10):
                    px, py = (0.5 + tx) * W, (0.5 + ty) * H
                    if not (box[0] - w / 2 <= px <= box[2] + w / 2 and box[1] - h / 2 <= py <= box[3] + h / 2):
                        break
                    tx, ty = _u(g, -RANDOM_SHIFT, RANDOM_SHIFT), _u(g, -RANDOM_SHIFT, RANDOM_SHIFT)
                else:
                    continue
            obj = _object(g, inst, index.foregrounds.category_of(inst), [_u(g, -jitter.rotation, jitter.rotation), tx * W, ty * H, 0.0, s, s], style, blend)
            if main is not None and d == 0 and failure.occlusion >= 0.1:
                over = obj
            else:
                objects.append(obj)
        if not objects and main is None:  # a hard negative needs one object to composite: the corner away from the box
            inst = _pick(g, index.by_category[_pick(g, others)])
            tx, ty = -RANDOM_SHIFT * math.copysign(1.0, cx - 0.5), -RANDOM_SHIFT * math.copysign(1.0, cy - 0.5)
            objects.append(_object(g, inst, index.foregrounds.category_of(inst), [0.0, tx * W, ty * H, 0.0, RANDOM_SCALE[0], RANDOM_SCALE[0]], style, blend))
        if main is not None:
            objects.append(main)
        if over is not None:
            objects.append(over)
        meta = {
            "failure": {"index": failure.index, "kind": failure.kind, "category_id": failure.category_id, "image_id": failure.image_id, "replica": r},
            "jitter": {"scale": f_scale, "aspect": f_aspect, "center": [cx, cy], "angle": angle, "box": box, "background_distance": bg_dist},
            "main_object": objects.index(main) if main is not None else None,
        }
        frame = CutoutFrame(style.fg_size, style.fg_fill, style.cleanup_sigma, style.cleanup_mu)
        out.append(SceneParams(canvas=(H, W), background=bg, objects=objects, frame=frame, min_visibility=style.min_visibility, meta=meta))
    return out


def random_scene(index: InstanceIndex, backgrounds: Any, canvas: tuple[int, int], g: torch.Generator, *, jitter: Jitter = Jitter()) -> SceneParams:
    """One scene anchored on nothing (the ``resimulate: random`` control, module docstring): 1 +
    ``jitter.distractors`` objects of random classes, each at a random place and size of the random
    paste ranges, rotated by at most ``jitter.rotation``; one blend; one random background."""
    H, W = canvas
    style = index.style
    cats = sorted(index.by_category)
    n = 1 + int(torch.randint(jitter.distractors[0], jitter.distractors[1] + 1, (), generator=g))
    blend = BlendSpec(style.blend_modes[int(torch.randint(len(style.blend_modes), (), generator=g))])
    bg = backgrounds.sample_one(canvas, g)
    objects = []
    for _ in range(n):
        inst = _pick(g, index.by_category[_pick(g, cats)])
        s = _u(g, *RANDOM_SCALE)
        tx, ty = _u(g, -RANDOM_SHIFT, RANDOM_SHIFT), _u(g, -RANDOM_SHIFT, RANDOM_SHIFT)
        objects.append(_object(g, inst, index.foregrounds.category_of(inst), [_u(g, -jitter.rotation, jitter.rotation), tx * W, ty * H, 0.0, s, s], style, blend))
    frame = CutoutFrame(style.fg_size, style.fg_fill, style.cleanup_sigma, style.cleanup_mu)
    return SceneParams(canvas=(H, W), background=bg, objects=objects, frame=frame, min_visibility=style.min_visibility, meta={"random": {"objects": n}})


__all__ = ["KINDS", "MIN_LOC_IOU", "Failure", "InstanceIndex", "Jitter", "SceneStyle", "mine_failures", "random_scene", "resimulate", "resimulate_possible"]
