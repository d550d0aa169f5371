"""Plausibility constraints for the TERSE scene loop, learned from the real set (issue 11).

Hard composites that transfer look like the real data: S (and the random sampler) may only place
objects as the real annotations show them. From the real boxes :func:`learn_constraints` takes

- the object scale: the range of the boxes' longer sides (px), as a range of the placement scale
  (a scale of 1 makes the letterboxed cut-out's longer side ``fg_fill * fg_size`` px);
- the aspect: tied to the source object (``sy = sx``: no squashing), the real boxes' aspect range
  recorded for reference;
- the overlap: the largest IoU between two boxes of one real image (0 when real objects never overlap);
- the rotation: ``|angle| <= max_rotation`` (A-Fast-RCNN's lesson: unbounded rotation fools a
  detector uselessly); shear 0;
- the position: the translation range shrunk so an object of the largest scale (rotated by the
  bound) stays inside the canvas, as real boxes do.

Ranges and the aspect tie hold by construction (:meth:`SceneConstraints.ranges`, :func:`tie_aspect`);
the overlap is enforced on every generated scene by dropping the later of two objects that overlap
more than the real set does (:func:`drop_overlaps`). :func:`violations` checks a scene.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.ops import box_iou

from synthloop.compose.params import SceneParams
from synthloop.compose.scene_batch import composite_batch
from synthloop.errors import InputError
from synthloop.models.synthesizer import ParamRanges

Range = tuple[float, float]
TOL = 1e-5


@dataclass(frozen=True)
class SceneConstraints:
    """What the real set allows (see the module docstring). ``scale`` is in placement units."""

    scale: Range
    max_iou: float
    max_rotation: float
    long_side_px: Range
    aspect_real: Range
    canvas: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    def ranges(self, base: ParamRanges, fg_extent: float) -> ParamRanges:
        """``base`` narrowed: angle within the bound, no shear, ``sx``/``sy`` the learned scale,
        ``tx``/``ty`` so a largest object (longer side ``fg_extent * scale_hi`` px, rotated) stays inside."""
        H, W = self.canvas
        a = min(self.max_rotation, max(abs(base.angle[0]), abs(base.angle[1])))
        c = math.cos(math.radians(a)) + math.sin(math.radians(a))  # a rotated square's extent grows by cos + sin
        half = 0.5 * fg_extent * self.scale[1] * c
        tx = (max(base.tx[0], -(W / 2 - half)), min(base.tx[1], W / 2 - half))
        ty = (max(base.ty[0], -(H / 2 - half)), min(base.ty[1], H / 2 - half))
        if tx[0] > tx[1] or ty[0] > ty[1]:
            raise InputError(f"objects of up to {2 * half:.0f} px do not fit inside the {W}x{H} canvas", field="constraints")
        return ParamRanges(angle=(-a, a), tx=tx, ty=ty, shear=(0.0, 0.0), sx=self.scale, sy=self.scale)


def learn_constraints(
    real_targets: Sequence[Mapping[str, torch.Tensor]], canvas: tuple[int, int], *, fg_size: int, fg_fill: float, max_rotation: float
) -> SceneConstraints:
    """Constraints from the real boxes (``{"boxes": (N, 4) xyxy}`` per image).

    Raises:
        InputError: no real box at all.
    """
    boxes = [torch.as_tensor(t["boxes"]).float().reshape(-1, 4) for t in real_targets]
    allb = torch.cat(boxes) if boxes else torch.empty(0, 4)
    if allb.shape[0] == 0:
        raise InputError("the real set has no boxes to learn plausibility constraints from", field="real_targets")
    w, h = (allb[:, 2] - allb[:, 0]).clamp_min(1e-6), (allb[:, 3] - allb[:, 1]).clamp_min(1e-6)
    long = torch.maximum(w, h)
    max_iou = 0.0
    for b in boxes:
        if b.shape[0] > 1:
            iou = box_iou(b, b)
            iou.fill_diagonal_(0.0)
            max_iou = max(max_iou, float(iou.max()))
    extent = fg_fill * fg_size
    return SceneConstraints(
        scale=(float(long.min()) / extent, float(long.max()) / extent),
        max_iou=round(max_iou, 6),
        max_rotation=float(max_rotation),
        long_side_px=(float(long.min()), float(long.max())),
        aspect_real=(float((w / h).min()), float((w / h).max())),
        canvas=(int(canvas[0]), int(canvas[1])),
    )


def tie_aspect(affine: torch.Tensor) -> torch.Tensor:
    """``(..., 6)`` placements with ``sy`` replaced by ``sx`` (the source object's aspect kept; differentiable)."""
    return torch.cat([affine[..., :5], affine[..., 4:5]], -1)


def full_boxes(alphas: torch.Tensor) -> torch.Tensor:
    """``(K, 1, H, W)`` per-object alpha -> ``(K, 4)`` xyxy boxes of ``alpha > 0.5`` (zeros when empty)."""
    K = alphas.shape[0]
    out = torch.zeros(K, 4)
    for k in range(K):
        ys, xs = torch.nonzero(alphas[k, 0].detach().cpu() > 0.5, as_tuple=True)
        if ys.numel():
            out[k] = torch.tensor([float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1])
    return out


def drop_overlaps(params: SceneParams, foregrounds: Any, backgrounds: Any, max_iou: float) -> tuple[SceneParams, int]:
    """``params`` without every object whose full box overlaps an earlier kept one by IoU > ``max_iou``
    (greedy in paste order); returns ``(params, number dropped)`` (the same object when none is)."""
    if len(params.objects) < 2:
        return params, 0
    with torch.no_grad():
        comp = composite_batch([params], foregrounds, backgrounds)[1]
    boxes = full_boxes(comp.alphas[0])
    iou = box_iou(boxes, boxes)
    keep: list[int] = []
    for k in range(len(params.objects)):
        if all(float(iou[k, j]) <= max_iou + TOL for j in keep):
            keep.append(k)
    if len(keep) == len(params.objects):
        return params, 0
    return dataclasses.replace(params, objects=[params.objects[k] for k in keep], meta=dict(params.meta)), len(params.objects) - len(keep)


def violations(params: SceneParams, boxes: torch.Tensor, c: SceneConstraints, ranges: ParamRanges) -> list[str]:
    """Every way ``params`` (with its objects' full ``boxes`` ``(K, 4)``) breaks ``c`` (empty: plausible)."""
    out = []
    for k, o in enumerate(params.objects):
        angle, tx, ty, shear, sx, sy = (float(v) for v in o.affine)
        if abs(angle) > c.max_rotation + TOL:
            out.append(f"object {k}: angle {angle:.3f} beyond +-{c.max_rotation}")
        if abs(shear) > TOL:
            out.append(f"object {k}: shear {shear:.4f}")
        if abs(sx - sy) > TOL:
            out.append(f"object {k}: aspect not tied (sx {sx:.4f}, sy {sy:.4f})")
        if not (c.scale[0] - TOL <= sx <= c.scale[1] + TOL):
            out.append(f"object {k}: scale {sx:.4f} outside {c.scale}")
        if not (ranges.tx[0] - TOL <= tx <= ranges.tx[1] + TOL and ranges.ty[0] - TOL <= ty <= ranges.ty[1] + TOL):
            out.append(f"object {k}: translation ({tx:.2f}, {ty:.2f}) outside the range")
    if boxes.shape[0] > 1:
        iou = box_iou(boxes.float(), boxes.float())
        iou.fill_diagonal_(0.0)
        if float(iou.max()) > c.max_iou + TOL:
            out.append(f"overlap IoU {float(iou.max()):.3f} > {c.max_iou}")
    return out


__all__ = ["SceneConstraints", "drop_overlaps", "full_boxes", "learn_constraints", "tie_aspect", "violations"]
