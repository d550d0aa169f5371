"""Deterministic compositing of :class:`~synthloop.compose.params.SceneParams` into pixels + labels.

``apply_scene(params, instances, backgrounds)`` is a pure function of its inputs: no RNG, so a
scene replays bit-identically from its params. It uses the NumPy/OpenCV kernels of
:mod:`synthloop.functional.numpy_ops` (same semantics as the differentiable torch ops, ~10x faster
on a CPU), and warps each object only into the window of the canvas it covers (plus the blend's
margin), blending it into that window of the canvas in place. The differentiable, batched
counterpart for the learning loops is :mod:`synthloop.compose.batch`.

Speed: placement matrices and colour maps of a whole scene come from one NumPy call each;
per-instance constants (size, alpha box, mean grey) are cached on the instance source; each object
is warped once as RGBA over the image of its alpha box only; the canvas is clamped once at the end;
visible masks are built in Fortran order, which COCO's RLE encoder reads without a copy. See
benchmarks/results/throughput.json.

Bookkeeping per object: the full (untruncated) mask area, the part inside the canvas, the part
still visible after the objects above it are pasted; from these, truncation, occlusion and
visibility fractions, and the box of the visible mask.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from synthloop.compose.params import ArtefactParams, ObjectParams, SceneParams
from synthloop.functional.blend import blend_into, window_margin
from synthloop.functional.numpy_ops import affine_matrices, photometric_affine_np, to_uint8, warp_window

if TYPE_CHECKING:  # torch only for the tensor views: compositing is NumPy/OpenCV
    import torch

IDENTITY_PHOTOMETRIC = [1.0, 1.0, 1.0, 0.0]


class InstanceSource(Protocol):
    """What the compositor needs from an instance bank."""

    def __len__(self) -> int: ...

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:  # rgb (h,w,3) float32, alpha (h,w) float32
        ...

    def tensor(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:  # rgb (3,h,w), alpha (1,h,w)
        ...

    def category_of(self, index: int) -> int: ...


class BackgroundSource(Protocol):
    """What the compositor needs from a background bank: sample params for one image, render them."""

    def sample_one(self, size: tuple[int, int], generator: torch.Generator) -> dict[str, Any]: ...

    def render_one(self, params: dict[str, Any], size: tuple[int, int]) -> np.ndarray:
        """``(H, W, 3)`` float32 in [0, 1], or uint8 (read as value / 255). Never modified by the compositor."""
        ...


@dataclass
class PastedObject:
    """One pasted object's labels. The visible mask is kept as the window of the canvas it lies
    in (``window_mask`` at ``offset`` (x0, y0)); ``mask`` builds the full-canvas mask on demand."""

    category_id: int
    instance: int
    distractor: bool
    window_mask: np.ndarray  # (h, w) bool: visible pixels of this object inside its window
    offset: tuple[int, int]  # (x0, y0) of the window on the canvas
    canvas: tuple[int, int]  # (H, W)
    box: tuple[float, float, float, float]  # xyxy (pixel edges) of the visible mask
    full_area: float  # pixels of the whole warped object (inside and outside the canvas)
    in_canvas_area: float
    visible_area: float

    @property
    def mask(self) -> np.ndarray:
        """``(H, W)`` bool, Fortran order (what COCO's RLE encoder reads without a copy)."""
        out = np.zeros(self.canvas, dtype=bool, order="F")
        h, w = self.window_mask.shape
        x0, y0 = self.offset
        out[y0 : y0 + h, x0 : x0 + w] = self.window_mask
        return out

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
    objects: list[PastedObject] = field(default_factory=list)

    def labelled(self, min_visibility: float = 0.0) -> list[PastedObject]:
        """Objects that get a label: not distractors, and at least ``min_visibility`` visible."""
        return [o for o in self.objects if not o.distractor and o.visible_area > 0 and o.visibility >= min_visibility]

    def to_uint8(self) -> np.ndarray:
        """The image as ``uint8 (H, W, 3)``, rounded to nearest."""
        return to_uint8(self.image)

    def tensor(self) -> torch.Tensor:
        """The image as ``Tensor[3, H, W]``."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.image.transpose(2, 0, 1)))


def _matrix(affine: list[float], src_hw: tuple[int, int], canvas: tuple[int, int]) -> np.ndarray:
    return affine_matrices(np.asarray([affine], dtype=np.float64), np.asarray([src_hw]), canvas)[0]


def window_of(A: np.ndarray, src_hw: tuple[int, int], margin: int, support: tuple[int, int, int, int] | None = None) -> tuple[int, int, int, int]:
    """Integer window ``(x0, y0, x1, y1)`` on the canvas plane holding a cut-out of ``src_hw``
    warped by the forward matrix ``A`` ``(3, 3)``, grown by ``margin``. With ``support`` (a box
    ``(x0, y0, x1, y1)`` of the cut-out outside which alpha is 0) only that box's image is covered."""
    h, w = float(src_hw[0]), float(src_hw[1])
    u0, v0, u1, v1 = (0.0, 0.0, w, h) if support is None else (float(v) for v in support)
    xs = A[0, 0] * np.array([u0, u1, u1, u0]) + A[0, 1] * np.array([v0, v0, v1, v1]) + A[0, 2]
    ys = A[1, 0] * np.array([u0, u1, u1, u0]) + A[1, 1] * np.array([v0, v0, v1, v1]) + A[1, 2]
    x0 = math.floor(float(xs.min())) - margin
    y0 = math.floor(float(ys.min())) - margin
    x1 = math.ceil(float(xs.max())) + margin
    y1 = math.ceil(float(ys.max())) + margin
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def clip_window(window: tuple[int, int, int, int], canvas: tuple[int, int]):
    """Intersection of ``window`` with the canvas: (canvas slices, window slices), or ``None``."""
    H, W = canvas
    x0, y0, x1, y1 = window
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if cx0 >= cx1 or cy0 >= cy1:
        return None
    return (slice(cy0, cy1), slice(cx0, cx1)), (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))


