"""TERSE synthesizer networks S (section 3.4, supplementary A.1 and A.2).

S looks at a foreground (and a background) and *predicts* the placement parameters that
:func:`synthloop.functional.geometry.warp` consumes: ``(angle, tx, ty, shear, sx, sy)`` per object,
squashed into configured ranges by :class:`AffineHead`, plus optional photometric factors
(brightness, contrast) for :func:`synthloop.functional.color.photometric`.

Architecture (Figure 6): a shared low-level *backbone* run on foreground and background alike,
parallel mid-level branches (*FgBranch*, *BgBranch*), and *RegressionFC*: two convolutions over
the concatenated branch outputs, then fully connected layers ending in the raw outputs.

Stochasticity: the paper's S is deterministic given its input; the variety of transforms it
produces for one digit comes from dropout, which stays active while S is trained (and whenever
S is in ``train()`` mode). ``noise_dim > 0`` adds an explicit alternative: a random vector
concatenated to the regressor's input, passed in (or drawn from a given ``torch.Generator``) and
returned in the output dict, so a placement can be replayed exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from synthloop.errors import InputError
from synthloop.models.classifiers import conv_out
from synthloop.models.registry import register_model

Range = tuple[float, float]

PHOTOMETRIC_HEAD_NAMES: tuple[str, ...] = ("brightness", "contrast")


def _check_range(owner: str, name: str, value: object) -> Range:
    try:
        lo, hi = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InputError(f"{owner}: range for {name!r} must be a pair (min, max), got {value!r}", field=name) from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"{owner}: range for {name!r} must be finite, got ({lo}, {hi})", field=name)
    if lo > hi:
        raise InputError(f"{owner}: range for {name!r} has min {lo} > max {hi}", field=name)
    return lo, hi


class _Ranges:
    """Shared behaviour of the range dataclasses: validation, ordering, dict round trip."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            object.__setattr__(self, f.name, _check_range(type(self).__name__, f.name, getattr(self, f.name)))

    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))  # type: ignore[arg-type]

    def bounds(self) -> tuple[list[float], list[float]]:
        """``(lows, highs)`` in field order."""
        pairs = [getattr(self, n) for n in self.names()]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def to_dict(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in asdict(self).items()}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Mapping[str, object]):
        """Build from ``{name: (min, max)}``; missing names keep their defaults.

        Raises:
            InputError: an unknown name (the message lists the valid ones) or a bad range.
        """
        valid = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        for key in data:
            if key not in valid:
                raise InputError(f"{cls.__name__}: unknown parameter {key!r}; valid: {', '.join(valid)}", field=str(key))
        return cls(**data)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ParamRanges(_Ranges):
    """``(min, max)`` of each affine parameter S may output (units of :mod:`~synthloop.functional.geometry`).

    ``angle`` in degrees, ``tx``/``ty`` in output pixels (offset of the foreground centre from
    the canvas centre), ``shear`` a factor, ``sx``/``sy`` scales. ``min == max`` pins a parameter.
    The defaults are AffNIST-like ranges for a 40x40 canvas (rotation within 20 degrees, scale
    0.8-1.2, small shear, translations that keep an MNIST digit inside the canvas); TERSE clamps
    S's outputs to "the same range used to generate AffNIST", which the paper does not list.
    Every default range is centred on the identity, so a raw output of 0 is the identity placement.

    Raises:
        InputError: (a ``ValueError``) when a range has ``min > max`` or is not finite.
    """

    angle: Range = (-20.0, 20.0)
    tx: Range = (-8.0, 8.0)
    ty: Range = (-8.0, 8.0)
    shear: Range = (-0.2, 0.2)
    sx: Range = (0.8, 1.2)
    sy: Range = (0.8, 1.2)


@dataclass(frozen=True)
class PhotometricRanges(_Ranges):
    """``(min, max)`` of the optional photometric outputs: multiplicative factors, 1 = identity."""

    brightness: Range = (0.7, 1.3)
    contrast: Range = (0.7, 1.3)


