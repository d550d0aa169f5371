"""The TERSE AffNIST target classifiers (supplementary A.1).

Both take ``Tensor[N, C, H, W]`` floats in [0, 1] (``C = 1``, ``H = W = 40`` for AffNIST) and
return logits ``Tensor[N, num_classes]``. Both are plain ``nn.Sequential`` stacks, so they export
with ``torch.export.export`` and script with ``torch.jit.script``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from synthloop.models.registry import register_model


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution or pooling window along one axis (floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


def _check_hw(input_size: Sequence[int]) -> tuple[int, int]:
    if len(input_size) != 2 or any(int(s) <= 0 for s in input_size):
        raise ValueError(f"input_size must be (H, W) with positive entries, got {tuple(input_size)}")
    return int(input_size[0]), int(input_size[1])


def _check_features(name: str, input_size: tuple[int, int], out: tuple[int, int]) -> None:
    if out[0] <= 0 or out[1] <= 0:
        raise ValueError(f"{name}: input_size {input_size} is too small (feature map would be {out})")


@register_model("mnist_classifier")
class MNISTClassifier(nn.Sequential):
    """TERSE's AffNIST target (A.1 dump, Figure 7): two 5x5 convs (10, 20 ch), Dropout2d, two FCs.

    The dump lists ``Conv(1->10, 5x5), ReLU, Conv(10->20, 5x5), ReLU, Dropout2d(0.5),
    Linear(980->50), ReLU, Linear(50->10)`` and no pooling. Without pooling a 40x40 input gives
    ``20 * 32 * 32 = 20480`` features, not 980. The dump is the classic PyTorch MNIST example
    (same layers, same order), whose ``forward`` applies ``F.max_pool2d(., 2)`` after each conv;
    functional calls do not appear in a module dump. On 40x40 input that gives
    ``40 -conv5-> 36 -pool2-> 18 -conv5-> 14 -pool2-> 7``, i.e. ``20 * 7 * 7 = 980`` features,
    exactly the dump's ``in_features``. So each conv here is followed by ReLU and a 2x2 max-pool
    (ReLU and max-pool commute), with ``Dropout2d`` after the second conv as in the dump. The
    example's extra functional dropout after the first FC is not in the dump and is left out.

    ``fc1``'s input width is computed from ``input_size`` (28x28 MNIST gives ``20 * 4 * 4``).

    Args:
        num_classes: logits per image.
        in_channels: image channels (1 for MNIST).
        input_size: ``(H, W)`` the network is built for.
        dropout: ``Dropout2d`` probability.

    Shapes: ``Tensor[N, in_channels, H, W]`` -> logits ``Tensor[N, num_classes]``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: Sequence[int] = (40, 40), dropout: float = 0.5):
        hw = _check_hw(input_size)
        h, w = (conv_out(conv_out(conv_out(conv_out(s, 5), 2, 2), 5), 2, 2) for s in hw)
        _check_features(type(self).__name__, hw, (h, w))
        super().__init__(
            nn.Conv2d(in_channels, 10, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(10, 20, 5),
            nn.ReLU(),
            nn.Dropout2d(dropout),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(20 * h * w, 50),
            nn.ReLU(),
            nn.Linear(50, num_classes),
        )
        self.num_classes = num_classes
        self.input_size = hw


@register_model("mnist_classifier_deep")
class MNISTClassifierDeep(nn.Sequential):
    """TERSE's Table-1 target (A.1 dump): four 5x5 stride-2 convs with BatchNorm and Swish.

    The dump gives ``Conv(1->64, 5x5, s2), BN, Swish`` three more times with 64 channels, then
    ``Linear(576->50), Swish, Linear(50->10)``; it prints no padding. ``576 = 64 * 3 * 3``, and on
    40x40 input only padding 2 ("same" padding for a 5x5 kernel) ends at 3x3:
    ``40 -> 20 -> 10 -> 5 -> 3`` (padding 0 dies at ``40 -> 18 -> 7 -> 2 -> <1``, padding 1 ends at
    1x1). Swish is ``x * sigmoid(x)`` = ``nn.SiLU``.

    Args:
        num_classes: logits per image.
        in_channels: image channels (1 for MNIST).
        input_size: ``(H, W)`` the network is built for; the flatten width is computed from it.
        width: channels of every conv (64 in the paper).

    Shapes: ``Tensor[N, in_channels, H, W]`` -> logits ``Tensor[N, num_classes]``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: Sequence[int] = (40, 40), width: int = 64):
        hw = _check_hw(input_size)
        layers: list[nn.Module] = []
        h, w = hw
        c = in_channels
        for _ in range(4):
            layers += [nn.Conv2d(c, width, 5, stride=2, padding=2), nn.BatchNorm2d(width), nn.SiLU()]
            h, w = conv_out(h, 5, 2, 2), conv_out(w, 5, 2, 2)
            c = width
        _check_features(type(self).__name__, hw, (h, w))
        super().__init__(*layers, nn.Flatten(), nn.Linear(width * h * w, 50), nn.SiLU(), nn.Linear(50, num_classes))
        self.num_classes = num_classes
        self.input_size = hw
