"""The one optimisation loop (:func:`synthloop.loops.trainer.fit`)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from synthloop.errors import InputError
from synthloop.loops.trainer import fit
from synthloop.models.cpu_backend import is_guarded


def _data(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g)


def _loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 1, stride=2), nn.Flatten(), nn.Linear(4, 2))


def _batches(x, y, size=4):
    return [(x[i : i + size, :, None, None], y[i : i + size]) for i in range(0, x.shape[0], size)]


def test_one_step_per_batch_like_a_hand_written_loop():
    x, y = _data()
    a, b = _model(), _model()
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt_a, step_size=1, gamma=0.5)
    seen = []
    losses = fit(a, opt_a, iter(_batches(x, y)), _loss, scheduler=sched, on_step=lambda s, v: seen.append((s, float(v))))
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    sched_b = torch.optim.lr_scheduler.StepLR(opt_b, step_size=1, gamma=0.5)
    expected = []
    for batch in _batches(x, y):
        loss = _loss(b, batch)
        opt_b.zero_grad()
        loss.backward()
        opt_b.step()
        sched_b.step()
        expected.append(float(loss.detach()))
    assert [float(v) for v in losses] == expected and [s for s, _ in seen] == [1, 2, 3]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert opt_a.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)
    assert a.training and is_guarded(a)  # left in train mode; strided 1x1 convs guarded


def test_grad_clip_bounds_the_update():
    x, y = _data()
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    fit(model, opt, _batches(x, y)[:1], lambda m, b: 1e4 * _loss(m, b), grad_clip=0.5)
    moved = torch.cat([(p.detach() - q).flatten() for p, q in zip(model.parameters(), before)])
    assert float(moved.norm()) == pytest.approx(0.5, rel=1e-4)


def test_non_finite_loss_names_the_step_and_updates_nothing():
    x, y = _data()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = _batches(x, y)
    batches[1] = (batches[1][0] * float("nan"), batches[1][1])
    with pytest.raises(InputError, match="the detection loss became nan at step 1; lower the learning rate") as e:
        fit(model, opt, batches, _loss, what="detection")
    assert e.value.field == "lr"
