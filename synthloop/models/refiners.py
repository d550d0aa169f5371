"""Synthetic-to-real refiners: the CycleGAN ResNet generator (MrGAN's building block), the PixelDA
generator, and the small ResNet classifier of MrGAN's appendix 3.

Every network here takes ``Tensor[N, C, H, W]`` images in [0, 1]. The generators work internally
in [-1, 1] (as CycleGAN and PixelDA do, with a ``tanh`` output) and map their output back to
[0, 1]. Discriminators are :class:`synthloop.models.discriminator.PatchDiscriminator`: a PatchGAN
is what CycleGAN and MrGAN (appendix 6: ``C64, C128, C256, C512``) use.

Initialisation is reproducible: every constructor takes an optional ``generator``
(``torch.Generator``) and, when given, draws all initial weights from it and from nothing else,
so two networks built with equally seeded generators are identical. :func:`init_gan_weights`
re-initialises any module (e.g. a ``PatchDiscriminator``) the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

from synthloop.models.registry import register_model

NormName = Literal["instance", "batch", "none"]
NORMS: tuple[str, ...] = ("instance", "batch", "none")

_NORM_TYPES = (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)
_WEIGHT_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def _norm(name: str, channels: int) -> nn.Module:
    if name == "instance":
        # CycleGAN's generator: InstanceNorm without affine parameters or running statistics
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {name!r}")


def _init_weights(module: nn.Module, init_weight: Callable[[torch.Tensor], object], init_norm_scale: Callable[[torch.Tensor], object]) -> nn.Module:
    """In place, in module order: conv and linear weights by ``init_weight``, their biases 0; affine
    norm scales by ``init_norm_scale``, norm shifts 0. Returns ``module``."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, _WEIGHT_TYPES):
                init_weight(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, _NORM_TYPES) and getattr(m, "weight", None) is not None:
                init_norm_scale(m.weight)
                nn.init.zeros_(m.bias)
    return module


def init_gan_weights(module: nn.Module, std: float = 0.02, generator: torch.Generator | None = None) -> nn.Module:
    """pix2pix / CycleGAN initialisation, in place: conv and linear weights ~ N(0, std), their
    biases 0; affine norm scales ~ N(1, std), norm shifts 0. Returns ``module``.

    MrGAN (appendix 6) writes "zero mean and variance 0.02" for the norm scales too; CycleGAN's
    code, which MrGAN builds on, centres them at 1 (a scale near 0 would switch the layer off),
    and so does this function. ``std`` is a standard deviation, as in that code.
    """
    return _init_weights(
        module,
        lambda w: nn.init.normal_(w, 0.0, std, generator=generator),
        lambda w: nn.init.normal_(w, 1.0, std, generator=generator),
    )