def mean_gray(rgb: np.ndarray, alpha: np.ndarray) -> float:
    """Alpha-weighted mean grey level of a cut-out (what a contrast change pivots on)."""
    w = alpha.astype(np.float64)
    gray = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return float((gray * w).sum() / max(w.sum(), 1e-6))


def instance_shape(instances: InstanceSource, index: int) -> tuple[int, int]:
    """``(h, w)`` of cut-out ``index``, cached on the source object."""
    cache = instances.__dict__.setdefault("_shape_cache", {})
    hit = cache.get(index)
    if hit is None:
        hit = cache[index] = tuple(instances.arrays(index)[1].shape[:2])
    return hit


def alpha_support(alpha: np.ndarray) -> tuple[int, int, int, int]:
    """Box ``(x0, y0, x1, y1)`` of the pixels with alpha > 0, grown by one pixel (clipped to the
    cut-out): a bilinear warp is 0 wherever it samples only outside this box."""
    # OpenCV's bounding box of the non-zero pixels (~10x faster than NumPy's any/flatnonzero on a digit)
    x, y, bw, bh = cv2.boundingRect(np.ascontiguousarray(alpha > 0).view(np.uint8))
    if bw == 0:
        return 0, 0, 1, 1
    h, w = alpha.shape[:2]
    return max(x - 1, 0), max(y - 1, 0), min(x + bw + 1, w), min(y + bh + 1, h)


def instance_support(instances: InstanceSource, index: int) -> tuple[int, int, int, int]:
    """:func:`alpha_support` of cut-out ``index``, cached on the source object. MNIST digits fill
    about half of their 28x28 square, so warping only this box halves the work per object."""
    cache = instances.__dict__.setdefault("_support_cache", {})
    hit = cache.get(index)
    if hit is None:
        hit = cache[index] = alpha_support(instances.arrays(index)[1])
    return hit


def _instance_mean_gray(instances: InstanceSource, index: int) -> float:
    """:func:`mean_gray` of cut-out ``index``, cached on the source object (it never changes)."""
    cache = instances.__dict__.setdefault("_mean_gray_cache", {})
    hit = cache.get(index)
    if hit is None:
        hit = cache[index] = mean_gray(*instances.arrays(index))
    return hit


def color_maps(photometric: list[list[float]], means: list[float]) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """The affine colour map ``(M (3, 3), c (3,))`` of each photometric vector (``None`` for identity),
    computed in one batch (NumPy twin of :func:`~synthloop.functional.color.photometric_affine`)."""
    todo = [i for i, ph in enumerate(photometric) if list(ph) != IDENTITY_PHOTOMETRIC]
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(photometric)
    if todo:
        M, c = photometric_affine_np(np.asarray([photometric[i] for i in todo]), np.asarray([means[i] for i in todo]))
        for k, i in enumerate(todo):
            out[i] = (M[k], c[k])
    return out


