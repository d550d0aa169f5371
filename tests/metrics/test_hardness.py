import pytest
import torch
from torch import nn

from synthloop.errors import InputError
from synthloop.metrics import (
    accuracy,
    hardness_histogram,
    hardness_scores,
    predict_logits,
    unrecognised_fraction,
)


class FixedLogits(nn.Module):
    """Returns the logits of the images' first pixel index: image k carries its row id in pixel (0, 0)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.register_buffer("table", logits)
        self.scale = nn.Parameter(torch.ones(()))  # gives the model a device and a parameter

    def forward(self, x):
        rows = x[:, 0, 0, 0].round().long()
        return self.table[rows] * self.scale


def images_for(n):
    x = torch.zeros(n, 1, 8, 8)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.float32)
    return x


def test_hardness_is_one_minus_true_class_probability():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]])
    model = FixedLogits(probs.log())
    labels = torch.tensor([0, 0, 2])
    h = hardness_scores(model, images_for(3), labels, num_classes=3)
    assert h.shape == (3,)
    assert torch.allclose(h, torch.tensor([0.3, 0.9, 2 / 3]), atol=1e-6)


def test_batched_prediction_equals_one_batch_and_restores_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 5), nn.Dropout(0.5))
    model.train()
    x = torch.rand(37, 1, 8, 8)
    a = predict_logits(model, x, num_classes=5, batch_size=4)
    b = predict_logits(model, x, num_classes=5, batch_size=100)
    assert torch.allclose(a, b, atol=1e-6)  # dropout is off while predicting
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_accuracy_and_unrecognised_fraction():
    logits = torch.eye(4) * 5
    model = FixedLogits(logits)
    labels = torch.tensor([0, 1, 3, 3])  # sample 2 is predicted as 2
    assert accuracy(model, images_for(4), labels, num_classes=4) == pytest.approx(0.75)
    assert unrecognised_fraction(model, images_for(4), labels, num_classes=4) == pytest.approx(0.25)


def test_output_width_mismatch_is_an_input_error():
    model = FixedLogits(torch.zeros(3, 7))
    with pytest.raises(InputError, match=r"expected \(3, 10\)"):
        hardness_scores(model, images_for(3), torch.zeros(3, dtype=torch.long), num_classes=10)


@pytest.mark.parametrize(
    "images,labels,match",
    [
        (torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long), "empty"),
        (images_for(3), torch.tensor([0, 1, 9]), r"\[0, 3\)"),
        (images_for(3), torch.tensor([0.0, 1.0, 2.0]), "integer"),
        (images_for(3), torch.tensor([0, 1]), "shape"),
    ],
)
def test_bad_data_is_an_input_error(images, labels, match):
    model = FixedLogits(torch.zeros(3, 3))
    with pytest.raises(InputError, match=match):
        hardness_scores(model, images, labels, num_classes=3)


def test_histogram_fractions_sum_to_one_on_shared_bins():
    hist = hardness_histogram({"a": torch.tensor([0.0, 0.05, 0.95, 1.0]), "b": torch.full((10,), 0.5)}, bins=10)
    assert len(hist.edges) == 11 and hist.edges[0] == 0.0 and hist.edges[-1] == 1.0
    for fractions in hist.fractions.values():
        assert sum(fractions) == pytest.approx(1.0)
    assert hist.fractions["a"][0] == pytest.approx(0.5) and hist.fractions["a"][-1] == pytest.approx(0.5)
    assert hist.fractions["b"][5] == pytest.approx(1.0)
    assert hist.means == pytest.approx({"a": 0.5, "b": 0.5}) and hist.counts == {"a": 4, "b": 10}
    assert set(hist.to_dict()) == {"edges", "fractions", "means", "counts"}


def test_histogram_rejects_empty_input():
    with pytest.raises(InputError, match="no hardness"):
        hardness_histogram({})
    with pytest.raises(InputError, match="scores.x"):
        hardness_histogram({"x": torch.zeros(0)})