def init_glorot(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Glorot (Xavier) uniform weights for every conv and linear layer, zero biases, unit norm
    scales and zero shifts, in place (MrGAN appendices 2 and 3 initialise their classifiers so)."""
    return _init_weights(module, lambda w: nn.init.xavier_uniform_(w, generator=generator), nn.init.ones_)


def _check_images(name: str, x: torch.Tensor, channels: int) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} expects images of shape (N, {channels}, H, W), got {tuple(x.shape)}")


class ResnetBlock(nn.Module):
    """CycleGAN's residual block ``R{c}``: reflect-pad, 3x3 conv, norm, ReLU, reflect-pad, 3x3 conv,
    norm, plus the input. ``Tensor[N, c, H, W]`` -> ``Tensor[N, c, H, W]``.

    ``padding="zeros"`` is PixelDA's block instead: the convs zero-pad (no padding layers).
    """

    def __init__(self, channels: int, norm: NormName = "instance", padding: Literal["reflect", "zeros"] = "reflect"):
        super().__init__()
        reflect = padding == "reflect"

        def conv_norm() -> list[nn.Module]:
            pad = [nn.ReflectionPad2d(1)] if reflect else []
            return [*pad, nn.Conv2d(channels, channels, 3, padding=0 if reflect else 1), _norm(norm, channels)]

        self.body = nn.Sequential(*conv_norm(), nn.ReLU(), *conv_norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@register_model("resnet_generator")
class ResnetGenerator(nn.Module):
    """The CycleGAN ResNet generator that MrGAN stacks (appendix 6), sized by its arguments.

    MrGAN's generator, in CycleGAN's notation, is ``c7s1-32, d64, d128, R128 x 9, u64, u32,
    c7s1-3``: ``base_channels=32, n_downsample=2, n_blocks=9``. The defaults here are sized down
    for 28x28 / 32x32 digits (``base_channels=16, n_blocks=4``): the blocks then run on 7x7 / 8x8
    maps with 64 channels.

    Layers: ``c7s1-b`` (reflect-pad 3, 7x7 conv, norm, ReLU); ``n_downsample`` times ``d{2^i b}``
    (3x3 conv stride 2, norm, ReLU); ``n_blocks`` :class:`ResnetBlock`; ``n_downsample`` times
    ``u`` (3x3 transposed conv stride 2, norm, ReLU); ``c7s1-out`` with ``tanh``.

    Args:
        in_channels: image channels (1 grey, 3 RGB).
        out_channels: output channels (default ``in_channels``).
        base_channels: channels of the first layer (each down-sampling doubles them).
        n_downsample: stride-2 stages; ``H`` and ``W`` must be multiples of ``2 ** n_downsample``.
        n_blocks: residual blocks at the lowest resolution.
        norm: ``"instance"`` (CycleGAN), ``"batch"`` or ``"none"``.
        init_std: standard deviation of the initial weights (:func:`init_gan_weights`).
        generator: draws the initial weights (see the module docstring).

    Shapes: ``Tensor[N, in_channels, H, W]`` in [0, 1] -> ``Tensor[N, out_channels, H, W]`` in [0, 1].
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        base_channels: int = 16,
        n_downsample: int = 2,
        n_blocks: int = 4,
        norm: NormName = "instance",
        init_std: float = 0.02,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if in_channels < 1 or base_channels < 1 or n_downsample < 0 or n_blocks < 0:
            raise ValueError(
                f"invalid ResnetGenerator size: in_channels={in_channels}, base_channels={base_channels}, "
                f"n_downsample={n_downsample}, n_blocks={n_blocks}"
            )
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.n_downsample = n_downsample
        c = base_channels
        self.stem = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(in_channels, c, 7), _norm(norm, c), nn.ReLU())
        down: list[nn.Module] = []
        for _ in range(n_downsample):
            down += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), _norm(norm, 2 * c), nn.ReLU()]
            c *= 2
        self.down = nn.Sequential(*down)
        self.blocks = nn.Sequential(*(ResnetBlock(c, norm) for _ in range(n_blocks)))
        up: list[nn.Module] = []
        for _ in range(n_downsample):
            up += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1), _norm(norm, c // 2), nn.ReLU()]
            c //= 2
        self.up = nn.Sequential(*up)
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(c, out_channels, 7), nn.Tanh())
        init_gan_weights(self, init_std, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(type(self).__name__, x, self.in_channels)
        k = 2**self.n_downsample
        if x.shape[-2] % k or x.shape[-1] % k:
            raise ValueError(
                f"ResnetGenerator with n_downsample={self.n_downsample} needs H and W divisible by {k}, "
                f"got {tuple(x.shape[-2:])}"
            )
        y = self.head(self.up(self.blocks(self.down(self.stem(x * 2.0 - 1.0)))))
        return (y + 1.0) * 0.5


@register_model("pixelda_generator")
class PixelDAGenerator(nn.Module):
    """PixelDA's generator G(x, z) (Bousmalis et al. 2017, Figure 2), conditioned on an image and noise.

    The noise vector ``z`` goes through a fully connected layer to one ``H x W`` map that is
    concatenated to the image as an extra channel; then ``n64s1`` conv + ReLU, ``n_blocks``
    residual blocks (conv, BN, ReLU, conv, BN, skip) at full resolution, and a 3x3 conv to the
    output channels with ``tanh``. The paper uses 64 channels and 6 blocks; the defaults here are
    sized down for CPU-sized digits (32 channels, 3 blocks).

    The noise is an explicit input: draw it with :meth:`sample_noise` from a ``torch.Generator``
    (the paper's ``z ~ U(-1, 1)``) and keep it to replay an output exactly.

    Args:
        in_channels: image channels; out_channels: output channels (default ``in_channels``).
        image_size: ``(H, W)`` the noise layer is built for.
        noise_dim: length of ``z`` (10 in the paper).
        base_channels, n_blocks: width and depth.
        norm: ``"batch"`` (paper), ``"instance"`` or ``"none"``.
        init_std: standard deviation of the initial weights (:func:`init_gan_weights`).
        generator: draws the initial weights.

    Shapes: images ``Tensor[N, in_channels, H, W]`` in [0, 1] and noise ``Tensor[N, noise_dim]``
    -> ``Tensor[N, out_channels, H, W]`` in [0, 1].
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        image_size: Sequence[int] = (28, 28),
        noise_dim: int = 10,
        base_channels: int = 32,
        n_blocks: int = 3,
        norm: NormName = "batch",
        init_std: float = 0.02,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if len(image_size) != 2 or min(image_size) < 1:
            raise ValueError(f"image_size must be (H, W) with positive entries, got {tuple(image_size)}")
        if in_channels < 1 or noise_dim < 1 or base_channels < 1 or n_blocks < 0:
            raise ValueError(
                f"invalid PixelDAGenerator size: in_channels={in_channels}, noise_dim={noise_dim}, "
                f"base_channels={base_channels}, n_blocks={n_blocks}"
            )
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.noise_dim = noise_dim
        h, w = self.image_size
        self.noise_fc = nn.Linear(noise_dim, h * w)
        self.stem = nn.Sequential(nn.Conv2d(in_channels + 1, base_channels, 3, padding=1), nn.ReLU())
        self.blocks = nn.Sequential(*(ResnetBlock(base_channels, norm, padding="zeros") for _ in range(n_blocks)))
        self.head = nn.Sequential(nn.Conv2d(base_channels, out_channels, 3, padding=1), nn.Tanh())
        init_gan_weights(self, init_std, generator)

    def sample_noise(self, n: int, generator: torch.Generator, device: torch.device | str | None = None) -> torch.Tensor:
        """``z ~ U(-1, 1)``, ``Tensor[n, noise_dim]``, drawn on the generator's device and moved to ``device``."""
        z = torch.rand(n, self.noise_dim, generator=generator, device=generator.device) * 2.0 - 1.0
        return z.to(device if device is not None else self.noise_fc.weight.device)

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        _check_images(type(self).__name__, x, self.in_channels)
        if tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(f"PixelDAGenerator was built for {self.image_size} images, got {tuple(x.shape[-2:])}")
        if noise.shape != (x.shape[0], self.noise_dim):
            raise ValueError(f"noise must have shape ({x.shape[0]}, {self.noise_dim}), got {tuple(noise.shape)}")
        z = self.noise_fc(noise).view(x.shape[0], 1, *self.image_size)
        y = self.head(self.blocks(self.stem(torch.cat([x * 2.0 - 1.0, z], 1))))
        return (y + 1.0) * 0.5


class BasicBlock(nn.Module):
    """ResNet's basic block ``R{k}-{s}`` (no bottleneck): 3x3 conv (stride s), BN, ReLU, 3x3 conv, BN,
    plus a shortcut (identity, or 1x1 conv stride s + BN when the shape changes), then ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        if stride != 1 or in_channels != channels:
            self.shortcut: nn.Module = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels))
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


@register_model("small_resnet")
class SmallResNet(nn.Module):
    """MrGAN's CIFAR-DA ResNet (appendix 3): ``C16-3-1-1, B16-3-1, B32-3-2, B64-3-2, AvgPooling, softmax``.

    ``Bk-r-s`` is ``r`` basic blocks of ``k`` channels, the first with stride ``s`` (the appendix's
    ``r = 3`` makes this ResNet-20). The stem conv is followed by BN and ReLU as in the ResNet it
    cites, and the average pooling is global, so any input size works: 28x28 MNIST runs the stages
    at 28, 14 and 7 pixels; 32x32 CIFAR at 32, 16 and 8. Weights are Glorot-initialised.

    Args:
        num_classes: logits per image.
        in_channels: image channels.
        widths: channels of the three stages (``(16, 32, 64)`` in the paper).
        blocks_per_stage: ``r`` (3 in the paper).
        generator: draws the initial weights.

    Shapes: ``Tensor[N, in_channels, H, W]`` -> logits ``Tensor[N, num_classes]``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 3,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if num_classes < 1 or in_channels < 1 or len(widths) == 0 or min(widths) < 1 or blocks_per_stage < 1:
            raise ValueError(
                f"invalid SmallResNet size: num_classes={num_classes}, in_channels={in_channels}, "
                f"widths={widths}, blocks_per_stage={blocks_per_stage}"
            )
        self.num_classes = num_classes
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages: list[nn.Module] = []
        c = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(c, w, stride)] + [BasicBlock(w, w) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            c = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c, num_classes)
        init_glorot(self, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))))
