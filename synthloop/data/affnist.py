"""AffNIST-style digits: MNIST under the published affNIST random affine recipe, on a 40x40 canvas.

Recipe (per digit): pad 28x28 to 40x40 (6 black pixels on each side), then

- rotation uniform in [-20, 20] degrees,
- shear uniform in [-0.2, 0.2],
- x and y scale each uniform in [0.8, 1.2],
- a translation uniform over the offsets that keep the bounding box of the digit's nonzero pixels
  (after rotation, shear and scale) inside the 40x40 frame, intersected with
  ``AFFNIST_RANGES["tx"/"ty"]``.

Sampling (:func:`sample_affnist_params`, takes an explicit generator) is separate from rendering
(:func:`apply_affnist`, deterministic), and rendering is :func:`synthloop.functional.geometry.warp`,
the same spatial transformer the learned synthesizer uses, so a synthesizer's output parameters and
the AffNIST-style set live in one parameter space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from synthloop.errors import InputError
from synthloop.functional.geometry import AFFINE_PARAM_NAMES, affine_matrix, identity_params, warp

AFFNIST_SIZE: int = 40
"""Side of the square AffNIST canvas in pixels."""

AFFNIST_TRANSLATION: float = 16.0
"""Largest translation (px) on the 40x40 canvas: beyond it only digits under about 8 px across stay in the frame."""

AFFNIST_RANGES: dict[str, tuple[float, float]] = {
    "angle": (-20.0, 20.0),
    "tx": (-AFFNIST_TRANSLATION, AFFNIST_TRANSLATION),
    "ty": (-AFFNIST_TRANSLATION, AFFNIST_TRANSLATION),
    "shear": (-0.2, 0.2),
    "sx": (0.8, 1.2),
    "sy": (0.8, 1.2),
}
"""``name -> (min, max)`` of every affine parameter (keys in :data:`AFFINE_PARAM_NAMES`), the box a
synthesizer's outputs are clamped to. ``tx``/``ty`` are pixel offsets of the digit centre from the
centre of the 40x40 canvas."""

_BBOX_MARGIN = 1e-3  # px kept clear of the frame edge so float rounding cannot leak a pixel out


@dataclass(frozen=True)
class AffnistParams:
    """Per-digit affine parameters: ``params`` is ``Tensor[N, 6]`` in :data:`AFFINE_PARAM_NAMES` order."""

    params: torch.Tensor

    def __post_init__(self) -> None:
        if self.params.ndim != 2 or self.params.shape[1] != len(AFFINE_PARAM_NAMES):
            raise ValueError(f"params must have shape (N, {len(AFFINE_PARAM_NAMES)}), got {tuple(self.params.shape)}")

    def __len__(self) -> int:
        return self.params.shape[0]

    def column(self, name: str) -> torch.Tensor:
        """``Tensor[N]`` of one parameter by name (``"angle"``, ``"tx"``, ...)."""
        return self.params[:, AFFINE_PARAM_NAMES.index(name)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"names": [...], "params": [[...] * 6] * N}`` (float32 values round-trip exactly)."""
        return {"names": list(AFFINE_PARAM_NAMES), "params": self.params.detach().cpu().to(torch.float32).tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, file: str | None = None) -> "AffnistParams":
        """Inverse of :meth:`to_dict`; ``file`` names the source in error messages."""
        if not isinstance(data, dict):
            raise InputError("expected a mapping with 'names' and 'params'", file=file)
        names = data.get("names", list(AFFINE_PARAM_NAMES))
        if list(names) != list(AFFINE_PARAM_NAMES):
            raise InputError(f"expected {list(AFFINE_PARAM_NAMES)}, got {names!r}", file=file, field="names")
        try:
            values = torch.tensor(data["params"], dtype=torch.float32)
        except KeyError:
            raise InputError("missing", file=file, field="params") from None
        except (TypeError, ValueError) as exc:
            raise InputError(f"not a list of numbers: {exc}", file=file, field="params") from None
        if values.numel() == 0:
            values = values.reshape(0, len(AFFINE_PARAM_NAMES))
        if values.ndim != 2 or values.shape[1] != len(AFFINE_PARAM_NAMES):
            raise InputError(f"expected N rows of {len(AFFINE_PARAM_NAMES)} numbers, got shape {tuple(values.shape)}", file=file, field="params")
        if not torch.isfinite(values).all():
            raise InputError("contains non-finite values", file=file, field="params")
        return cls(values)


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")


