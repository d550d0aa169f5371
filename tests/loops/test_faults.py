"""NaN/inf injected into a loss or a gradient of every training loop: caught in the step that made
it, the run stops with a message naming the step (or skips the update where documented), the event
lands in the run folder's ``events.json``, and resuming from the last good checkpoint finishes the
run exactly as an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from synthloop.errors import InputError
from synthloop.loops import faults
from synthloop.loops.faults import NonFiniteError, check_grads, check_loss, finite_backward, read_events, record_event
from synthloop.loops.refine.common import Domain
from synthloop.loops.refine.cyclegan import CycleGANTrainer
from synthloop.loops.refine.divergence import DivergenceConfig, DivergenceError
from synthloop.loops.refine.pixelda import PixelDATrainer
from synthloop.loops.terse_classification import TerseClassificationConfig, TerseClassificationLoop
from synthloop.loops.trainer import fit
from synthloop.models import MNISTClassifier


class Fault:
    """Make ``module``'s output (``"loss"``) or its first parameter's gradient (``"grad"``) NaN at
    its ``at``-th call in training mode (0-based), while ``armed``."""

    def __init__(self, module: nn.Module, kind: str = "loss", at: int = 0):
        self.calls, self.at, self.armed, self.kind = 0, at, True, kind
        module.register_forward_hook(self._hook)
        self.param = next(p for p in module.parameters() if p.requires_grad)

    def _hook(self, module, args, output):
        if not module.training or not self.armed:
            return None
        hit = self.calls == self.at
        self.calls += 1
        if not hit:
            return None
        tensors = output if isinstance(output, dict) else {"out": output}
        if self.kind == "loss":
            out = {k: v * float("nan") if v.is_floating_point() else v for k, v in tensors.items()}
            return out if isinstance(output, dict) else out["out"]
        for v in tensors.values():
            if v.requires_grad:
                v.register_hook(lambda g: g * float("nan"))  # a finite loss with a NaN gradient
        return None


def test_helpers():
    check_loss(torch.tensor(1.0), step=0, what="x")
    with pytest.raises(NonFiniteError, match="the x loss became inf at step 3") as e:
        check_loss(torch.tensor(float("inf")), step=3, what="x")
    assert isinstance(e.value, InputError) and e.value.event["kind"] == "non_finite_loss" and e.value.event["step"] == 3
    lin = nn.Linear(2, 1)
    lin(torch.ones(1, 2)).sum().backward()
    check_grads(lin, step=0, what="x")
    lin.bias.grad.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"gradient became non-finite at step 5 .*in bias") as e:
        check_grads(lin, step=5, what="x", loss=1.0)
    assert e.value.event["params"] == ["bias"]
    lin.zero_grad()
    assert not finite_backward(lin(torch.full((1, 2), float("nan"))).sum(), lin)
    out = lin(torch.ones(1, 2))
    out.register_hook(lambda g: g * float("nan"))
    assert not finite_backward(out.sum(), lin) and lin.weight.grad is None  # cleared: the caller skips
    assert finite_backward(lin(torch.ones(1, 2)).sum(), lin)


def test_events_file(tmp_path):
    assert read_events(tmp_path) == []
    record_event(tmp_path, {"kind": "a"}, cycle=1)
    record_event(tmp_path, {"kind": "b"})
    events = read_events(tmp_path)
    assert [e["kind"] for e in events] == ["a", "b"] and events[0]["cycle"] == 1 and "time" in events[0]
    (tmp_path / faults.EVENTS_FILE).write_text("{")
    with pytest.raises(InputError, match="events.json"):
        read_events(tmp_path)


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_trainer_stops_within_the_step(kind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    Fault(model[0], kind, at=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [torch.randn(5, 3) for _ in range(4)]
    seen = []
    with pytest.raises(NonFiniteError, match="at step 2") as e:
        fit(model, opt, batches, lambda m, x: m(x).pow(2).mean(), on_step=lambda s, loss: seen.append(s), what="toy")
    assert seen == [1, 2]  # steps 0 and 1 ran; step 2 made no update
    assert e.value.event["kind"] == ("non_finite_loss" if kind == "loss" else "non_finite_grad")
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------------- TERSE classification


def _digits():
    g = torch.Generator().manual_seed(0)
    return torch.rand(40, 1, 40, 40, generator=g), torch.arange(40) % 10


def _terse(run_dir, seed=0):
    torch.manual_seed(seed)
    cfg = TerseClassificationConfig(cycles=2, hard_per_class=1, s_batch_size=16, s_max_steps=2, t_epochs=1, t_batch_size=32)
    x, y = _digits()
    return TerseClassificationLoop(cfg, MNISTClassifier(), x, y, run_dir=run_dir)


def _strip(history):
    return [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in history]


@pytest.mark.parametrize("where", ["target", "synthesizer"])
def test_terse_classification_stops_records_and_resumes(tmp_path, where):
    full = _terse(tmp_path / "full").run(export=False)
    run = tmp_path / "run"
    _terse(run).run(max_cycles=1, export=False)
    good = (run / "checkpoint.pt").read_bytes()
    loop = _terse(run)
    Fault(getattr(loop, where), "grad" if where == "target" else "loss")
    with pytest.raises(NonFiniteError, match=f"the {'classifier' if where == 'target' else 'synthesizer'} .* at step 0"):
        loop.run(resume=True, export=False)
    (event,) = read_events(run)
    assert event["cycle"] == 2 and event["step"] == 0 and "stopped" in event["action"]
    assert (run / "checkpoint.pt").read_bytes() == good  # the last good checkpoint is untouched
    resumed = _terse(run).run(resume=True, export=False)  # the fault is gone: resume finishes the run
    assert _strip(resumed.history) == _strip(full.history)


# ---------------------------------------------------------------- TERSE detection


@pytest.fixture(scope="module")
def det():
    import test_terse_detection as t  # the tiny detection fixtures (tests/loops is on sys.path)

    return t


def test_terse_detection_s_step_skips_and_d_t_stop(tmp_path, det):
    loop = det._loop(cycles=1)
    Fault(loop.synthesizer, "loss")
    before = det._weights(loop.synthesizer)
    assert loop.s_step()["skipped"] == 1.0 and torch.equal(det._weights(loop.synthesizer), before)
    loop = det._loop(cycles=1)
    Fault(loop.synthesizer, "grad")
    assert loop.s_step()["skipped"] == 1.0 and torch.equal(det._weights(loop.synthesizer), before)
    assert loop.s_step()["skipped"] == 0.0  # the next step trains again

    for module, what in (("discriminator", "discriminator"), ("target", "detection")):
        loop = det._loop(cycles=2)
        loop.run(tmp_path / module, max_cycles=1)
        good = (tmp_path / module / "checkpoint.pt").read_bytes()
        loop = det._loop(cycles=2)
        first_conv = next(m for m in loop.target.model.modules() if isinstance(m, nn.Conv2d))
        Fault(loop.discriminator if module == "discriminator" else first_conv, "loss")
        with pytest.raises(NonFiniteError, match=rf"the {what} loss became nan at step \d+"):
            loop.run(tmp_path / module, resume=True)
        (event,) = read_events(tmp_path / module)
        assert event["what"] == what and event["cycle"] == 2
        assert (tmp_path / module / "checkpoint.pt").read_bytes() == good
        assert det._loop(cycles=2).run(tmp_path / module, resume=True).completed_cycles == 2


# ---------------------------------------------------------------- refiners


@pytest.mark.parametrize("method", ["cyclegan", "pixelda"])
def test_refiner_gradient_fault(method):
    import test_refine as r  # the tiny refiner configs

    syn, real = r.blobs(16, 4, seed=1)[:2], r.blobs(12, 4, seed=2)[:2]
    syn, real = Domain(*syn, name="synthetic"), Domain(*real, name="real")

    def make(action):
        div = DivergenceConfig(action=action)
        if method == "cyclegan":
            return CycleGANTrainer(r.cyclegan_cfg(), syn, real, divergence=div)
        return PixelDATrainer(r.pixelda_cfg(), syn, real, divergence=div)

    t = make("record")
    Fault(t.g_s2r if method == "cyclegan" else t.g, "grad", at=0 if method == "cyclegan" else 1)  # PixelDA: call 0 is no_grad
    t.train_step()
    assert [e.kind for e in t.events] == ["non_finite_grad"] and "skipped" in t.events[0].message
    assert all(torch.isfinite(p).all() for p in (t.g_s2r if method == "cyclegan" else t.g).parameters())
    t = make("raise")
    Fault(t.g_s2r if method == "cyclegan" else t.g, "grad", at=0 if method == "cyclegan" else 1)  # PixelDA: call 0 is no_grad
    with pytest.raises(DivergenceError, match="step 0: non-finite gradient"):
        t.train_step()
    json.dumps([e.to_dict() for e in t.events])
