"""Deterministic rendering of :class:`~synthloop.compose.params.SceneParams` into pixels + labels.

``render_scene(params, instances, backgrounds)`` is a pure function of its inputs: no RNG, so a
scene replays bit-identically from its params. It uses the NumPy/OpenCV kernels of
:mod:`synthloop.functional.fast` (same semantics as the differentiable torch ops, ~10x faster on a
CPU), and warps each object only into the window of the canvas it covers (plus a margin for
feathering). The differentiable, batched counterpart for the learning loops is
:mod:`synthloop.compose.batch`.

Bookkeeping per object: the full (untruncated) mask area, the part inside the canvas, the part
still visible after the objects above it are pasted; from these, truncation, occlusion and
visibility fractions, and the box of the visible mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from synthloop.compose.params import ArtefactParams, BlendSpec, ObjectParams, SceneParams
from synthloop.functional.color import photometric_affine
from synthloop.functional.fast import blend_np, color_affine_np, warp_window
from synthloop.functional.geometry import affine_matrix, transformed_corners

IDENTITY_PHOTOMETRIC = [1.0, 1.0, 1.0, 0.0]


class InstanceSource(Protocol):
    """What the renderer needs from an instance bank."""

    def __len__(self) -> int: ...

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:  # rgb (h,w,3) float32, alpha (h,w) float32
        ...

    def tensor(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:  # rgb (3,h,w), alpha (1,h,w)
        ...

    def category_of(self, index: int) -> int: ...


class BackgroundSource(Protocol):
    """What the renderer needs from a background bank: sample params for one image, render them."""

    def sample_one(self, size: tuple[int, int], generator: torch.Generator) -> dict[str, Any]: ...

    def render_one(self, params: dict[str, Any], size: tuple[int, int]) -> np.ndarray:  # (H,W,3) float32
        ...


@dataclass
class RenderedObject:
    category_id: int
    instance: int
    distractor: bool
    mask: np.ndarray  # (H, W) bool: visible pixels of this object
    box: tuple[float, float, float, float]  # xyxy (pixel edges) of the visible mask
    full_area: float  # pixels of the whole warped object (inside and outside the canvas)
    in_canvas_area: float
    visible_area: float

    @property
    def truncation(self) -> float:
        return 1.0 - self.in_canvas_area / self.full_area if self.full_area > 0 else 1.0

    @property
    def occlusion(self) -> float:
        return 1.0 - self.visible_area / self.in_canvas_area if self.in_canvas_area > 0 else 1.0

    @property
    def visibility(self) -> float:
        return self.visible_area / self.full_area if self.full_area > 0 else 0.0


@dataclass
class SceneResult:
    image: np.ndarray  # (H, W, 3) float32 in [0, 1]
    objects: list[RenderedObject] = field(default_factory=list)

    def labelled(self, min_visibility: float = 0.0) -> list[RenderedObject]:
        """Objects that get a label: not distractors, and at least ``min_visibility`` visible."""
        return [o for o in self.objects if not o.distractor and o.visible_area > 0 and o.visibility >= min_visibility]

    def to_uint8(self) -> np.ndarray:
        return (self.image * 255.0 + 0.5).astype(np.uint8)

    def tensor(self) -> torch.Tensor:
        """The image as ``Tensor[3, H, W]``."""
        return torch.from_numpy(np.ascontiguousarray(self.image.transpose(2, 0, 1)))


def blend_margin(spec: BlendSpec) -> int:
    """Pixels a blend can spread beyond the mask (so the window is not clipped)."""
    o = spec.options
    if spec.mode == "gaussian":
        return int(math.ceil(3.0 * float(o.get("sigma", 2.0)))) + 1
    if spec.mode in ("box", "motion"):
        return int(o.get("kernel_size", 5)) // 2 + 1
    if spec.mode == "pyramid":
        return 2 ** int(o.get("levels", 4))
    if spec.mode == "poisson":
        return 3
    return 1


def _matrix(affine: list[float], src_hw: tuple[int, int], canvas: tuple[int, int]) -> np.ndarray:
    return affine_matrix(torch.tensor([affine], dtype=torch.float64), src_hw, canvas)[0].numpy()


def object_window(affine: list[float], src_hw: tuple[int, int], canvas: tuple[int, int], margin: int) -> tuple[int, int, int, int]:
    """Integer window ``(x0, y0, x1, y1)`` on the (unbounded) canvas plane holding the warped cut-out."""
    c = transformed_corners(torch.tensor([affine], dtype=torch.float64), src_hw, canvas)[0].numpy()
    x0 = math.floor(float(c[:, 0].min())) - margin
    y0 = math.floor(float(c[:, 1].min())) - margin
    x1 = math.ceil(float(c[:, 0].max())) + margin
    y1 = math.ceil(float(c[:, 1].max())) + margin
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def clip_window(window: tuple[int, int, int, int], canvas: tuple[int, int]):
    """Intersection of ``window`` with the canvas: (canvas slices, window slices), or ``None``."""
    H, W = canvas
    x0, y0, x1, y1 = window
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if cx0 >= cx1 or cy0 >= cy1:
        return None
    return (slice(cy0, cy1), slice(cx0, cx1)), (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))


def _recolor(rgb: np.ndarray, alpha: np.ndarray, ph: list[float]) -> np.ndarray:
    if list(ph) == IDENTITY_PHOTOMETRIC:
        return rgb
    w = alpha.astype(np.float64)
    gray = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    mean = float((gray * w).sum() / max(w.sum(), 1e-6))
    M, c = photometric_affine(torch.tensor([ph], dtype=torch.float64), torch.tensor([mean], dtype=torch.float64))
    return color_affine_np(rgb, M[0].numpy(), c[0].numpy())


def paste_object(canvas_img: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, obj: ObjectParams) -> tuple[tuple | None, np.ndarray, float]:
    """Paste one object into ``canvas_img`` ``(H, W, 3)`` in place.

    Photometric changes are applied to the cut-out before warping (they are per-pixel colour
    maps, so this equals applying them after). Returns (slices of the visible window or None,
    the hard mask in the window, the full area in pixels).
    """
    canvas = canvas_img.shape[:2]
    src_hw = alpha.shape[:2]
    win = object_window(obj.affine, src_hw, canvas, blend_margin(obj.blend))
    A = _matrix(obj.affine, src_hw, canvas)
    src = np.concatenate([_recolor(rgb, alpha, obj.photometric), alpha[..., None]], 2)
    warped = warp_window(src, A, win)
    w_rgb, w_alpha = warped[..., :3], warped[..., 3]
    hard = w_alpha > 0.5
    full_area = float(np.count_nonzero(hard))
    if obj.cleanup:
        # TERSE A.2: keep only pixels that were fully inside the mask before resampling
        w_alpha = (w_alpha >= 1.0 - 1e-3).astype(np.float32)
    sl = clip_window(win, canvas)
    if sl is None:
        return None, hard, full_area
    cs, ws = sl
    bg = canvas_img[cs]
    canvas_img[cs] = blend_np(w_rgb[ws], w_alpha[ws], bg, obj.blend.mode, obj.blend.options)
    return sl, hard, full_area


def paste_artefact(canvas_img: np.ndarray, source_img: np.ndarray, alpha: np.ndarray, art: ArtefactParams) -> None:
    """TERSE §3.1: paste a mask-shaped region of ``source_img`` (another background, same canvas
    size) into ``canvas_img`` at the same place, with the object blend (in place)."""
    canvas = canvas_img.shape[:2]
    win = object_window(art.affine, alpha.shape[:2], canvas, blend_margin(art.blend))
    sl = clip_window(win, canvas)
    if sl is None:
        return
    cs, ws = sl
    w_alpha = warp_window(alpha, _matrix(art.affine, alpha.shape[:2], canvas), win)[..., 0]
    canvas_img[cs] = blend_np(source_img[cs], w_alpha[ws], canvas_img[cs], art.blend.mode, art.blend.options)


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows = np.flatnonzero(mask.any(1))
    if rows.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    cols = np.flatnonzero(mask.any(0))
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def _as_hwc(img: Any) -> np.ndarray:
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy().transpose(1, 2, 0)
    return np.array(img, dtype=np.float32, copy=True, order="C")


def render_scene(params: SceneParams, instances: InstanceSource, backgrounds: BackgroundSource) -> SceneResult:
    """Render ``params`` to an ``(H, W, 3)`` image and per-object labels. Deterministic."""
    H, W = params.canvas
    img = _as_hwc(backgrounds.render_one(params.background, (H, W)))
    if params.artefacts:
        if params.artefact_background is None:
            raise ValueError("scene has artefacts but no artefact_background")
        src = _as_hwc(backgrounds.render_one(params.artefact_background, (H, W)))
        for art in params.artefacts:
            paste_artefact(img, src, instances.arrays(art.instance)[1], art)
    pasted = []
    for obj in params.objects:
        rgb, alpha = instances.arrays(obj.instance)
        pasted.append((obj,) + paste_object(img, rgb, alpha, obj))
    # visibility: walk from the top of the z-order down, removing what is covered
    covered = np.zeros((H, W), dtype=bool)
    rendered: list[RenderedObject] = []
    for obj, sl, hard, full_area in reversed(pasted):
        vis = np.zeros((H, W), dtype=bool)
        in_canvas = 0.0
        if sl is not None:
            cs, ws = sl
            h = hard[ws]
            in_canvas = float(np.count_nonzero(h))
            v = h & ~covered[cs]
            vis[cs] = v
            covered[cs] |= h
        rendered.append(
            RenderedObject(
                category_id=obj.category_id,
                instance=obj.instance,
                distractor=obj.distractor,
                mask=vis,
                box=_box(vis),
                full_area=full_area,
                in_canvas_area=in_canvas,
                visible_area=float(np.count_nonzero(vis)),
            )
        )
    rendered.reverse()
    np.clip(img, 0.0, 1.0, out=img)
    return SceneResult(image=img, objects=rendered)
