"""Blending a foreground into a background through an alpha mask, and the blend mode registry.

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

Every mode is one :class:`BlendMode` registration (:func:`register_blend`): its torch op, its
NumPy/OpenCV op (:mod:`synthloop.functional.numpy_ops`), how far it reaches beyond the alpha box,
its default options and how a scene sampler draws its options. :func:`blend` (torch),
:func:`blend_np` and :func:`blend_into` (NumPy, for the windowed compositor) dispatch through it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from synthloop.functional import numpy_ops

if TYPE_CHECKING:
    import torch

# torch (and the kornia filters) are imported inside the torch ops, not here: the NumPy path
# (blend_into, the registry) is what dataset-generation workers import, and they never load torch.

# --------------------------------------------------------------------------------------------
# torch ops: (fg, alpha, bg, **options) on (B, C, H, W); defaults come from the registry


def _mix(fg: torch.Tensor, alpha: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    return alpha * fg + (1.0 - alpha) * bg


def blend_none(fg, alpha, bg):
    hard = (alpha > 0.5).to(fg.dtype)
    return _mix(fg, hard, bg)


def blend_alpha(fg, alpha, bg):
    return _mix(fg, alpha, bg)


def blend_gaussian(fg, alpha, bg, sigma: float | torch.Tensor):
    from synthloop.functional.filters import gaussian_blur

    return _mix(fg, gaussian_blur(alpha, sigma), bg)


def blend_box(fg, alpha, bg, kernel_size: int):
    from synthloop.functional.filters import box_blur

    return _mix(fg, box_blur(alpha, kernel_size), bg)


def blend_motion(fg, alpha, bg, kernel_size: int, angle: float | torch.Tensor, direction: float | torch.Tensor):
    from synthloop.functional.filters import motion_blur

    return _mix(fg, motion_blur(alpha, kernel_size, angle, direction), bg)


_PYR_TAPS = (1.0, 4.0, 6.0, 4.0, 1.0)


def _pyr_filter(x: torch.Tensor) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    k = (torch.tensor(_PYR_TAPS) / 16.0).to(x.dtype).to(x.device)
    C = x.shape[1]
    kx = k.view(1, 1, 1, 5).expand(C, 1, 1, 5)
    ky = k.view(1, 1, 5, 1).expand(C, 1, 5, 1)
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), kx, groups=C)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), ky, groups=C)


def _pyr_down(x: torch.Tensor) -> torch.Tensor:
    return _pyr_filter(x)[..., ::2, ::2]


def _pyr_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    import torch

    up = torch.zeros(*x.shape[:2], size[0], size[1], dtype=x.dtype, device=x.device)
    up[..., ::2, ::2] = x
    return _pyr_filter(up) * 4.0


def blend_pyramid(fg, alpha, bg, levels: int):
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


def blend_poisson(fg, alpha, bg, clone: str):
    """OpenCV ``seamlessClone`` per image. NOT differentiable (the result is detached).

    The cloned region is computed in 8 bits (OpenCV); pixels outside the mask's bounding box are
    ``bg`` exactly. An empty mask returns ``bg``.
    """
    if clone not in _CLONE_FLAGS:
        raise ValueError(f"unknown poisson clone {clone!r}; valid: {', '.join(_CLONE_FLAGS)}")
    import torch

    flag = _CLONE_FLAGS[clone]
    out = []
    for f, a, b in zip(fg.detach(), alpha.detach(), bg.detach()):
        out.append(_poisson_one(f, a, b, flag))
    return torch.stack(out).to(fg.dtype)


def _poisson_one(f: torch.Tensor, a: torch.Tensor, b: torch.Tensor, flag: int) -> torch.Tensor:
    import torch

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
    if w < 3 or h < 3:
        # as numpy_ops.poisson_blend: seamlessClone fails on a mask under 3 px wide or tall (OpenCV
        # "!fixedSize()"); such a sliver has no interior to solve for, so it is pasted hard
        return torch.where(a[:1] > 0.5, f, b)
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


# --------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class UniformOption:
    """An option drawn uniformly from ``range`` (a :class:`~synthloop.compose.config.BlendConfig`
    field name, or fixed ``(lo, hi)``) and rounded to ``ndigits``."""

    range: str | tuple[float, float]
    ndigits: int


@dataclass(frozen=True)
class ChoiceOption:
    """An integer option drawn uniformly from the list in ``BlendConfig`` field ``field``."""

    field: str


NumpyOp = Callable[[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]], np.ndarray]
NumpyFeather = Callable[[np.ndarray, dict[str, Any]], np.ndarray]


@dataclass(frozen=True)
class BlendMode:
    """One blend mode.

    Attributes:
        name: the mode's name (``BlendSpec.mode``, config values).
        torch_op: ``(fg, alpha, bg, **options) -> Tensor`` on ``(B, C, H, W)``; every option is passed.
        numpy_feather: for a mode that is a plain mix, ``(alpha (h, w), options) -> alpha`` it mixes
            with (so the windowed compositor can mix in place); else ``None`` and ``numpy_op`` is set.
        numpy_op: ``(fg, alpha, bg, options) -> (h, w, C)`` for the other modes.
        margin: ``options -> int``: pixels the blend reaches beyond the alpha box.
        defaults: every option the mode takes, with its default.
        margin_defaults: defaults that ``margin`` alone uses instead (see "motion").
        sampled: the options a scene sampler draws, in drawing order (see
            :func:`synthloop.compose.sampler.sample_blend`); the others keep their defaults.
        differentiable: gradients flow w.r.t. fg, bg and alpha.
        hard: the NumPy path copies the foreground pixels where alpha > 0.5 unchanged.
    """

    name: str
    torch_op: Callable[..., torch.Tensor]
    numpy_feather: NumpyFeather | None = None
    numpy_op: NumpyOp | None = None
    margin: Callable[[dict[str, Any]], int] = lambda options: 1
    defaults: dict[str, Any] = field(default_factory=dict)
    margin_defaults: dict[str, Any] = field(default_factory=dict)
    sampled: dict[str, UniformOption | ChoiceOption] = field(default_factory=dict)
    differentiable: bool = True
    hard: bool = False

    def __post_init__(self) -> None:
        if (self.numpy_feather is None) == (self.numpy_op is None):
            raise ValueError(f"blend mode {self.name!r} needs exactly one of numpy_feather and numpy_op")
        if not set(self.sampled) <= set(self.defaults):
            raise ValueError(f"blend mode {self.name!r} samples options it does not take")

    def resolve(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """``options`` over the defaults."""
        return {**self.defaults, **(options or {})}

    def window_margin(self, options: dict[str, Any] | None) -> int:
        """Pixels the blend reaches beyond the alpha box with ``options``."""
        return self.margin({**self.defaults, **self.margin_defaults, **(options or {})})


_REGISTRY: dict[str, BlendMode] = {}


def register_blend(mode: BlendMode) -> BlendMode:
    """Add ``mode`` to the registry (``KeyError`` if its name is taken); returns it."""
    if mode.name in _REGISTRY:
        raise KeyError(f"blend mode {mode.name!r} is already registered")
    _REGISTRY[mode.name] = mode
    return mode


def blend_mode(name: str) -> BlendMode:
    """The registered mode ``name`` (``ValueError`` listing the valid modes otherwise)."""
    hit = _REGISTRY.get(name)
    if hit is None:
        raise ValueError(f"unknown blend mode {name!r}; valid modes: {', '.join(_REGISTRY)}")
    return hit


register_blend(BlendMode("none", blend_none, numpy_feather=lambda a, o: numpy_ops.hard_alpha(a), differentiable=False, hard=True))
register_blend(BlendMode("alpha", blend_alpha, numpy_feather=lambda a, o: a))
register_blend(
    BlendMode(
        "gaussian",
        blend_gaussian,
        numpy_feather=lambda a, o: numpy_ops.gaussian_feather(a, float(o["sigma"])),
        margin=lambda o: int(math.ceil(3.0 * float(o["sigma"]))) + 1,
        defaults={"sigma": 2.0},
        sampled={"sigma": UniformOption("gaussian_sigma", 4)},
    )
)
register_blend(
    BlendMode(
        "box",
        blend_box,
        numpy_feather=lambda a, o: numpy_ops.box_feather(a, int(o["kernel_size"])),
        margin=lambda o: int(o["kernel_size"]) // 2 + 1,
        defaults={"kernel_size": 5},
        sampled={"kernel_size": ChoiceOption("box_kernel")},
    )
)
register_blend(
    BlendMode(
        "motion",
        blend_motion,
        numpy_feather=lambda a, o: numpy_ops.motion_feather(a, int(o["kernel_size"]), float(o["angle"])),
        margin=lambda o: int(o["kernel_size"]) // 2 + 1,
        defaults={"kernel_size": 7, "angle": 0.0, "direction": 0.0},
        # a motion blend without a kernel_size has always had the window margin of a 5-tap kernel
        # (the blend itself uses 7); a wider window changes float rounding, so this is kept
        margin_defaults={"kernel_size": 5},
        sampled={"kernel_size": ChoiceOption("motion_kernel"), "angle": UniformOption((0.0, 180.0), 3)},
    )
)
register_blend(
    BlendMode(
        "pyramid",
        blend_pyramid,
        numpy_op=lambda fg, a, bg, o: numpy_ops.pyramid_blend(fg, a, bg, int(o["levels"])),
        margin=lambda o: 2 ** int(o["levels"]),
        defaults={"levels": 4},
        sampled={"levels": ChoiceOption("pyramid_levels")},
    )
)
register_blend(
    BlendMode(
        "poisson",
        blend_poisson,
        numpy_op=lambda fg, a, bg, o: numpy_ops.poisson_blend(fg, a, bg),  # always a normal clone
        margin=lambda o: 3,
        defaults={"clone": "normal"},
        differentiable=False,
    )
)

BLEND_MODES: tuple[str, ...] = tuple(_REGISTRY)
DIFFERENTIABLE_BLEND_MODES: tuple[str, ...] = tuple(m for m, spec in _REGISTRY.items() if spec.differentiable)


# --------------------------------------------------------------------------------------------
# dispatch


def blend(fg: torch.Tensor, alpha: torch.Tensor, bg: torch.Tensor, mode: str = "alpha", **options) -> torch.Tensor:
    """Composite ``fg`` over ``bg`` through ``alpha`` with blend ``mode`` (see module docstring).

    Args:
        fg, bg: ``Tensor[B, C, H, W]``.
        alpha: ``Tensor[B, 1, H, W]`` in [0, 1].
        options: mode-specific (``sigma``, ``kernel_size``, ``angle``, ``direction``, ``levels``, ``clone``).
    """
    spec = blend_mode(mode)
    if fg.shape != bg.shape:
        raise ValueError(f"fg {tuple(fg.shape)} and bg {tuple(bg.shape)} must have the same shape")
    if alpha.ndim != 4 or alpha.shape[1] != 1 or alpha.shape[0] != fg.shape[0] or alpha.shape[-2:] != fg.shape[-2:]:
        raise ValueError(f"alpha must be (B, 1, H, W) matching fg {tuple(fg.shape)}, got {tuple(alpha.shape)}")
    allowed = tuple(spec.defaults)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"blend mode {mode!r} takes options {list(allowed) or 'none'}; got unknown {unknown}")
    return spec.torch_op(fg, alpha, bg, **spec.resolve(options))


def blend_options(mode: str) -> tuple[str, ...]:
    """Names of the options blend ``mode`` accepts."""
    return tuple(blend_mode(mode).defaults)


def blend_np(fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray, mode: str, options: dict | None = None) -> np.ndarray:
    """NumPy counterpart of :func:`blend` on ``(h, w, C)`` arrays (options it does not take are ignored)."""
    spec = blend_mode(mode)
    o = spec.resolve(options)
    if spec.numpy_feather is not None:
        return numpy_ops.mix(fg, spec.numpy_feather(alpha, o), bg)
    return spec.numpy_op(fg, alpha, bg, o)


def blend_into(bg: np.ndarray, fg: np.ndarray, alpha: np.ndarray, mode: str, options: dict | None = None, *, clamp: bool = True) -> None:
    """:func:`blend_np` written into ``bg`` in place; ``bg`` may be a view of a larger canvas.

    ``fg`` and ``bg`` are ``(h, w, C)`` float32 in [0, 1] (C = 1 to 4), ``alpha`` ``(h, w)``;
    the result stays in [0, 1]. ``fg`` may also be an ``(h, w, 4)`` RGBA window for a 3-channel
    ``bg`` (its alpha channel is ignored), so a warped RGBA cut-out needs no split beforehand.
    A plain mix uses the feathered alpha clamped to [0, 1] (see :func:`numpy_ops.mix_into
    <synthloop.functional.numpy_ops.mix_into>`, which also explains ``clamp``); a hard paste
    (``"none"``) copies the foreground pixels unchanged.
    """
    spec = blend_mode(mode)
    o = spec.resolve(options)
    fg = numpy_ops.colour_channels(fg, bg.shape[2])
    if spec.hard:
        numpy_ops.paste_hard_into(bg, fg, alpha)
        return
    if spec.numpy_feather is None:
        bg[...] = spec.numpy_op(fg, np.ascontiguousarray(alpha), np.ascontiguousarray(bg), o)
        return
    a = np.clip(spec.numpy_feather(np.ascontiguousarray(alpha, dtype=np.float32), o), 0.0, 1.0)
    numpy_ops.mix_into(bg, fg, a, clamp=clamp)


def window_margin(mode: str, options: dict | None = None) -> int:
    """Pixels blend ``mode`` with ``options`` reaches beyond the alpha box (the windowed
    compositor grows each object's window by this much)."""
    return blend_mode(mode).window_margin(options)