def _coerce(kind: type[_Ranges], value: object) -> _Ranges:
    if isinstance(value, kind):
        return value
    if isinstance(value, Mapping):
        return kind.from_dict(value)
    raise TypeError(f"expected {kind.__name__} or a mapping, got {type(value).__name__}")


def to_color_params(photometric: torch.Tensor) -> torch.Tensor:
    """Expand S's ``(..., 2)`` (brightness, contrast) to the ``(..., 4)`` (brightness, contrast,
    saturation, hue) that :func:`synthloop.functional.color.photometric` takes (saturation 1, hue 0)."""
    rest = torch.tensor([1.0, 0.0], dtype=photometric.dtype, device=photometric.device).expand(*photometric.shape[:-1], 2)
    return torch.cat([photometric, rest], -1)


class AffineHead(nn.Module):
    """Squash raw outputs into ranges: ``lo + (hi - lo) * sigmoid(raw)`` per parameter.

    Computed as ``torch.lerp(lo, hi, sigmoid(raw))``, which returns exactly ``lo``/``hi`` at the
    saturated ends (so outputs never leave ``[lo, hi]`` by a rounding error) and the constant
    ``lo`` for a degenerate range. The bounds are non-persistent buffers: they come from the
    configuration, not from checkpoints.

    Args:
        ranges: affine ranges (a :class:`ParamRanges` or a mapping of name -> (min, max)).
        photometric: photometric ranges, or ``None`` (default) for affine outputs only.

    Shapes: ``raw`` ``Tensor[..., n_outputs]`` (6, or 8 with photometrics; affine first, in
    ``AFFINE_PARAM_NAMES`` order) -> ``{"params": Tensor[..., 6], "photometric": Tensor[..., 2]}``
    (the latter only when enabled).
    """

    def __init__(self, ranges: ParamRanges | Mapping[str, Range] | None = None, photometric: PhotometricRanges | Mapping[str, Range] | None = None):
        super().__init__()
        self.ranges = _coerce(ParamRanges, ranges) if ranges is not None else ParamRanges()
        self.photometric_ranges = _coerce(PhotometricRanges, photometric) if photometric is not None else None
        lo, hi = self.ranges.bounds()
        if self.photometric_ranges is not None:
            plo, phi = self.photometric_ranges.bounds()
            lo, hi = lo + plo, hi + phi
        self.register_buffer("lo", torch.tensor(lo), persistent=False)
        self.register_buffer("hi", torch.tensor(hi), persistent=False)

    @property
    def n_outputs(self) -> int:
        return int(self.lo.numel())

    def forward(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        if raw.shape[-1] != self.n_outputs:
            raise ValueError(f"AffineHead expects {self.n_outputs} raw outputs in the last dim, got shape {tuple(raw.shape)}")
        lo, hi = self.lo.to(raw.dtype), self.hi.to(raw.dtype)
        out = torch.lerp(lo, hi, torch.sigmoid(raw))
        result = {"params": out[..., :6]}
        if self.photometric_ranges is not None:
            result["photometric"] = out[..., 6:]
        return result


def init_xavier(module: nn.Module, gain: float = 0.4) -> nn.Module:
    """Xavier-uniform init (TERSE A.1 uses gain 0.4) of every conv and linear weight; zero biases.

    Normalisation layers keep their defaults (weight 1, bias 0). Returns ``module``.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def _draw_noise(noise_dim: int, batch: int, noise: torch.Tensor | None, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    if noise is None:
        if generator is None:
            raise ValueError(f"this synthesizer has noise_dim={noise_dim}: pass noise=Tensor[B, {noise_dim}] or a torch.Generator")
        noise = torch.randn(batch, noise_dim, generator=generator, device=generator.device).to(device=like.device, dtype=like.dtype)
    if noise.shape != (batch, noise_dim):
        raise ValueError(f"noise must have shape ({batch}, {noise_dim}), got {tuple(noise.shape)}")
    return noise.to(like.dtype)


class _TwoStreamSynthesizer(nn.Module):
    """Shared forward of both synthesizers: backbone over foregrounds and backgrounds in one
    batch, the two branches, RegressionFC, the head. Subclasses build the layers."""

    backbone: nn.Module
    fg_branch: nn.Module
    bg_branch: nn.Module
    features: nn.Module
    regressor: nn.Module
    head: AffineHead
    noise_dim: int

    def __init__(
        self,
        ranges: ParamRanges | Mapping[str, Range] | None,
        photometric: PhotometricRanges | Mapping[str, Range] | None,
        input_size: Sequence[int],
        noise_dim: int,
    ):
        super().__init__()
        if noise_dim < 0:
            raise ValueError(f"noise_dim must be >= 0, got {noise_dim}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.noise_dim = noise_dim
        self.head = AffineHead(ranges, photometric)

    def _regress(self, fg: torch.Tensor, bg: torch.Tensor, per_sample_fg: int, noise: torch.Tensor | None, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """``fg`` ``(B * per_sample_fg, C, H, W)``, ``bg`` ``(B, C, H, W)`` -> raw outputs and noise."""
        b = bg.shape[0]
        # one backbone call: identical low-level features for both inputs, one BatchNorm update
        feats = self.backbone(torch.cat([fg, bg], 0))
        f = self.fg_branch(feats[: fg.shape[0]])
        f = f.reshape(b, per_sample_fg * f.shape[1], *f.shape[2:])
        x = self.features(torch.cat([f, self.bg_branch(feats[fg.shape[0] :])], 1)).flatten(1)
        out: dict[str, torch.Tensor] = {}
        if self.noise_dim > 0:
            out["noise"] = _draw_noise(self.noise_dim, b, noise, generator, x)
            x = torch.cat([x, out["noise"]], 1)
        elif noise is not None:
            raise ValueError("noise was given but this synthesizer has noise_dim=0")
        out["raw"] = self.regressor(x)
        return out


def _check_image(name: str, x: torch.Tensor, channels: int, size: tuple[int, int] | None = None) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must be (B, {channels}, H, W), got {tuple(x.shape)}")
    if size is not None and tuple(x.shape[-2:]) != size:
        raise ValueError(f"{name} must be {size[0]}x{size[1]} (the synthesizer's input_size), got {tuple(x.shape[-2:])}")


def _regressor(in_features: int, hidden: tuple[int, int], out_features: int, dropout: float) -> nn.Sequential:
    """RegressionFC's fully connected part: two hidden [Linear, ReLU, BN1d, Dropout] layers, then Linear."""
    h1, h2 = hidden
    return nn.Sequential(
        nn.Linear(in_features, h1),
        nn.ReLU(),
        nn.BatchNorm1d(h1),
        nn.Dropout(dropout),
        nn.Linear(h1, h2),
        nn.ReLU(),
        nn.BatchNorm1d(h2),
        nn.Dropout(dropout),
        nn.Linear(h2, out_features),
    )


def _mnist_block(in_channels: int, dropout: float) -> nn.Sequential:
    """[Conv(->20, 3x3), ReLU, BN, Dropout2d] x 2: the AffNIST synthesizer's branches and features."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 20, 3),
        nn.ReLU(),
        nn.BatchNorm2d(20),
        nn.Dropout2d(dropout),
        nn.Conv2d(20, 20, 3),
        nn.ReLU(),
        nn.BatchNorm2d(20),
        nn.Dropout2d(dropout),
    )


@register_model("mnist_synthesizer")
class MNISTSynthesizer(_TwoStreamSynthesizer):
    """TERSE's AffNIST synthesizer (A.1 dump), predicting one affine placement per digit.

    Layers, as in the dump (convolutions unpadded, stride 1):

    - ``backbone``: Conv(C->10, 5x5), MaxPool(3, 2), BN, ReLU, Dropout2d(0.5);
    - ``fg_branch`` and ``bg_branch``: [Conv(->20, 3x3), ReLU, BN, Dropout2d(0.5)] x 2;
    - ``features`` (RegressionFC): Conv(40->20, 3x3), ReLU, BN, Dropout2d, Conv(20->20, 3x3),
      ReLU, BN, Dropout2d;
    - ``regressor``: Linear(->50), ReLU, BN1d, Dropout(0.5), Linear(50->20), ReLU, BN1d,
      Dropout(0.5), Linear(20->6 [+2 photometric]); then :class:`AffineHead`.

    On 40x40 input: ``40 -conv5-> 36 -pool3/2-> 17 -conv3-> 15 -conv3-> 13`` (both branches),
    ``-conv3-> 11 -conv3-> 9``, so the regressor sees ``20 * 9 * 9 = 1620`` features, exactly the
    dump's ``in_features``; the width is computed from ``input_size`` (plus ``noise_dim``).

    Background branch: the dump's RegressionFC takes 40 channels although it lists only the
    foreground branch (20 channels), so a second 20-channel branch must feed it. It is the
    background branch of A.2 / Figure 6. AffNIST composites digits on black, so a missing
    ``background`` is a black image (zeros) run through the shared backbone and ``bg_branch``:
    ``S(fg)`` equals ``S(fg, zeros)`` exactly, there is no extra parameter that only one call
    style would train, and real backgrounds can be passed without changing the network. (A
    learned constant would save half a backbone pass, a negligible cost on 40x40 images.)

    BatchNorm1d in the regressor needs batches of at least 2 in ``train()`` mode.

    Args:
        ranges: affine output ranges (defaults: :class:`ParamRanges`).
        photometric: optional photometric ranges; adds ``"photometric"`` ``(B, 2)`` to the output.
        in_channels: image channels (1 for MNIST).
        input_size: ``(H, W)`` of foreground and background.
        noise_dim: length of an optional random vector concatenated before the regressor.
        dropout: dropout probability everywhere (0.5 in the paper).
        init_gain: Xavier gain (0.4 in the paper).
    """

    def __init__(
        self,
        ranges: ParamRanges | Mapping[str, Range] | None = None,
        photometric: PhotometricRanges | Mapping[str, Range] | None = None,
        in_channels: int = 1,
        input_size: Sequence[int] = (40, 40),
        noise_dim: int = 0,
        dropout: float = 0.5,
        init_gain: float = 0.4,
    ):
        super().__init__(ranges, photometric, input_size, noise_dim)
        self.in_channels = in_channels
        self.backbone = nn.Sequential(nn.Conv2d(in_channels, 10, 5), nn.MaxPool2d(3, 2), nn.BatchNorm2d(10), nn.ReLU(), nn.Dropout2d(dropout))
        self.fg_branch = _mnist_block(10, dropout)
        self.bg_branch = _mnist_block(10, dropout)
        self.features = _mnist_block(40, dropout)
        side = [conv_out(conv_out(conv_out(conv_out(conv_out(conv_out(s, 5), 3, 2), 3), 3), 3), 3) for s in self.input_size]
        if min(side) <= 0:
            raise ValueError(f"input_size {self.input_size} is too small for MNISTSynthesizer (needs at least 23x23)")
        self.flat_features = 20 * side[0] * side[1]
        self.regressor = _regressor(self.flat_features + noise_dim, (50, 20), self.head.n_outputs, dropout)
        init_xavier(self, init_gain)

    def forward(
        self,
        fg: torch.Tensor,
        background: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Predict one placement per foreground.

        Args:
            fg: ``Tensor[B, C, H, W]`` foreground (the padded digit) in [0, 1].
            background: optional ``Tensor[B, C, H, W]``; ``None`` = black.
            noise: ``Tensor[B, noise_dim]`` when ``noise_dim > 0`` (else drawn from ``generator``).
            generator: source of ``noise`` when it is not given.
        Returns:
            ``{"params": Tensor[B, 6], "raw": Tensor[B, 6 or 8]}`` plus ``"photometric"``
            ``Tensor[B, 2]`` when enabled and ``"noise"`` ``Tensor[B, noise_dim]`` when used.
        """
        _check_image("fg", fg, self.in_channels, self.input_size)
        if background is None:
            background = torch.zeros_like(fg)
        else:
            _check_image("background", background, self.in_channels, self.input_size)
            if background.shape[0] != fg.shape[0]:
                raise ValueError(f"batch mismatch: fg {fg.shape[0]} vs background {background.shape[0]}")
        out = self._regress(fg, background.to(fg.dtype), 1, noise, generator)
        out.update(self.head(out["raw"]))
        return out


def _scene_branch(in_ch: int, mid: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, mid, 3),
        nn.BatchNorm2d(mid),
        nn.ReLU(),
        nn.Conv2d(mid, mid, 3),
        nn.BatchNorm2d(mid),
        nn.ReLU(),
        nn.Conv2d(mid, out_ch, 3),
    )


