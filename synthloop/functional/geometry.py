"""Affine parameters <-> matrices, and the spatial-transformer warp.

Parameters are a ``(B, 6)`` tensor, columns in :data:`AFFINE_PARAM_NAMES` order:

- ``angle``  rotation in degrees, positive = counter-clockwise on screen (as OpenCV/torchvision);
- ``tx, ty`` offset in output pixels of the foreground's centre from the output canvas centre;
- ``shear``  horizontal shear factor (x' = x + shear * y, applied before rotation);
- ``sx, sy`` scale of the foreground along its own x and y axes (1 = native pixel size).

The forward map from source pixel coordinates ``u = x + 0.5`` to output pixel coordinates is::

    A = T(c_dst + t) . R(angle) . Shear(shear) . S(sx, sy) . T(-c_src)

with ``c_src``/``c_dst`` the centres of the source and output images. Coordinates follow
``align_corners=False``: pixel ``x`` covers the continuous interval ``[x, x + 1)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

AFFINE_PARAM_NAMES: tuple[str, ...] = ("angle", "tx", "ty", "shear", "sx", "sy")

Size = Sequence[int]  # (H, W)


def identity_params(batch: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """``(B, 6)`` parameters of the identity placement (centred, unrotated, native size)."""
    p = torch.zeros(batch, 6, dtype=dtype, device=device)
    p[:, 4:] = 1.0
    return p


def _check_params(params: torch.Tensor) -> None:
    if params.ndim != 2 or params.shape[1] != 6:
        raise ValueError(f"affine params must have shape (B, 6), got {tuple(params.shape)}")


def affine_matrix(params: torch.Tensor, src_size: Size, dst_size: Size) -> torch.Tensor:
    """Forward pixel-space matrices ``(B, 3, 3)`` mapping source to output pixel coordinates.

    Args:
        params: ``Tensor[B, 6]`` (angle, tx, ty, shear, sx, sy).
        src_size: ``(h, w)`` of the foreground.
        dst_size: ``(H, W)`` of the output canvas.
    """
    _check_params(params)
    angle, tx, ty, shear, sx, sy = params.unbind(1)
    rad = angle * (math.pi / 180.0)
    c, s = torch.cos(rad), torch.sin(rad)
    # L = R . Shear . S with R = [[c, s], [-s, c]] (counter-clockwise on screen, y axis down)
    l00 = c * sx
    l01 = (c * shear + s) * sy
    l10 = -s * sx
    l11 = (-s * shear + c) * sy
    h, w = float(src_size[0]), float(src_size[1])
    H, W = float(dst_size[0]), float(dst_size[1])
    cxs, cys = w / 2.0, h / 2.0
    b0 = W / 2.0 + tx - (l00 * cxs + l01 * cys)
    b1 = H / 2.0 + ty - (l10 * cxs + l11 * cys)
    zeros = torch.zeros_like(l00)
    ones = torch.ones_like(l00)
    return torch.stack(
        [torch.stack([l00, l01, b0], 1), torch.stack([l10, l11, b1], 1), torch.stack([zeros, zeros, ones], 1)], 1
    )


def matrix_to_params(matrix: torch.Tensor, src_size: Size, dst_size: Size) -> torch.Tensor:
    """Inverse of :func:`affine_matrix` for matrices without reflection (det > 0).

    Accepts ``(B, 2, 3)`` or ``(B, 3, 3)``; returns ``(B, 6)``.
    """
    if matrix.ndim != 3 or matrix.shape[1:] not in ((2, 3), (3, 3)):
        raise ValueError(f"matrix must have shape (B, 2, 3) or (B, 3, 3), got {tuple(matrix.shape)}")
    l00, l01, b0 = matrix[:, 0].unbind(1)
    l10, l11, b1 = matrix[:, 1].unbind(1)
    sx = torch.sqrt(l00 * l00 + l10 * l10)
    rad = torch.atan2(-l10, l00)
    c, s = torch.cos(rad), torch.sin(rad)
    # U = R^T L = [[sx, shear*sy], [0, sy]]
    u01 = c * l01 - s * l11
    u11 = s * l01 + c * l11
    sy = u11
    shear = u01 / sy
    h, w = float(src_size[0]), float(src_size[1])
    H, W = float(dst_size[0]), float(dst_size[1])
    tx = b0 + l00 * (w / 2.0) + l01 * (h / 2.0) - W / 2.0
    ty = b1 + l10 * (w / 2.0) + l11 * (h / 2.0) - H / 2.0
    return torch.stack([rad * (180.0 / math.pi), tx, ty, shear, sx, sy], 1)


def _normalizer(size: Size, like: torch.Tensor) -> torch.Tensor:
    """Matrix mapping pixel coordinates u in [0, W] to normalised coordinates in [-1, 1]."""
    H, W = float(size[0]), float(size[1])
    return torch.tensor([[2.0 / W, 0.0, -1.0], [0.0, 2.0 / H, -1.0], [0.0, 0.0, 1.0]], dtype=like.dtype, device=like.device)


def affine_theta(params: torch.Tensor, src_size: Size, dst_size: Size, dst_offset: torch.Tensor | None = None, window: Size | None = None) -> torch.Tensor:
    """The ``(B, 2, 3)`` ``theta`` for :func:`torch.nn.functional.affine_grid` (output -> source).

    Args:
        dst_offset: optional ``Tensor[B, 2]`` (x0, y0): the output is the window of the full canvas
            whose top-left pixel is (x0, y0) and whose size is ``window`` (defaults to ``dst_size``).
            This warps only the region an object covers, which is how scenes stay fast.
    """
    A = affine_matrix(params, src_size, dst_size)
    if dst_offset is not None:
        if dst_offset.shape != (A.shape[0], 2):
            raise ValueError(f"dst_offset must have shape ({A.shape[0]}, 2), got {tuple(dst_offset.shape)}")
        shift = torch.zeros_like(A)
        shift[:, 0, 2] = -dst_offset[:, 0].to(A.dtype)
        shift[:, 1, 2] = -dst_offset[:, 1].to(A.dtype)
        A = A + shift  # T(-offset) . A only changes the translation column
    out_size = window if window is not None else dst_size
    inv = torch.linalg.inv(A)
    n_src = _normalizer(src_size, A)
    n_dst_inv = torch.linalg.inv(_normalizer(out_size, A))
    theta = n_src @ inv @ n_dst_inv
    return theta[:, :2, :]


def warp(
    image: torch.Tensor,
    params: torch.Tensor,
    dst_size: Size,
    *,
    dst_offset: torch.Tensor | None = None,
    window: Size | None = None,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Warp ``Tensor[B, C, h, w]`` onto an output canvas of ``dst_size`` (the spatial transformer).

    Differentiable with respect to ``image`` and ``params``. Pixels that map outside the source
    are zero (so a warped mask is zero there). Returns ``Tensor[B, C, H, W]`` (or the ``window``).
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, h, w), got {tuple(image.shape)}")
    _check_params(params)
    if params.shape[0] != image.shape[0]:
        raise ValueError(f"batch mismatch: image {image.shape[0]} vs params {params.shape[0]}")
    src_size = image.shape[-2:]
    out = tuple(window if window is not None else dst_size)
    for name, size in (("dst_size", dst_size), ("window", out)):
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"{name} must be two positive ints (H, W), got {tuple(size)}")
    theta = affine_theta(params.to(image.dtype), src_size, dst_size, dst_offset=dst_offset, window=window)
    grid = F.affine_grid(theta, [image.shape[0], image.shape[1], out[0], out[1]], align_corners=False)
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def transformed_corners(params: torch.Tensor, src_size: Size, dst_size: Size) -> torch.Tensor:
    """Output pixel coordinates ``(B, 4, 2)`` of the source image's four corners."""
    A = affine_matrix(params, src_size, dst_size)
    h, w = float(src_size[0]), float(src_size[1])
    pts = torch.tensor([[0.0, 0.0, 1.0], [w, 0.0, 1.0], [w, h, 1.0], [0.0, h, 1.0]], dtype=A.dtype, device=A.device)
    out = torch.einsum("bij,kj->bki", A, pts)
    return out[..., :2]
