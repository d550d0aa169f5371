"""Blending a foreground into a background through an alpha mask.

``blend(fg, alpha, bg, mode, **options)`` with ``fg``/``bg`` ``Tensor[B, C, H, W]`` and ``alpha``
``Tensor[B, 1, H, W]`` in [0, 1], all on the same canvas. Modes (Cut-Paste-Learn's set plus TERSE's
alpha blend and a Laplacian pyramid):

=========  ==============================================================  ===============
mode       what it does                                                    differentiable
=========  ==============================================================  ===============
none       hard paste where alpha > 0.5                                    w.r.t. fg/bg only
alpha      ``alpha * fg + (1 - alpha) * bg``                               yes
gaussian   alpha feathered by a Gaussian (``sigma``)                       yes
box        alpha feathered by a box filter (``kernel_size``)               yes
motion     alpha smeared by linear motion blur (``kernel_size``, ``angle``) yes
pyramid    Laplacian-pyramid blend (``levels``)                            yes
poisson    OpenCV seamless cloning (gradient-domain), per image on CPU     **no**
=========  ==============================================================  ===============

Poisson blending solves a linear system in OpenCV on NumPy arrays, so no gradient flows through
it; it is for dataset generation, not for the TERSE loops.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from synthloop.functional.filters import box_blur, gaussian_blur, motion_blur

BlendFn = Callable[..., torch.Tensor]
_REGISTRY: dict[str, BlendFn] = {}
DIFFERENTIABLE_BLEND_MODES: tuple[str, ...] = ("alpha", "gaussian", "box", "motion", "pyramid")


def register_blend(name: str) -> Callable[[BlendFn], BlendFn]:
    def deco(fn: BlendFn) -> BlendFn:
        if name in _REGISTRY:
            raise KeyError(f"blend mode {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def _mix(fg: torch.Tensor, alpha: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    return alpha * fg + (1.0 - alpha) * bg


@register_blend("none")
def blend_none(fg, alpha, bg):
    hard = (alpha > 0.5).to(fg.dtype)
    return _mix(fg, hard, bg)


@register_blend("alpha")
def blend_alpha(fg, alpha, bg):
    return _mix(fg, alpha, bg)


@register_blend("gaussian")
def blend_gaussian(fg, alpha, bg, sigma: float | torch.Tensor = 2.0):
    return _mix(fg, gaussian_blur(alpha, sigma), bg)


@register_blend("box")
def blend_box(fg, alpha, bg, kernel_size: int = 5):
    return _mix(fg, box_blur(alpha, kernel_size), bg)


@register_blend("motion")
def blend_motion(fg, alpha, bg, kernel_size: int = 7, angle: float | torch.Tensor = 0.0, direction: float | torch.Tensor = 0.0):
    return _mix(fg, motion_blur(alpha, kernel_size, angle, direction), bg)


_PYR_KERNEL_1D = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _pyr_filter(x: torch.Tensor) -> torch.Tensor:
    k = _PYR_KERNEL_1D.to(x.dtype).to(x.device)
    C = x.shape[1]
    kx = k.view(1, 1, 1, 5).expand(C, 1, 1, 5)
    ky = k.view(1, 1, 5, 1).expand(C, 1, 5, 1)
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), kx, groups=C)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), ky, groups=C)


def _pyr_down(x: torch.Tensor) -> torch.Tensor:
    return _pyr_filter(x)[..., ::2, ::2]


def _pyr_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    up = torch.zeros(*x.shape[:2], size[0], size[1], dtype=x.dtype, device=x.device)
    up[..., ::2, ::2] = x
    return _pyr_filter(up) * 4.0


@register_blend("pyramid")
def blend_pyramid(fg, alpha, bg, levels: int = 4):
    """Burt-Adelson Laplacian pyramid blend. The 5-tap binomial pyramid is written out here
    (a few lines) so reconstruction with our own ``_pyr_up`` is exact at every size."""
    g_f, g_b, g_a = fg, bg, alpha
    lap_f, lap_b, alphas = [], [], []
    for _ in range(max(1, int(levels)) - 1):
        if min(g_f.shape[-2:]) < 4:
            break
        d_f, d_b = _pyr_down(g_f), _pyr_down(g_b)
        size = (g_f.shape[-2], g_f.shape[-1])
        lap_f.append(g_f - _pyr_up(d_f, size))
        lap_b.append(g_b - _pyr_up(d_b, size))
        alphas.append(g_a)
        g_f, g_b, g_a = d_f, d_b, _pyr_down(g_a)
    out = _mix(g_f, g_a, g_b)
    for lf, lb, a in zip(reversed(lap_f), reversed(lap_b), reversed(alphas)):
        out = _pyr_up(out, (lf.shape[-2], lf.shape[-1])) + _mix(lf, a, lb)
    return out.clamp(0, 1)


_CLONE_FLAGS = {"normal": cv2.NORMAL_CLONE, "mixed": cv2.MIXED_CLONE}


@register_blend("poisson")
def blend_poisson(fg, alpha, bg, clone: str = "normal"):
    """OpenCV ``seamlessClone`` per image. NOT differentiable (the result is detached).

    The cloned region is computed in 8 bits (OpenCV); pixels outside the mask's bounding box are
    ``bg`` exactly. An empty mask returns ``bg``.
    """
    if clone not in _CLONE_FLAGS:
        raise ValueError(f"unknown poisson clone {clone!r}; valid: {', '.join(_CLONE_FLAGS)}")
    flag = _CLONE_FLAGS[clone]
    out = []
    for f, a, b in zip(fg.detach(), alpha.detach(), bg.detach()):
        out.append(_poisson_one(f, a, b, flag))
    return torch.stack(out).to(fg.dtype)


def _poisson_one(f: torch.Tensor, a: torch.Tensor, b: torch.Tensor, flag: int) -> torch.Tensor:
    C, H, W = f.shape
    m = (a[0] > 0.5).cpu().numpy().astype(np.uint8) * 255
    if not m.any():
        return b.clone()
    to8 = lambda t: (t.clamp(0, 1).cpu().numpy().transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)
    src, dst = to8(f), to8(b)
    if C == 1:
        src, dst = np.repeat(src, 3, 2), np.repeat(dst, 3, 2)
    # seamlessClone needs the mask's bounding box strictly inside the destination: pad everything.
    pad = 2
    src = cv2.copyMakeBorder(src, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    dst_p = cv2.copyMakeBorder(dst, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    m = cv2.copyMakeBorder(m, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    x, y, w, h = cv2.boundingRect(m)
    center = (x + w // 2, y + h // 2)
    res = cv2.seamlessClone(np.ascontiguousarray(src), np.ascontiguousarray(dst_p), m, center, flag)
    res = res[pad : pad + H, pad : pad + W]
    if C == 1:
        res = res[..., :1]
    cloned = torch.from_numpy(res.transpose(2, 0, 1).copy()).to(b.device, b.dtype) / 255.0
    # seamlessClone only writes inside the mask's bounding box; keep bg's full precision elsewhere.
    x0, y0 = x - pad, y - pad
    out = b.clone()
    out[:, y0 : y0 + h, x0 : x0 + w] = cloned[:, y0 : y0 + h, x0 : x0 + w]
    return out


BLEND_MODES: tuple[str, ...] = tuple(_REGISTRY)


def blend(fg: torch.Tensor, alpha: torch.Tensor, bg: torch.Tensor, mode: str = "alpha", **options) -> torch.Tensor:
    """Composite ``fg`` over ``bg`` through ``alpha`` with blend ``mode`` (see module docstring).

    Args:
        fg, bg: ``Tensor[B, C, H, W]``.
        alpha: ``Tensor[B, 1, H, W]`` in [0, 1].
        options: mode-specific (``sigma``, ``kernel_size``, ``angle``, ``direction``, ``levels``, ``clone``).
    """
    if mode not in _REGISTRY:
        raise ValueError(f"unknown blend mode {mode!r}; valid modes: {', '.join(_REGISTRY)}")
    if fg.shape != bg.shape:
        raise ValueError(f"fg {tuple(fg.shape)} and bg {tuple(bg.shape)} must have the same shape")
    if alpha.ndim != 4 or alpha.shape[1] != 1 or alpha.shape[0] != fg.shape[0] or alpha.shape[-2:] != fg.shape[-2:]:
        raise ValueError(f"alpha must be (B, 1, H, W) matching fg {tuple(fg.shape)}, got {tuple(alpha.shape)}")
    fn = _REGISTRY[mode]
    allowed = blend_options(mode)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"blend mode {mode!r} takes options {list(allowed) or 'none'}; got unknown {unknown}")
    return fn(fg, alpha, bg, **options)


def blend_options(mode: str) -> tuple[str, ...]:
    """Names of the options blend ``mode`` accepts."""
    params = list(inspect.signature(_REGISTRY[mode]).parameters)
    return tuple(params[3:])