@register_model("scene_synthesizer")
class SceneSynthesizer(_TwoStreamSynthesizer):
    """TERSE's scene synthesizer (A.2 dump) for pasting cut-outs into photographs.

    Deviation from the paper: A.2 uses VGG-16 up to conv5 (ImageNet-pretrained) as the backbone.
    synthloop downloads no weights, so the backbone is a small VGG-style stack trained from
    scratch: for each entry of ``channels`` one [Conv 3x3 pad 1, BN, ReLU, MaxPool 2] stage.
    The rest follows the dump: ``fg_branch`` and ``bg_branch`` are [Conv 3x3, BN, ReLU] x 2 then
    Conv 3x3 -> 20 channels (unpadded); ``features`` is [Conv 5x5 pad 2, ReLU, BN] x 2 with 64
    channels; ``regressor`` is Linear(->128), ReLU, BN1d, Linear(128->128), ReLU, BN1d,
    Linear(128 -> K * outputs). (In the paper a 224x224 input gives a 7x7 VGG map, 1x1 after
    the three unpadded branch convs, hence its ``Linear(64 -> 128)``; here the flatten width is
    computed from ``input_size``.)

    Inputs: each foreground is an RGBA cut-out; the backbone sees its colour premultiplied by
    alpha (the paper's foreground is the masked object on black) plus alpha as a fourth channel,
    so the object's shape is visible even where it is dark. The background is RGB with an
    all-ones alpha channel, so one shared 4-channel backbone serves both. Inputs of another size
    are resized to ``input_size`` (bilinear, antialiased); letterbox cut-outs beforehand to keep
    their aspect ratio.

    ``num_objects = K`` foregrounds per background: their branch features are concatenated with
    the background's (``20 * (K + 1)`` channels; K = 1 is the paper's 40) and the regressor
    predicts all K placements jointly, so it can coordinate them. Dropout (``dropout > 0``; the
    paper's ablation, Table 2, uses dropout in S) is applied to the concatenated mid-level features
    and after each hidden FC layer, as in the AffNIST synthesizer.

    Args:
        ranges: affine output ranges (``tx``/``ty`` are pixels of the canvas the cut-out is
            warped onto, so set them for that canvas).
        photometric: optional photometric ranges; adds ``"photometric"`` ``(B, K, 2)``.
        num_objects: K placements per background.
        channels: backbone stage widths (each stage halves the resolution).
        branch_channels: width of the mid-level branches.
        input_size: ``(H, W)`` both inputs are resized to.
        noise_dim: length of an optional random vector concatenated before the regressor.
        dropout: dropout probability (0 disables).
        init_gain: Xavier gain for all conv and linear weights.
    """

    def __init__(
        self,
        ranges: ParamRanges | Mapping[str, Range] | None = None,
        photometric: PhotometricRanges | Mapping[str, Range] | None = None,
        num_objects: int = 1,
        channels: Sequence[int] = (32, 64, 128, 256),
        branch_channels: int = 128,
        input_size: Sequence[int] = (128, 128),
        noise_dim: int = 0,
        dropout: float = 0.5,
        init_gain: float = 0.4,
    ):
        if num_objects < 1:
            raise ValueError(f"num_objects must be >= 1, got {num_objects}")
        if not channels:
            raise ValueError("channels must list at least one backbone stage")
        super().__init__(ranges, photometric, input_size, noise_dim)
        self.num_objects = num_objects
        stages: list[nn.Module] = []
        c = 4
        side = list(self.input_size)
        for width in channels:
            stages += [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
            side = [s // 2 for s in side]
            c = width
        self.backbone = nn.Sequential(*stages)
        side = [s - 6 for s in side]  # three unpadded 3x3 convs in each branch
        if min(side) <= 0:
            raise ValueError(
                f"input_size {self.input_size} is too small for {len(channels)} backbone stages: "
                f"the branches need a backbone map of at least 7x7 (input >= {7 * 2 ** len(channels)} px)"
            )
        self.fg_branch = _scene_branch(c, branch_channels, 20)
        self.bg_branch = _scene_branch(c, branch_channels, 20)
        self.features = nn.Sequential(
            nn.Dropout2d(dropout),
            nn.Conv2d(20 * (num_objects + 1), 64, 5, padding=2),
            nn.ReLU(),
            nn.BatchNorm2d(64),
            nn.Conv2d(64, 64, 5, padding=2),
            nn.ReLU(),
            nn.BatchNorm2d(64),
        )
        self.flat_features = 64 * side[0] * side[1]
        self.regressor = _regressor(self.flat_features + noise_dim, (128, 128), num_objects * self.head.n_outputs, dropout)
        init_xavier(self, init_gain)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.input_size:
            return x
        return F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)

    def forward(
        self,
        fg: torch.Tensor,
        background: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Predict K placements of the cut-outs on each background.

        Args:
            fg: RGBA cut-outs in [0, 1], ``Tensor[B, 4, h, w]`` (K = 1) or ``Tensor[B, K, 4, h, w]``.
            background: ``Tensor[B, 3, H, W]`` RGB in [0, 1].
            noise: ``Tensor[B, noise_dim]`` when ``noise_dim > 0`` (else drawn from ``generator``).
            generator: source of ``noise`` when it is not given.
        Returns:
            ``{"params": Tensor[B, K, 6], "raw": Tensor[B, K, 6 or 8]}`` plus ``"photometric"``
            ``Tensor[B, K, 2]`` when enabled and ``"noise"`` ``Tensor[B, noise_dim]`` when used.
        """
        k = self.num_objects
        if fg.ndim == 4 and k == 1:
            fg = fg.unsqueeze(1)
        if fg.ndim != 5 or fg.shape[1] != k or fg.shape[2] != 4:
            raise ValueError(f"fg must be RGBA (B, {k}, 4, h, w) (or (B, 4, h, w) when num_objects=1), got {tuple(fg.shape)}")
        _check_image("background", background, 3)
        b = fg.shape[0]
        if background.shape[0] != b:
            raise ValueError(f"batch mismatch: fg {b} vs background {background.shape[0]}")
        flat = fg.reshape(b * k, 4, *fg.shape[-2:])
        fg_in = self._resize(torch.cat([flat[:, :3] * flat[:, 3:], flat[:, 3:]], 1))
        bg = background.to(fg.dtype)
        bg_in = self._resize(torch.cat([bg, torch.ones_like(bg[:, :1])], 1))
        out = self._regress(fg_in, bg_in, k, noise, generator)
        out["raw"] = out["raw"].reshape(b, k, self.head.n_outputs)
        out.update(self.head(out["raw"]))
        return out
