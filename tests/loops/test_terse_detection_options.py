"""The scene loop's plausibility options (issue 11): teacher objective, constraints learned from the
real set, stochastic S, S replay buffer, mix_random, worst-of-k paste."""

from __future__ import annotations

import math

import pytest
import torch
from test_terse_detection import LABEL_MAP, SIZE, _loop, _strip, _weights  # the tiny fixtures (tests/loops is on sys.path)

from synthloop.compose.scene_batch import composite_batch
from synthloop.errors import InputError
from synthloop.loops.scene_constraints import full_boxes, learn_constraints, tie_aspect, violations
from synthloop.loops.terse_detection_objectives import ema_update, make_teacher, pick_worst


def test_teacher_penalty_reaches_s_only():
    loop = _loop(objective="teacher", discriminator=False)
    teacher = loop.teacher
    assert teacher is not None and teacher.model is not loop.target.model
    assert all(not p.requires_grad for p in teacher.model.parameters())
    th0, t0, s0 = _weights(teacher.model), _weights(loop.target.model), _weights(loop.synthesizer)
    # the penalty alone: its gradient reaches S's parameters and no detector's
    layouts = [loop.sample_layout(torch.Generator().manual_seed(i)) for i in range(2)]
    rgba, canvas = loop._synth_inputs(layouts)
    affine, photo = loop._place(layouts, canvas, rgba)
    comp = loop.composite(layouts, affine, photo)
    penalty = teacher.loss(comp.image, loop._targets(comp, layouts))
    penalty.backward()
    grads = [p.grad for p in loop.synthesizer.regressor.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in teacher.model.parameters())
    assert all(p.grad is None for p in loop.target.model.parameters())
    loop.synthesizer.zero_grad(set_to_none=True)
    out = loop.s_step()
    assert out["skipped"] == 0.0 and out["loss_teacher"] > 0
    assert torch.equal(_weights(teacher.model), th0) and torch.equal(_weights(loop.target.model), t0)
    assert not torch.equal(_weights(loop.synthesizer), s0)
    # with a zero weight the teacher term is still computed but changes nothing of S's loss
    a = _loop(objective="teacher", teacher_weight=0.0, discriminator=False).s_step()
    b = _loop(discriminator=False).s_step()
    assert a["loss_s"] == pytest.approx(b["loss_s"], rel=1e-5)


def test_teacher_term_changes_the_s_loss_by_its_weighted_bounded_loss():
    a = _loop(objective="teacher", teacher_weight=2.0, discriminator=False).s_step()
    b = _loop(discriminator=False).s_step()
    bound = 10.0 * torch.tanh(torch.tensor(a["loss_teacher"]) / 10.0)
    assert a["loss_s"] - b["loss_s"] == pytest.approx(2.0 * float(bound), rel=1e-4)


def test_ema_teacher_follows_t_and_frozen_teacher_does_not(tmp_path):
    frozen = _loop(objective="teacher", teacher="frozen", cycles=1)
    th0 = _weights(frozen.teacher.model)
    frozen.run()
    assert torch.equal(_weights(frozen.teacher.model), th0)
    ema = _loop(objective="teacher", teacher="ema", teacher_ema=0.5, cycles=1)
    start = _weights(ema.teacher.model)
    ema.run()
    assert torch.allclose(_weights(ema.teacher.model), 0.5 * start + 0.5 * _weights(ema.target.model), atol=1e-6)
    t = make_teacher(ema.target)
    ema_update(t.model, ema.target.model, 0.0)
    assert torch.equal(_weights(t.model), _weights(ema.target.model))


