import math

import pytest
import torch
from torch import nn

from synthloop.errors import InputError
from synthloop.metrics.refinement import (
    foreground_iou,
    foreground_masks,
    label_preservation,
    label_preservation_per_class,
    mask_iou,
)


class BrightestQuadrant(nn.Module):
    """A fixed 'classifier': the class is the quadrant (0..3) with the largest mean intensity."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))  # gives the model a device

    def forward(self, x):
        h, w = x.shape[-2:]
        q = [x[..., : h // 2, : w // 2], x[..., : h // 2, w // 2 :], x[..., h // 2 :, : w // 2], x[..., h // 2 :, w // 2 :]]
        return torch.stack([t.mean((1, 2, 3)) for t in q], 1) * 10 + self.dummy


def quadrant_images(labels, size=8):
    x = torch.zeros(len(labels), 1, size, size)
    h = size // 2
    for i, c in enumerate(labels.tolist()):
        r, col = divmod(c, 2)
        x[i, 0, r * h : (r + 1) * h, col * h : (col + 1) * h] = 1.0
    return x


def test_label_preservation_counts_samples_that_keep_their_label():
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    clf = BrightestQuadrant()
    kept = quadrant_images(labels)
    assert label_preservation(clf, kept, labels, num_classes=4) == 1.0
    # refine two of them into a different class
    moved = kept.clone()
    moved[:2] = quadrant_images(torch.tensor([3, 3]))
    assert label_preservation(clf, moved, labels, num_classes=4) == pytest.approx(6 / 8)
    per = label_preservation_per_class(clf, moved, labels, num_classes=4)
    assert per.tolist() == [0.5, 0.5, 1.0, 1.0]
    no_threes = torch.tensor([0, 1, 2, 0, 1, 2])
    per = label_preservation_per_class(clf, quadrant_images(no_threes), no_threes, num_classes=4)
    assert per[:3].tolist() == [1.0, 1.0, 1.0] and math.isnan(per[3].item())  # no sample of class 3


def test_label_preservation_checks_inputs():
    clf = BrightestQuadrant()
    with pytest.raises(InputError, match="labels must lie in"):
        label_preservation(clf, quadrant_images(torch.tensor([0])), torch.tensor([7]), num_classes=4)
    with pytest.raises(InputError, match="does not match num_classes"):
        label_preservation(clf, quadrant_images(torch.tensor([0])), torch.tensor([0]), num_classes=10)


def test_foreground_iou_of_shifted_digit():
    x = torch.zeros(2, 1, 10, 10)
    x[:, :, 2:6, 2:6] = 0.9  # 16 pixels
    y = torch.zeros_like(x)
    y[0, :, 2:6, 2:6] = 0.8  # same place, dimmer: IoU 1
    y[1, :, 4:8, 2:6] = 0.8  # moved down by 2 rows: overlap 8, union 24
    iou = foreground_iou(x, y, threshold=0.5)
    assert iou.tolist() == pytest.approx([1.0, 8 / 24])


def test_foreground_iou_thresholds_and_masks():
    x = torch.zeros(1, 3, 4, 4)
    x[..., :2, :] = 1.0
    y = x * 0.4  # a refiner that darkened the object
    assert foreground_iou(x, y, threshold=0.5).item() == 0.0
    assert foreground_iou(x, y, threshold=0.5, refined_threshold=0.3).item() == 1.0
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :1, :] = 1  # known foreground: only the first row
    assert foreground_iou(x, y, refined_threshold=0.3, input_masks=mask).item() == pytest.approx(0.5)


def test_empty_masks_count_as_perfect_agreement():
    a = torch.zeros(2, 3, 3, dtype=torch.bool)
    b = a.clone()
    b[1, 0, 0] = True
    assert mask_iou(a, b).tolist() == [1.0, 0.0]


def test_foreground_masks_use_channel_mean():
    x = torch.tensor([[[[1.0]], [[0.0]], [[0.0]]]])  # pure red: mean 1/3
    assert not foreground_masks(x, 0.5).any() and foreground_masks(x, 0.3).all()


def test_foreground_iou_shape_errors():
    with pytest.raises(InputError, match="same batch and spatial size"):
        foreground_iou(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 5, 4))
    with pytest.raises(InputError, match="input_masks"):
        foreground_iou(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), input_masks=torch.zeros(1, 1, 4, 4))
