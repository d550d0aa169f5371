"""TERSE's natural-image discriminator D (section 3.3, supplementary A.2).

D tells real images from composites; the synthesizer is trained to fool it. ``D(I)`` in the
paper is a probability; here D returns logits and its losses
(:func:`~synthloop.functional.losses.d_loss`, :func:`~synthloop.functional.losses.g_loss`) use
``binary_cross_entropy_with_logits`` (numerically stable, same optimum).
"""

from __future__ import annotations

from torch import nn

from synthloop.models.registry import register_model


@register_model("patch_discriminator")
class PatchDiscriminator(nn.Sequential):
    """The A.2 discriminator: a PatchGAN (after the pix2pix one the paper cites) with 4x4 convs.

    Layers (``w = 64 * width``): Conv(C->w, k4 s2 p2), LeakyReLU(0.2); Conv(w->2w, k4 s2 p2),
    InstanceNorm, LeakyReLU; Conv(2w->4w, k4 s2 p2), InstanceNorm, LeakyReLU; Conv(4w->8w, k4 s1 p2),
    InstanceNorm, LeakyReLU; Conv(8w->1, k4 s1 p2); AvgPool2d(3, stride 2, padding 1).
    InstanceNorm is ``affine=False`` without running stats, as in the dump.

    Initialisation: conv weights ~ Normal(0, std=``init_std``), biases 0. The paper says "a Normal
    distribution with a variance of 0.02"; pix2pix, which its discriminator follows, draws with
    *standard deviation* 0.02, and that is the default here (a variance of 0.02 would be
    std 0.141).

    Args:
        in_channels: image channels (3 for RGB, 1 for MNIST).
        width: channel multiplier (1.0 = the paper's 64-128-256-512); smaller sizes D down.
        init_std: standard deviation of the initial conv weights.

    Shapes: ``Tensor[N, in_channels, H, W]`` -> patch logits ``Tensor[N, 1, h, w]``: each conv adds
    one pixel per side (``k4 p2``), so 40x40 gives 4x4 and 128x128 gives 10x10.
    """

    def __init__(self, in_channels: int = 3, width: float = 1.0, init_std: float = 0.02):
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        c1, c2, c3, c4 = (max(1, round(64 * width * m)) for m in (1, 2, 4, 8))

        def block(cin: int, cout: int, stride: int, norm: bool) -> nn.Sequential:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, stride=stride, padding=2)]
            if norm:
                layers.append(nn.InstanceNorm2d(cout, affine=False, track_running_stats=False))
            layers.append(nn.LeakyReLU(0.2))
            return nn.Sequential(*layers)

        super().__init__(
            block(in_channels, c1, 2, norm=False),
            block(c1, c2, 2, norm=True),
            block(c2, c3, 2, norm=True),
            block(c3, c4, 1, norm=True),
            nn.Sequential(nn.Conv2d(c4, 1, 4, stride=1, padding=2)),
            nn.AvgPool2d(3, stride=2, padding=1),
        )
        self.in_channels = in_channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, init_std)
                nn.init.zeros_(m.bias)