def test_constraints_are_learned_from_the_real_boxes():
    targets = [
        {"boxes": torch.tensor([[0.0, 0.0, 10.0, 20.0], [30.0, 30.0, 40.0, 60.0]])},
        {"boxes": torch.tensor([[0.0, 0.0, 24.0, 12.0], [12.0, 0.0, 36.0, 12.0]])},  # IoU 1/3
    ]
    c = learn_constraints(targets, (64, 64), fg_size=32, fg_fill=0.5, max_rotation=5.0)
    assert c.long_side_px == (20.0, 30.0) and c.scale == pytest.approx((20 / 16, 30 / 16))
    assert c.max_iou == pytest.approx(1 / 3, abs=1e-5) and c.aspect_real == pytest.approx((0.5 / 1.5 * 1.0, 2.0))
    with pytest.raises(InputError):
        learn_constraints([{"boxes": torch.zeros(0, 4)}], (64, 64), fg_size=32, fg_fill=0.5, max_rotation=5.0)
    affine = torch.tensor([[1.0, 2.0, 3.0, 0.1, 0.7, 1.3]], requires_grad=True)
    tied = tie_aspect(affine)
    assert tied[0, 5] == tied[0, 4] == 0.7
    tied.sum().backward()
    assert affine.grad[0, 4] == 2.0 and affine.grad[0, 5] == 0.0


@pytest.mark.parametrize("synth", ["terse", "random"])
def test_constraints_hold_on_every_generated_scene(synth):
    # real boxes 14-24 px that never overlap; the defaults would allow +-30 degrees, shear and squashing
    loop = _loop(constraints=True, synthesizer=synth, num_objects=3, max_rotation=8.0, hard_per_cycle=16, max_candidates_per_cycle=16, keep="all")
    c = loop.constraints
    assert c is not None and c.max_iou == 0.0 and c.max_rotation == 8.0
    r = loop.param_ranges
    assert r.angle == (-8.0, 8.0) and r.shear == (0.0, 0.0) and r.sx == r.sy == c.scale
    if synth == "terse":
        for _ in range(2):  # S trains against T (it may learn to overlap or squash): still nothing implausible is generated
            loop.s_step()
    scenes = loop.generate(16)
    assert len(scenes) >= 8
    for s in scenes:
        with torch.no_grad():
            comp = composite_batch([s.params], loop.foregrounds, loop.backgrounds)[1]
        boxes = full_boxes(comp.alphas[0])
        assert violations(s.params, boxes, c, r) == []
        for o in s.params.objects:
            lo = torch.tensor([r.angle[0], r.tx[0], r.ty[0], r.shear[0], r.sx[0], r.sy[0]]) - 1e-5
            hi = torch.tensor([r.angle[1], r.tx[1], r.ty[1], r.shear[1], r.sx[1], r.sy[1]]) + 1e-5
            a = torch.tensor(o.affine)
            assert bool(((a >= lo) & (a <= hi)).all())
    # without the constraints the same loop does produce overlapping objects (the check can fail)
    free = _loop(synthesizer=synth, num_objects=3, hard_per_cycle=16, max_candidates_per_cycle=16, keep="all")
    overlapping = 0
    for s in free.generate(16):
        with torch.no_grad():
            comp = composite_batch([s.params], free.foregrounds, free.backgrounds)[1]
        overlapping += int(any("overlap" in v for v in violations(s.params, full_boxes(comp.alphas[0]), c, r)))
    assert overlapping > 0


def test_pick_worst_is_the_max_loss_candidate():
    assert pick_worst([0.3, 2.5, 1.0]) == 1
    assert pick_worst([float("nan"), 0.1, 0.2]) == 2
    assert pick_worst([1.0, 1.0]) == 0
    with pytest.raises(ValueError):
        pick_worst([])


def test_worst_of_k_keeps_the_candidate_with_the_highest_detector_loss():
    from synthloop.loops.terse_detection_objectives import per_image_loss, worst_of_k_layout
    from synthloop.loops.terse_detection_scenes import composite_scene
    from synthloop.models.targets import freeze
    from synthloop.utils.seeding import make_generator

    loop = _loop(synthesizer="random", worst_of_k=4)
    chosen = worst_of_k_layout(loop, make_generator(0, "wok"), 1)
    # the same draws again, every candidate scored independently
    g = make_generator(0, "wok")
    cands = [loop.sample_layout(g, 1, random=True) for _ in range(4)]
    losses = []
    for p in cands:
        s = composite_scene(p, loop.foregrounds, loop.backgrounds, LABEL_MAP)
        if s.target["labels"].numel() == 0:
            losses.append(float("nan"))
            continue
        with freeze(loop.target.model):
            losses.append(float(per_image_loss(loop.target, s.image[None], [s.target])[0]))
    finite = [v for v in losses if math.isfinite(v)]
    best = losses.index(max(finite))
    assert chosen.meta["worst_of_k"]["losses"] == pytest.approx(losses, rel=1e-5, nan_ok=True)
    assert [o.affine for o in chosen.objects] == [o.affine for o in cands[best].objects]
    assert chosen.meta["worst_of_k"]["loss"] == pytest.approx(max(finite), rel=1e-5)
    assert len({round(v, 4) for v in finite}) > 1  # the candidates really differ
    scenes = loop.generate(3, keep="all")
    assert scenes and all(s.params.meta["worst_of_k"]["k"] == 4 for s in scenes)


