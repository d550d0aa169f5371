import warnings

import pytest
import torch

from synthloop.models import MNISTClassifier, MNISTClassifierDeep

CLASSIFIERS = [MNISTClassifier, MNISTClassifierDeep]


@pytest.mark.parametrize("cls", CLASSIFIERS)
def test_logits_shape(cls):
    model = cls()
    out = model(torch.rand(3, 1, 40, 40))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()


def test_flatten_widths_match_paper_dumps():
    # A.1: Linear(980 -> 50) and Linear(576 -> 50) for 40x40 AffNIST input
    assert MNISTClassifier()[8].in_features == 980
    assert MNISTClassifierDeep()[13].in_features == 576


def test_input_size_and_classes_configurable():
    small = MNISTClassifier(num_classes=7, input_size=(28, 28))
    assert small[8].in_features == 20 * 4 * 4  # the classic 28x28 MNIST example's 320
    assert small(torch.rand(2, 1, 28, 28)).shape == (2, 7)
    deep = MNISTClassifierDeep(num_classes=3, in_channels=3, input_size=(28, 28), width=16)
    assert deep(torch.rand(2, 3, 28, 28)).shape == (2, 3)


def test_too_small_input_is_rejected():
    with pytest.raises(ValueError, match="too small"):
        MNISTClassifier(input_size=(12, 12))
    with pytest.raises(ValueError, match="input_size"):
        MNISTClassifierDeep(input_size=(40,))


@pytest.mark.parametrize("cls", CLASSIFIERS)
def test_eval_is_deterministic_train_uses_dropout_or_batch_stats(cls, gen):
    model = cls()
    x = torch.rand(4, 1, 40, 40, generator=gen)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.allclose(model(x), model.eval()(x))


@pytest.mark.parametrize("cls", CLASSIFIERS)
def test_export_matches_eager(cls, gen):
    model = cls().eval()
    x = torch.rand(4, 1, 40, 40, generator=gen)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    y = torch.rand(6, 1, 40, 40, generator=gen)
    torch.testing.assert_close(program.module()(y), model(y))


@pytest.mark.parametrize("cls", CLASSIFIERS)
def test_torchscript_matches_eager(cls, gen):
    model = cls().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated upstream
        scripted = torch.jit.script(model)
    x = torch.rand(5, 1, 40, 40, generator=gen)
    torch.testing.assert_close(scripted(x), model(x))
