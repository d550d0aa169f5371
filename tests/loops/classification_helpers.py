"""Shared by the TERSE classification loop tests: 300 MNIST test digits and a briefly trained target."""

import pytest
import torch

from synthloop.data.mnist import load_mnist, mnist_padded
from synthloop.loops.training import fit_classifier, scoped_rng, sgd
from synthloop.models import MNISTClassifier

N_DIGITS = 300


@pytest.fixture(scope="module")
def digits():
    x, y = load_mnist("test")
    return mnist_padded(x[:N_DIGITS]), y[:N_DIGITS]


@pytest.fixture(scope="module")
def trained_state(digits):
    """A briefly trained target, so that "hard" means something."""
    x, y = digits
    torch.set_num_threads(1)
    with scoped_rng(0):
        model = MNISTClassifier()
        fit_classifier(model, sgd(model, 0.05, 0.5), [(x, y)], num_classes=10, epochs=12, batch_size=32, generator=torch.Generator().manual_seed(0))
    return model.state_dict()


def make_target(state):
    model = MNISTClassifier()
    model.load_state_dict(state)
    return model
