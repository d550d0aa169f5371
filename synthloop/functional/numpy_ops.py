"""NumPy/OpenCV kernels with the same semantics as the torch ops, for dataset generation.

The torch ops in this package are the reference (batched, differentiable, what the learning loops
use). Compositing thousands of 640x480 images per second on a CPU needs something faster for the
non-differentiable path: OpenCV's ``warpAffine`` and filters are about 10x faster than
``affine_grid``/``grid_sample`` on a CPU. These kernels work on ``(H, W, C)`` float32 arrays in
[0, 1]; tests check that they agree with the torch reference within interpolation rounding
(OpenCV uses 1/32-pixel weights). They know no blend mode names: the registry in
:mod:`synthloop.functional.blend` maps each mode to its kernels here.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def gaussian_kernel_size(sigma_max: float) -> int:
    """Odd kernel size covering +-3 sigma (defined here, torch-free, and re-exported by
    :mod:`synthloop.functional.filters`, so that the NumPy path never imports torch)."""
    return max(3, 2 * int(math.ceil(3.0 * float(sigma_max))) + 1)  # noqa: RUF046 (as before, in filters)


_SHIFT_IN = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])


def pixel_matrix(A: np.ndarray, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Convert a continuous-coordinate forward matrix (``u = x + 0.5``, as in
    :func:`~synthloop.functional.geometry.affine_matrix`) to OpenCV's pixel-centre convention,
    for an output window whose top-left canvas pixel is ``offset``. Returns ``(2, 3)``."""
    shift_out = np.array([[1.0, 0.0, -0.5 - offset[0]], [0.0, 1.0, -0.5 - offset[1]], [0.0, 0.0, 1.0]])
    return (shift_out @ np.asarray(A, dtype=np.float64) @ _SHIFT_IN)[:2]