def rgba_of(instances: InstanceSource, index: int) -> np.ndarray:
    """Cut-out ``index`` as one ``float32 (h, w, 4)`` array: warping four channels in one OpenCV
    call is about twice as fast as warping colour and alpha separately. Uses the source's own
    ``rgba(index)`` when it has one (do not modify the result)."""
    own = getattr(instances, "rgba", None)
    if own is not None:
        return own(index)
    # cached on the source: a 60-200 px cut-out's dstack cost ~0.5 ms per paste, more than its warp
    cache = instances.__dict__.setdefault("_rgba_cache", {})
    hit = cache.get(index)
    if hit is None:
        rgb, alpha = instances.arrays(index)
        hit = cache[index] = np.dstack([rgb, alpha]).astype(np.float32, copy=False)
        hit.setflags(write=False)
    return hit


def _color_rgba(rgba: np.ndarray, color_map: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The colour map applied to the colour channels of an RGBA cut-out (alpha kept), clamped."""
    M, c = color_map
    T = np.zeros((4, 5), np.float32)
    T[:3, :3], T[:3, 4], T[3, 3] = M, c, 1.0
    out = cv2.transform(rgba, T)
    return np.clip(out, 0.0, 1.0, out=out)


def paste_object(
    canvas_img: np.ndarray,
    rgb: np.ndarray | None,
    alpha: np.ndarray | None,
    obj: ObjectParams,
    *,
    matrix: np.ndarray | None = None,
    color_map: tuple[np.ndarray, np.ndarray] | None = None,
    rgba: np.ndarray | None = None,
    support: tuple[int, int, int, int] | None = None,
    clamp: bool = True,
) -> tuple[tuple | None, np.ndarray, float]:
    """Paste one object into ``canvas_img`` ``(H, W, 3)`` in place.

    The cut-out is ``rgb`` ``(h, w, 3)`` + ``alpha`` ``(h, w)``, or ``rgba`` ``(h, w, 4)``.
    Photometric changes are applied to the cut-out before warping (they are per-pixel colour
    maps, so this equals applying them after). ``matrix`` (the placement's forward matrix) and
    ``color_map`` (its photometric map) may be passed in when computed for a whole scene at once,
    and ``support`` (see :func:`alpha_support`); by default they are computed here.
    ``clamp=False`` leaves the clamp of the window to the caller (see :func:`blend_into`).
    Returns (slices of the visible window or None, the hard mask in the window, the full area in
    pixels).
    """
    if rgba is None:
        rgba = np.dstack([rgb, alpha]).astype(np.float32, copy=False)
    canvas = canvas_img.shape[:2]
    src_hw = rgba.shape[:2]
    A = matrix if matrix is not None else _matrix(obj.affine, src_hw, canvas)
    if support is None:
        support = alpha_support(rgba[..., 3])
    win = window_of(A, src_hw, window_margin(obj.blend.mode, obj.blend.options), support)
    if color_map is None and matrix is None and list(obj.photometric) != IDENTITY_PHOTOMETRIC:
        (color_map,) = color_maps([obj.photometric], [mean_gray(rgba[..., :3], rgba[..., 3])])
    src = _color_rgba(rgba, color_map) if color_map is not None else rgba
    warped = warp_window(src, A, win)
    w_alpha = cv2.extractChannel(warped, 3)  # contiguous, for the filters
    hard = w_alpha > 0.5
    full_area = float(np.count_nonzero(hard))
    sl = clip_window(win, canvas)
    if sl is None:
        return None, hard, full_area
    if obj.cleanup:
        # TERSE A.2: keep only pixels that were fully inside the mask before resampling
        w_alpha = (w_alpha >= 1.0 - 1e-3).astype(np.float32)
    cs, ws = sl
    # a cut-out's colours are in [0, 1] and bilinear resampling keeps them there
    blend_into(canvas_img[cs], warped[ws], w_alpha[ws], obj.blend.mode, obj.blend.options, clamp=clamp)
    return sl, hard, full_area


def paste_artefact(
    canvas_img: np.ndarray,
    source_img: np.ndarray,
    alpha: np.ndarray,
    art: ArtefactParams,
    *,
    matrix: np.ndarray | None = None,
    support: tuple[int, int, int, int] | None = None,
    clamp: bool = True,
) -> None:
    """TERSE §3.1: paste a mask-shaped region of ``source_img`` (another background, same canvas
    size, float or uint8) into ``canvas_img`` at the same place, with the object blend (in place)."""
    canvas = canvas_img.shape[:2]
    A = matrix if matrix is not None else _matrix(art.affine, alpha.shape[:2], canvas)
    win = window_of(A, alpha.shape[:2], window_margin(art.blend.mode, art.blend.options), support if support is not None else alpha_support(alpha))
    sl = clip_window(win, canvas)
    if sl is None:
        return
    cs, ws = sl
    w_alpha = warp_window(alpha, A, win)[..., 0]
    blend_into(canvas_img[cs], _as_float(source_img[cs]), w_alpha[ws], art.blend.mode, art.blend.options, clamp=clamp)


def _as_hwc(img: Any, canvas: tuple[int, int]) -> np.ndarray:
    torch = sys.modules.get("torch")  # a background source that returns tensors has imported it
    if torch is not None and isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy().transpose(1, 2, 0)
    img = np.asarray(img)
    if img.shape != (canvas[0], canvas[1], 3):
        raise ValueError(f"background source rendered an image of shape {img.shape}, expected {(canvas[0], canvas[1], 3)}")
    return img


def _as_float(img: np.ndarray) -> np.ndarray:
    """A new float32 array of a background (or a window of one): uint8 scaled by 1/255, floats clamped to [0, 1]."""
    if img.dtype == np.uint8:
        # the same float32 products as np.multiply(img, 1/255) from a uint8 input, in half the
        # time: NumPy's mixed-type loop casts through a small buffer
        out = img.astype(np.float32)
        np.multiply(out, np.float32(1.0 / 255.0), out=out)
        return out
    out = np.empty(img.shape, np.float32)
    np.clip(img, 0.0, 1.0, out=out)
    return out


def apply_scene(params: SceneParams, instances: InstanceSource, backgrounds: BackgroundSource) -> SceneResult:
    """Composite ``params`` into an ``(H, W, 3)`` image and per-object labels. Deterministic."""
    H, W = canvas = (int(params.canvas[0]), int(params.canvas[1]))
    img = _as_float(_as_hwc(backgrounds.render_one(params.background, canvas), canvas))
    arts, objs = params.artefacts, params.objects
    if arts and params.artefact_background is None:
        raise ValueError("scene has artefacts but no artefact_background")
    shapes = [instance_shape(instances, a.instance) for a in arts] + [instance_shape(instances, o.instance) for o in objs]
    mats = affine_matrices(
        np.asarray([a.affine for a in arts] + [o.affine for o in objs], dtype=np.float64).reshape(-1, 6),
        np.asarray(shapes, dtype=np.float64).reshape(-1, 2),
        canvas,
    )
    if arts:
        src = _as_hwc(backgrounds.render_one(params.artefact_background, canvas), canvas)
        for k, art in enumerate(arts):
            paste_artefact(img, src, instances.arrays(art.instance)[1], art, matrix=mats[k], support=instance_support(instances, art.instance), clamp=False)
    cmaps = color_maps(
        [o.photometric for o in objs], [_instance_mean_gray(instances, o.instance) if list(o.photometric) != IDENTITY_PHOTOMETRIC else 0.0 for o in objs]
    )
    pasted = []
    for k, obj in enumerate(objs):
        rgba = rgba_of(instances, obj.instance)
        support = instance_support(instances, obj.instance)
        pasted.append((obj,) + paste_object(img, None, None, obj, matrix=mats[len(arts) + k], color_map=cmaps[k], rgba=rgba, support=support, clamp=False))
    # visibility: walk from the top of the z-order down, removing what is covered; only the
    # objects' windows are touched (full-canvas masks cost ~0.3 ms each to clear and to encode)
    covered = np.zeros((H, W), dtype=bool)
    results: list[PastedObject] = []
    for obj, sl, hard, full_area in reversed(pasted):
        in_canvas = visible = 0.0
        box = (0.0, 0.0, 0.0, 0.0)
        v, offset = _EMPTY_MASK, (0, 0)
        if sl is not None:
            cs, ws = sl
            h = hard[ws]
            in_canvas = float(np.count_nonzero(h))
            cov = covered[cs]
            v = h & ~cov
            cov |= h
            offset = (cs[1].start, cs[0].start)
            visible = float(np.count_nonzero(v))
            if visible:
                x0, y0, x1, y1 = _box(v)
                box = (x0 + offset[0], y0 + offset[1], x1 + offset[0], y1 + offset[1])
        results.append(
            PastedObject(
                category_id=obj.category_id,
                instance=obj.instance,
                distractor=obj.distractor,
                window_mask=v,
                offset=offset,
                canvas=(H, W),
                box=box,
                full_area=full_area,
                in_canvas_area=in_canvas,
                visible_area=visible,
            )
        )
    results.reverse()
    np.clip(img, 0.0, 1.0, out=img)  # the blends were not clamped one by one (see blend_into)
    return SceneResult(image=img, objects=results)


_EMPTY_MASK = np.zeros((0, 0), dtype=bool)


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows = np.flatnonzero(mask.any(1))
    if rows.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    cols = np.flatnonzero(mask.any(0))
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