def test_stochastic_s_starts_at_the_random_samplers_centre_and_varies_with_noise():
    loop = _loop(s_noise_dim=4, discriminator=False)
    layouts = [loop.sample_layout(torch.Generator().manual_seed(i)) for i in range(3)]
    rgba, canvas = loop._synth_inputs(layouts)
    loop.synthesizer.eval()
    with torch.no_grad():
        a, _ = loop._place(layouts, canvas, rgba, torch.randn(3, 4, generator=torch.Generator().manual_seed(1)))
    lo, hi = loop._aff_lo, loop._aff_hi
    centre = (lo + hi) / 2
    for k in (0, 3, 4, 5):  # angle, shear, scales: the middle of their ranges
        assert torch.allclose(a[..., k], centre[k].expand_as(a[..., k]), atol=1e-5)
    anchors = torch.tensor([[o.anchor for o in p.objects] for p in layouts]).clamp(1e-3, 1 - 1e-3)  # the loop's ANCHOR_EPS
    assert torch.allclose(a[..., 1:3], torch.lerp(lo[1:3], hi[1:3], anchors.float()), atol=1e-3)  # translations at the anchors
    loop.s_step()
    loop.s_step()
    with torch.no_grad():
        b1, _ = loop._place(layouts, canvas, rgba, torch.zeros(3, 4))
        b2, _ = loop._place(layouts, canvas, rgba, torch.ones(3, 4))
    assert not torch.allclose(b1, b2)  # after training the noise moves the placements


def test_mix_random_share_and_replay_buffer():
    loop = _loop(mix_random=0.5, s_replay=2, keep="all", hard_per_cycle=4, cycles=3)
    res = loop.run()
    assert len(loop.s_buffer) == 2
    per_cycle = [[s for s in res.scenes if s.params.meta["cycle"] == c] for c in (1, 2, 3)]
    for scenes in per_cycle:
        anchored = [s for s in scenes if all(o.anchor is not None for o in s.params.objects)]
        assert len(scenes) == 4 and len(anchored) == 2  # 2 by S (anchored), 2 by random paste
    used = {s.params.meta.get("s_snapshot") for s in per_cycle[2] if "s_snapshot" in s.params.meta}
    assert used <= {-1, 0, 1} and used


@pytest.mark.parametrize(
    "overrides",
    [
        {"objective": "teacher", "teacher": "ema", "constraints": True, "s_noise_dim": 4, "s_replay": 1, "mix_random": 0.34},
        {"synthesizer": "random", "worst_of_k": 3, "constraints": True},
    ],
)
def test_resume_equals_an_uninterrupted_run_with_the_options(tmp_path, overrides):
    ref = _loop(**overrides)
    full = ref.run(tmp_path / "full")
    _loop(**overrides).run(tmp_path / "part", max_cycles=1)
    again = _loop(**overrides)
    resumed = again.run(tmp_path / "part", resume=True)
    assert _strip(resumed.history) == _strip(full.history)
    assert [s.params for s in resumed.scenes] == [s.params for s in full.scenes]
    for x, y in zip(resumed.scenes, full.scenes):
        assert torch.equal(x.image, y.image)
    assert torch.equal(_weights(again.target.model), _weights(ref.target.model))
    if ref.teacher is not None:
        assert torch.equal(_weights(again.teacher.model), _weights(ref.teacher.model))
        assert all(torch.equal(a[k], b[k]) for a, b in zip(again.s_buffer, ref.s_buffer) for k in a)
    assert SIZE == 64
