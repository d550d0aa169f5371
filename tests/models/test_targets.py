import pytest
import torch
from torch import nn

from synthloop.errors import InputError
from synthloop.models import (
    ClassifierTarget,
    MNISTClassifierDeep,
    Target,
    freeze,
    hardness_from_probs,
    is_frozen,
    is_hard_from_probs,
    trainable_parameters,
    unfreeze,
)


class FixedLogits(nn.Module):
    """Returns preset logits whatever the images; lets tests hand-make the probabilities."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[: x.shape[0]]


def images(n):
    return torch.zeros(n, 1, 40, 40)


def test_classifier_target_satisfies_protocol():
    assert isinstance(ClassifierTarget(MNISTClassifierDeep(), 10), Target)


def test_wrong_output_width_is_a_clear_error():
    t = ClassifierTarget(MNISTClassifierDeep(num_classes=7), num_classes=10, name="target")
    with pytest.raises(InputError, match=r"shape \(2, 7\), expected \(2, 10\).*num_classes=10") as err:
        t.check_output(images(2))
    assert err.value.field == "target.num_classes"
    for method in (t.probs, lambda x: t.loss(x, torch.zeros(2, dtype=torch.long))):
        with pytest.raises(InputError, match="num_classes"):
            method(images(2))


def test_bad_labels_are_clear_errors():
    t = ClassifierTarget(FixedLogits(torch.zeros(3, 4)), num_classes=4)
    with pytest.raises(InputError, match=r"\[0, 4\), got range \[0, 4\]"):
        t.loss(images(3), torch.tensor([0, 1, 4]))
    with pytest.raises(InputError, match="integer"):
        t.loss(images(3), torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(InputError, match=r"shape \(3,\)"):
        t.hardness(images(3), torch.tensor([0, 1]))


def test_loss_probs_and_hardness():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    t = ClassifierTarget(FixedLogits(logits), num_classes=3)
    labels = torch.tensor([0, 2])
    probs = t.probs(images(2))
    torch.testing.assert_close(probs.sum(1), torch.ones(2))
    torch.testing.assert_close(t.loss(images(2), labels), torch.nn.functional.cross_entropy(logits, labels))
    torch.testing.assert_close(t.hardness(images(2), labels), 1 - torch.stack([probs[0, 0], probs[1, 2]]))
    torch.testing.assert_close(t.hardness(images(2), labels)[1], torch.tensor(2 / 3))


def test_hard_example_threshold_is_strict():
    # dyadic probabilities: every difference below is exact in float32
    probs = torch.tensor(
        [
            [0.5, 0.25, 0.25],  # y=1: 0.5 - 0.25 = 0.25, equal to the margin -> not hard
            [0.5, 0.25, 0.25],  # y=0: the true class is the max -> not hard
            [0.5625, 0.25, 0.1875],  # y=1: 0.3125 > 0.25 -> hard
            [0.25, 0.5, 0.25],  # y=0: 0.5 - 0.25 = 0.25 -> not hard
            [0.375, 0.125, 0.5],  # y=0: 0.5 - 0.375 = 0.125 -> hard only for margins below 0.125
        ]
    )
    labels = torch.tensor([1, 0, 1, 0, 0])
    assert is_hard_from_probs(probs, labels, margin=0.25).tolist() == [False, False, True, False, False]
    assert is_hard_from_probs(probs, labels, margin=0.125).tolist() == [True, False, True, True, False]
    assert is_hard_from_probs(probs, labels, margin=0.0).tolist() == [True, False, True, True, True]
    assert hardness_from_probs(probs, labels).tolist() == [0.75, 0.5, 0.75, 0.75, 0.625]


def test_is_hard_default_margin_through_the_adapter():
    # p = softmax(logits): class 1 beats the true class 0 by more than 0.05 in the first row only
    logits = torch.log(torch.tensor([[0.4, 0.5, 0.1], [0.48, 0.52, 0.0 + 1e-9]]))
    t = ClassifierTarget(FixedLogits(logits), num_classes=3)
    assert t.is_hard(images(2), torch.tensor([0, 0])).tolist() == [True, False]
    assert not t.is_hard(images(2), torch.tensor([0, 0])).requires_grad


def test_freeze_context_restores_state_and_keeps_bn_stats():
    net = MNISTClassifierDeep(width=8)
    net.train()
    net[0].weight.requires_grad_(False)  # a parameter that was already frozen stays frozen
    stats = net[1].running_mean.clone()
    with freeze(net) as frozen:
        assert frozen is net and is_frozen(net)
        assert not net.training and not any(m.training for m in net.modules())
        assert list(trainable_parameters(net)) == []
        x = torch.rand(4, 1, 40, 40, requires_grad=True)
        net(x).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0  # gradient flows through to the input
        assert all(p.grad is None for p in net.parameters())
        assert torch.equal(net[1].running_mean, stats)  # eval mode: BN statistics untouched
    assert not is_frozen(net)
    assert net.training and all(m.training for m in net.modules())
    assert not net[0].weight.requires_grad
    assert all(p.requires_grad for n, p in net.named_parameters() if n != "0.weight")


def test_freeze_unfreeze_calls_and_nesting():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    net[1].eval()  # mixed modes are restored per submodule
    freeze(net)
    with freeze(net):
        assert is_frozen(net)
    assert is_frozen(net) and not net[0].weight.requires_grad
    unfreeze(net)
    assert not is_frozen(net) and net[0].weight.requires_grad
    assert net.training and net[0].training and not net[1].training
    with pytest.raises(ValueError, match="not frozen"):
        unfreeze(net)


def test_frozen_network_stays_out_of_the_optimiser():
    s, t = nn.Linear(3, 3), nn.Linear(3, 3)
    with freeze(t):
        opt = torch.optim.SGD(list(trainable_parameters(s)) + list(trainable_parameters(t)), lr=0.1)
        assert len(opt.param_groups[0]["params"]) == 2
        before = t.weight.detach().clone()
        t(s(torch.ones(1, 3))).sum().backward()
        opt.step()
        assert torch.equal(t.weight, before) and s.weight.grad is not None