def warp_window(src: np.ndarray, A: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """Warp ``src`` ``(h, w, C)`` with forward matrix ``A`` into canvas window ``(x0, y0, x1, y1)``.

    Pixels mapping outside ``src`` are 0 (as ``grid_sample`` with zero padding).
    """
    x0, y0, x1, y1 = window
    M = pixel_matrix(A, (x0, y0))
    out = cv2.warpAffine(src, M, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if out.ndim == 2:
        out = out[..., None]
    return out


def motion_kernel(kernel_size: int, angle: float) -> np.ndarray:
    """A normalised line kernel of length ``kernel_size`` along ``angle`` degrees."""
    k = int(kernel_size) | 1
    ker = np.zeros((k, k), np.float32)
    ker[k // 2, :] = 1.0
    R = cv2.getRotationMatrix2D(((k - 1) / 2.0, (k - 1) / 2.0), float(angle), 1.0)
    ker = cv2.warpAffine(ker, R, (k, k), flags=cv2.INTER_LINEAR)
    return ker / max(float(ker.sum()), 1e-8)


def hard_alpha(alpha: np.ndarray) -> np.ndarray:
    """``alpha > 0.5`` as float32 (the alpha of a hard paste)."""
    return (alpha > 0.5).astype(np.float32)


def gaussian_feather(alpha: np.ndarray, sigma: float) -> np.ndarray:
    """``alpha`` ``(h, w)`` float32 blurred by a Gaussian of ``sigma`` (unchanged when ``sigma <= 0``)."""
    if sigma <= 0:
        return alpha
    k = gaussian_kernel_size(sigma)
    return cv2.GaussianBlur(alpha, (k, k), sigma, borderType=cv2.BORDER_REPLICATE)


def box_feather(alpha: np.ndarray, kernel_size: int) -> np.ndarray:
    """``alpha`` blurred by a box filter of ``kernel_size`` (made odd; unchanged when ``<= 1``)."""
    k = kernel_size
    if k <= 1:
        return alpha
    k |= 1
    return cv2.blur(alpha, (k, k), borderType=cv2.BORDER_REPLICATE)


def motion_feather(alpha: np.ndarray, kernel_size: int, angle: float) -> np.ndarray:
    """``alpha`` smeared by a line kernel (:func:`motion_kernel`; unchanged when ``kernel_size <= 1``)."""
    if kernel_size <= 1:
        return alpha
    return cv2.filter2D(alpha, -1, motion_kernel(kernel_size, angle), borderType=cv2.BORDER_REPLICATE)


# cv2.blendLinear computes (w1 * a + w2 * b) / (w1 + w2 + 1e-5): with weights scaled by 2**17
# the 1e-5 term vanishes below float32 rounding and scaling by a power of two is exact, so the
# mix is a * fg + (1 - a) * bg, exactly fg at a = 1 and bg at a = 0
_BLEND_WEIGHT = np.float32(2.0**17)


def mix(fg: np.ndarray, a: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """``a * fg + (1 - a) * bg`` of ``(h, w, C)`` arrays and an ``(h, w)`` alpha (a new array)."""
    if a.ndim == 3:
        a = a[..., 0]
    if fg.dtype == np.float32 and bg.dtype == np.float32 and a.dtype == np.float32 and fg.ndim == 3 and fg.shape[2] in (1, 3, 4):
        # cv2.blendLinear computes a*fg + (1-a)*bg in one pass (about 5x faster than NumPy here)
        w_fg = np.ascontiguousarray(a) * _BLEND_WEIGHT
        out = cv2.blendLinear(np.ascontiguousarray(fg), np.ascontiguousarray(bg), w_fg, _BLEND_WEIGHT - w_fg)
        return out.reshape(fg.shape)
    a = a[..., None]
    return bg + a * (fg - bg)


def pyramid_blend(fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray, levels: int) -> np.ndarray:
    """Laplacian-pyramid blend with OpenCV's pyrDown/pyrUp (same 5-tap binomial kernel)."""
    gf, gb, ga = fg, bg, alpha
    laps = []
    for _ in range(max(1, int(levels)) - 1):
        if min(gf.shape[:2]) < 4:
            break
        df, db, da = cv2.pyrDown(gf), cv2.pyrDown(gb), cv2.pyrDown(ga)
        size = (gf.shape[1], gf.shape[0])
        uf = cv2.pyrUp(df, dstsize=size).reshape(gf.shape)
        ub = cv2.pyrUp(db, dstsize=size).reshape(gb.shape)
        laps.append((gf - uf, gb - ub, ga))
        gf, gb, ga = df.reshape(df.shape[0], df.shape[1], -1), db.reshape(db.shape[0], db.shape[1], -1), da
    out = mix(gf, ga, gb)
    for lf, lb, a in reversed(laps):
        out = cv2.pyrUp(out, dstsize=(lf.shape[1], lf.shape[0])).reshape(lf.shape) + mix(lf, a, lb)
    return np.clip(out, 0.0, 1.0)


def poisson_blend(fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """OpenCV seamless cloning (normal clone) of ``fg`` where ``alpha > 0.5``, in 8 bits."""
    m = (alpha > 0.5).astype(np.uint8) * 255
    if not m.any():
        return bg
    src = (np.clip(fg, 0, 1) * 255 + 0.5).astype(np.uint8)
    dst = (np.clip(bg, 0, 1) * 255 + 0.5).astype(np.uint8)
    C = src.shape[2]
    if C == 1:
        src, dst = np.repeat(src, 3, 2), np.repeat(dst, 3, 2)
    pad = 2  # seamlessClone needs the mask box strictly inside the destination
    src = cv2.copyMakeBorder(src, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    dstp = cv2.copyMakeBorder(dst, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    m = cv2.copyMakeBorder(m, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    x, y, w, h = cv2.boundingRect(m)
    if w < 3 or h < 3:
        # seamlessClone fails on a mask less than 3 px wide or tall (OpenCV 4.x/5.0: "!fixedSize()
        # in function 'release'"); such a sliver has no interior to solve for: paste it hard
        return np.where((alpha > 0.5)[..., None], fg, bg)
    res = cv2.seamlessClone(src, dstp, m, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
    res = res[pad:-pad, pad:-pad, :C].astype(np.float32) / 255.0
    return res


def _write_back(out: np.ndarray, bg: np.ndarray) -> None:
    if not np.shares_memory(out, bg):  # OpenCV could not wrap ``bg`` as its output and made a new array
        bg[...] = out.reshape(bg.shape)


def colour_channels(fg: np.ndarray, channels: int) -> np.ndarray:
    """Contiguous float32 ``fg`` with ``channels`` channels (drops the alpha of an RGBA window:
    cv2.cvtColor does that in one pass, ~15x faster than copying the NumPy channel slice)."""
    if fg.shape[2] == 4 and channels == 3:
        return cv2.cvtColor(np.asarray(fg, np.float32), cv2.COLOR_RGBA2RGB)
    return np.ascontiguousarray(fg, dtype=np.float32)


def paste_hard_into(bg: np.ndarray, fg: np.ndarray, alpha: np.ndarray) -> None:
    """Copy the pixels of ``fg`` where ``alpha > 0.5`` into ``bg`` (a view) in place, unchanged.

    cv2.copyTo writes through the view (NumPy's masked copyto is ~15x slower here)."""
    _write_back(cv2.copyTo(fg, (alpha > 0.5).view(np.uint8), bg), bg)


def mix_into(bg: np.ndarray, fg: np.ndarray, a: np.ndarray, *, clamp: bool = True) -> None:
    """``a * fg + (1 - a) * bg`` written into ``bg`` (a view) in place, with ``a`` ``(h, w)`` in [0, 1].

    One OpenCV pass over the box where a > 0 only (a rotated cut-out covers about half of its
    window; ~6x faster than NumPy here, which needs five passes and a temporary). Exactly ``bg``
    at a = 0 and ``fg`` at a = 1. ``clamp=False`` skips the final clamp of the mix, which can round
    one float32 step above 1: for callers that clamp a whole canvas once at the end.
    """
    rows = np.flatnonzero(a.any(1))
    if rows.size == 0:
        return
    cols = np.flatnonzero(a.any(0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    a, fg, bg = a[box], fg[box], bg[box]
    w_fg = a * _BLEND_WEIGHT
    w_bg = _BLEND_WEIGHT - w_fg
    _write_back(cv2.blendLinear(fg, bg, w_fg, w_bg, dst=bg), bg)
    if clamp:
        np.minimum(bg, 1.0, out=bg)  # a convex mix can still round one step above 1


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``uint8`` copy of a float image in [0, 1], rounded to nearest (``cv2.convertScaleAbs``: about
    50x faster than NumPy's ``(x * 255 + 0.5).astype(np.uint8)`` on a 640x480 RGB image; values
    outside [0, 1] saturate, except that negative ones are mirrored, so clamp first)."""
    return cv2.convertScaleAbs(image, alpha=255.0)


def affine_matrices(params: np.ndarray, src_sizes: np.ndarray, dst_size: tuple[int, int]) -> np.ndarray:
    """NumPy :func:`~synthloop.functional.geometry.affine_matrix` for objects of different sizes.

    ``params`` ``(N, 6)``, ``src_sizes`` ``(N, 2)`` rows of (h, w); returns float64 ``(N, 3, 3)``.
    (The torch function takes one source size per batch and costs ~60 us per call in overhead,
    which adds up to a large share of a scene's render time when called per object.)
    """
    p = np.asarray(params, dtype=np.float64).reshape(-1, 6)
    hw = np.asarray(src_sizes, dtype=np.float64).reshape(-1, 2)
    angle, tx, ty, shear, sx, sy = p.T
    rad = angle * (math.pi / 180.0)
    c, s = np.cos(rad), np.sin(rad)
    out = np.zeros((len(p), 3, 3))
    l00, l01, l10, l11 = out[:, 0, 0], out[:, 0, 1], out[:, 1, 0], out[:, 1, 1]
    np.multiply(c, sx, out=l00)
    np.multiply(c * shear + s, sy, out=l01)
    np.multiply(-s, sx, out=l10)
    np.multiply(c - s * shear, sy, out=l11)
    cxs, cys = hw[:, 1] / 2.0, hw[:, 0] / 2.0
    out[:, 0, 2] = float(dst_size[1]) / 2.0 + tx - (l00 * cxs + l01 * cys)
    out[:, 1, 2] = float(dst_size[0]) / 2.0 + ty - (l10 * cxs + l11 * cys)
    out[:, 2, 2] = 1.0
    return out


_RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])
_YIQ2RGB = np.linalg.inv(_RGB2YIQ)
_LUMA = np.array([0.299, 0.587, 0.114])


def photometric_affine_np(params: np.ndarray, mean_gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NumPy :func:`~synthloop.functional.color.photometric_affine`: the affine colour maps
    ``(M (N, 3, 3), c (N, 3))`` of ``params`` ``(N, 4)`` (brightness, contrast, saturation, hue)
    with contrast pivoting on ``b * mean_gray`` ``(N,)``. Float64; the same matrices as the torch
    function (tested), without its ~0.3 ms of per-call overhead for a scene's few objects."""
    p = np.asarray(params, dtype=np.float64).reshape(-1, 4)
    b, k, s, h = p.T
    eye = np.eye(3)
    sat = s[:, None, None] * eye + (1.0 - s)[:, None, None] * np.broadcast_to(_LUMA, (3, 3))
    ang = h * (2.0 * math.pi)
    cos, sin = np.cos(ang), np.sin(ang)
    rot = np.zeros((len(p), 3, 3))
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, sin, -sin, cos
    hue = _YIQ2RGB @ rot @ _RGB2YIQ
    M = (k * b)[:, None, None] * (hue @ sat)
    pivot = (1.0 - k) * b * np.asarray(mean_gray, dtype=np.float64).reshape(-1)
    return M, np.repeat(pivot[:, None], 3, 1)


def color_affine_np(rgb: np.ndarray, M: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Apply a per-pixel affine colour map ``M x + c`` to ``(h, w, 3)`` and clamp to [0, 1]."""
    T = np.concatenate([np.asarray(M, np.float32), np.asarray(c, np.float32).reshape(3, 1)], 1)
    return np.clip(cv2.transform(rgb, T), 0.0, 1.0)


__all__ = [
    "affine_matrices",
    "box_feather",
    "color_affine_np",
    "colour_channels",
    "gaussian_feather",
    "hard_alpha",
    "mix",
    "mix_into",
    "motion_feather",
    "motion_kernel",
    "paste_hard_into",
    "photometric_affine_np",
    "pixel_matrix",
    "poisson_blend",
    "pyramid_blend",
    "to_uint8",
    "warp_window",
]