def translation_bounds(images: torch.Tensor, linear_params: torch.Tensor, size: int = AFFNIST_SIZE) -> torch.Tensor:
    """Offsets that keep every nonzero output pixel of each digit inside a ``size`` x ``size`` frame.

    Args:
        images: ``Tensor[N, C, h, w]`` source digits (28x28 or padded 40x40; both are centred the same).
        linear_params: ``Tensor[N, 6]``; only angle, shear, sx, sy are used (the translation is ignored).

    Returns:
        ``Tensor[N, 4]`` = (tx_min, tx_max, ty_min, ty_max). An interval is empty (min > max) when the
        digit is larger than the frame, and infinite for an empty image.

    Exact for bilinear sampling: a source pixel centred at ``c`` contributes to an output pixel only
    if the output pixel's centre maps inside ``c + (-1, 1)^2``, so the support of the warped digit is
    the image of those squares; output pixel ``x`` is nonzero only if ``x + 0.5`` lies strictly inside
    the support's extent ``(lo, hi)``, which stays within columns ``0..size-1`` iff
    ``-0.5 - lo <= tx <= size + 0.5 - hi``.
    """
    _check_images(images)
    n, _, h, w = images.shape
    p = linear_params.to(device=images.device, dtype=torch.float32).clone()
    p[:, 1:3] = 0.0
    A = affine_matrix(p, (h, w), (size, size))
    mask = (images > 0).any(1).reshape(n, h * w)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=images.device, dtype=torch.float32) + 0.5,
        torch.arange(w, device=images.device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    u, v = xs.reshape(1, -1), ys.reshape(1, -1)
    bounds = []
    for row in range(2):
        a, b, c = A[:, row, 0:1], A[:, row, 1:2], A[:, row, 2]
        proj = a * u + b * v  # (N, h*w) output coordinate of every source pixel centre (minus offset)
        reach = (a.abs() + b.abs()).squeeze(1)  # half-extent of the image of a (-1, 1)^2 square
        lo = torch.where(mask, proj, torch.inf).amin(1) + c - reach
        hi = torch.where(mask, proj, -torch.inf).amax(1) + c + reach
        bounds += [-0.5 - lo + _BBOX_MARGIN, size + 0.5 - hi - _BBOX_MARGIN]
    return torch.stack(bounds, 1)


def sample_affnist_params(images: torch.Tensor, generator: torch.Generator) -> AffnistParams:
    """Draw the affNIST recipe's parameters for ``images`` ``Tensor[N, C, h, w]`` (28x28 or 40x40).

    Draws exactly one ``Tensor[N, 6]`` of uniforms from ``generator`` (on the generator's device):
    columns angle, shear, sx, sy, then the positions of tx and ty inside each digit's feasible
    interval (:func:`translation_bounds` intersected with ``AFFNIST_RANGES``). A digit too large for
    the frame is centred within its (empty) interval, i.e. cut equally on both sides.
    """
    _check_images(images)
    n = images.shape[0]
    u = torch.rand(n, 6, generator=generator, device=generator.device, dtype=torch.float32).to(images.device)

    def scaled(col: int, name: str) -> torch.Tensor:
        lo, hi = AFFNIST_RANGES[name]
        return lo + (hi - lo) * u[:, col]

    params = identity_params(n, device=images.device)
    params[:, 0] = scaled(0, "angle")
    params[:, 3] = scaled(1, "shear")
    params[:, 4] = scaled(2, "sx")
    params[:, 5] = scaled(3, "sy")
    bounds = translation_bounds(images, params)
    for k, (name, col) in enumerate((("tx", 1), ("ty", 2))):
        rmin, rmax = AFFNIST_RANGES[name]
        lo = bounds[:, 2 * k].clamp(rmin, rmax)
        hi = bounds[:, 2 * k + 1].clamp(rmin, rmax)
        empty = lo > hi
        mid = (lo + hi) / 2
        lo, hi = torch.where(empty, mid, lo), torch.where(empty, mid, hi)
        params[:, col] = lo + (hi - lo) * u[:, 4 + k]
    return AffnistParams(params)


def apply_affnist(images: torch.Tensor, params: AffnistParams | torch.Tensor) -> torch.Tensor:
    """Render ``images`` ``Tensor[N, C, h, w]`` (28x28 or padded 40x40) with ``params`` onto the
    40x40 canvas. Deterministic; returns ``Tensor[N, C, 40, 40]`` in [0, 1]."""
    _check_images(images)
    p = params.params if isinstance(params, AffnistParams) else params
    if p.shape[0] != images.shape[0]:
        raise ValueError(f"batch mismatch: {images.shape[0]} images vs {p.shape[0]} params")
    out = warp(images, p.to(device=images.device, dtype=images.dtype), (AFFNIST_SIZE, AFFNIST_SIZE))
    return out.clamp_(0.0, 1.0)


def make_affnist(images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, AffnistParams]:
    """AffNIST-style versions of ``images`` ``Tensor[N, C, 28, 28]`` (or padded 40x40).

    Returns ``(Tensor[N, C, 40, 40], AffnistParams)``; ``apply_affnist(images, params)`` replays the
    images bit for bit.
    """
    params = sample_affnist_params(images, generator)
    return apply_affnist(images, params), params
