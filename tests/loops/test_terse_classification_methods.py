"""Issue 10 options of the TERSE classification loop: teacher objective, EMA teacher, worst-of-k,
random anchor, replay / update period, mixing, diversity, diagnostics, and resume with them on."""

import copy

import pytest
import torch
import torch.nn.functional as F
from classification_helpers import N_DIGITS, digits, make_target, trained_state  # noqa: F401  (fixtures)

from synthloop.data.affnist import sample_affnist_params
from synthloop.errors import InputError
from synthloop.loops.cache import render_digits
from synthloop.loops.terse_classification import TerseClassificationConfig, TerseClassificationLoop
from synthloop.loops.terse_diagnostics import param_histograms
from synthloop.loops.terse_methods import anchored_unit, concentration_penalty, s_sample_loss, worst_of_k_select
from synthloop.models import MNISTClassifier
from synthloop.utils.seeding import make_generator


def make_loop(digits, state, run_dir=None, reference=None, clean=None, **overrides):
    values = {"cycles": 2, "hard_per_class": 4, "s_batch_size": 64, "s_max_steps": 6, "t_epochs": 1, "t_batch_size": 32}
    values.update(overrides)
    x, y = digits
    return TerseClassificationLoop(TerseClassificationConfig(**values), make_target(state), x, y, reference=reference, clean=clean, run_dir=run_dir)


def _params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- objectives


def test_teacher_sample_loss_is_the_bounded_form():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]])
    teacher = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    labels = torch.tensor([0, 1])
    p = logits.softmax(1)[torch.arange(2), labels]
    expected = -torch.log(1 - p) + 0.5 * F.cross_entropy(teacher, labels, reduction="none")
    got = s_sample_loss(logits, labels, "teacher", teacher, 0.5)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(s_sample_loss(logits, labels, "paper"), -F.cross_entropy(logits, labels, reduction="none"))
    with pytest.raises(ValueError, match="teacher"):
        s_sample_loss(logits, labels, "teacher")


@pytest.mark.parametrize("teacher", ["ema", "reference"])
def test_teacher_objective_gradient_reaches_s_only(digits, trained_state, teacher):
    reference = make_target(trained_state)
    loop = make_loop(digits, trained_state, reference=reference, objective="teacher", teacher=teacher)
    before_s, before_t = _params(loop.synthesizer), _params(loop.target)
    before_teacher = _params(loop.teacher_model)
    losses, batch = loop.synthesizer_update(torch.arange(64), make_generator(0, "test"))
    assert not _same(before_s, _params(loop.synthesizer)), "S did not move"
    assert _same(before_t, _params(loop.target)) and _same(before_teacher, _params(loop.teacher_model))
    assert all(p.grad is None for p in loop.target.parameters())
    assert all(p.grad is None for p in loop.teacher_model.parameters())
    assert all(p.requires_grad for p in loop.target.parameters())  # unfrozen again for T's phase
    assert batch.images.shape == (64, 1, 40, 40) and "loss_s" in losses


def test_reference_teacher_needs_a_reference(digits, trained_state):
    with pytest.raises(InputError, match="reference"):
        make_loop(digits, trained_state, objective="teacher", teacher="reference")


def test_ema_teacher_follows_t_step_by_step(digits, trained_state):
    loop = make_loop(digits, trained_state, objective="teacher", teacher="ema", teacher_decay=0.9)
    snapshots = []
    loop.run_target_phase(1, progress=lambda task, done, total: snapshots.append(_params(loop.target)))
    assert len(snapshots) > 3
    expected = {k: v.float() for k, v in snapshots[0].items()}  # torch's EMA starts from T after the first step
    for snap in snapshots[1:]:
        expected = {k: 0.9 * expected[k] + 0.1 * snap[k].float() for k in expected}
    ema = loop.ema.module.state_dict()
    for k, v in expected.items():
        if v.is_floating_point() and "num_batches" not in k:
            assert torch.allclose(ema[k].float(), v, atol=1e-5), k
    final = _params(loop.target)
    assert not _same(final, _params(loop.ema.module)), "the EMA teacher should lag behind T"


# ---------------------------------------------------------------- worst of k, anchor, mixing


def test_worst_of_k_keeps_the_max_loss_candidate(digits, trained_state):
    k, n = 4, 3
    loop = make_loop(digits, trained_state, source="worst_of_k", worst_k=k)
    cache, _ = loop.run_random_phase(1, n, k=k)
    # replay the draws: same generator, same order of calls
    g = make_generator(0, "random", 1)
    parts = []
    for c in range(10):
        pool = (loop.labels == c).nonzero().flatten()
        parts.append(pool[torch.randint(pool.numel(), (n,), generator=g)])
    index = torch.cat(parts)
    fg = loop.images[index.repeat_interleave(k)]
    params = sample_affnist_params(fg, g).params
    with torch.no_grad():
        loop.target.eval()
        ce = F.cross_entropy(loop.target(render_digits(fg, params)), loop.labels[index].repeat_interleave(k), reduction="none").reshape(-1, k)
    chosen = params.reshape(-1, k, 6)[torch.arange(len(index)), ce.argmax(1)]
    assert torch.allclose(cache.params, chosen)
    assert torch.equal(cache.source_index, index)
    assert worst_of_k_select(torch.tensor([[0.0, -2.0, -1.0], [3.0, 1.0, 1.0]])).tolist() == [1, 1]


def test_anchor_delta_stays_within_its_bound(digits, trained_state):
    bound = 0.1
    loop = make_loop(digits, trained_state, anchor="random_delta", anchor_bound=bound)
    with torch.no_grad():  # make S's raw outputs large, so tanh saturates
        last = [m for m in loop.synthesizer.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.mul_(50.0)
        last.bias.fill_(3.0)
    loop.synthesizer.eval()
    with torch.no_grad():
        _, params, unit = loop.synthesize_unit(torch.arange(128), make_generator(3, "anchor"))
    u_random = torch.rand(128, 6, generator=make_generator(3, "anchor"))
    delta = unit - u_random
    assert float(delta.abs().max()) <= bound + 1e-6
    assert float(delta.abs().max()) > 0.5 * bound  # S does move the draw
    r = loop.config.ranges
    for col, (lo, hi) in enumerate((r.angle, r.tx, r.ty, r.shear, r.sx, r.sy)):
        assert float(params[:, col].min()) >= lo - 1e-5 and float(params[:, col].max()) <= hi + 1e-5
    assert torch.allclose(anchored_unit(torch.zeros(2, 6), torch.full((2, 6), 0.3), 0.2), torch.full((2, 6), 0.3))


def test_zero_initialised_s_starts_at_the_range_centre(digits, trained_state):
    loop = make_loop(digits, trained_state, s_zero_init=True, s_noise_dim=4)
    loop.synthesizer.train()
    _, params, unit = loop.synthesize_unit(torch.arange(16), make_generator(0, "z"))
    assert torch.allclose(unit, torch.full_like(unit, 0.5))
    assert torch.allclose(params[:, [0, 3]], torch.zeros(16, 2), atol=1e-6) and torch.allclose(params[:, 4:], torch.ones(16, 2))


def test_mix_random_replaces_a_fraction_of_each_class(digits, trained_state):
    loop = make_loop(digits, trained_state, source="worst_of_k", hard_per_class=4, mix_random=0.5)
    cache, record = loop.build_cache(1)
    assert cache.counts.tolist() == [4] * 10 and record["mix_random_added"] == 20


def test_diversity_penalty_is_high_for_a_collapsed_batch():
    collapsed = torch.full((32, 6), 0.9)
    spread = torch.rand(32, 6, generator=torch.Generator().manual_seed(0))
    assert float(concentration_penalty(collapsed)) == pytest.approx(1.0)
    assert float(concentration_penalty(spread)) < 0.2
    u = spread.clone().requires_grad_(True)
    concentration_penalty(u).backward()
    assert u.grad is not None and float(u.grad.abs().sum()) > 0


def test_param_histograms_see_corners():
    corners = torch.tensor([[0.0, 0.5, 0.5, 1.0, 0.0, 1.0]] * 10)
    uniform = torch.rand(4000, 6, generator=torch.Generator().manual_seed(0))
    hc, hu = param_histograms(corners), param_histograms(uniform)
    assert hc["corner_frac"] == 1.0 and hc["edge_frac"] == 1.0 and hc["angle_shear"][0][4] == 1.0
    assert hu["edge_frac"] == pytest.approx(0.2, abs=0.02) and hu["corner_frac"] < 0.01
    assert hu["param_spread"] == pytest.approx(1.0, abs=0.05) and hc["param_spread"] == 0.0


# ---------------------------------------------------------------- replay, update period, diagnostics, resume


def test_update_period_and_replay(digits, trained_state):
    loop = make_loop(digits, trained_state, s_update_every=2, s_replay=2, cycles=3)
    loop.run_synthesizer_phase(1)
    assert len(loop.replay) == 1
    frozen = _params(loop.synthesizer)
    _, stats = loop.run_synthesizer_phase(2)
    assert not stats["s_trained"] and len(loop.replay) == 1
    assert all(torch.equal(frozen[k], v) for k, v in _params(loop.synthesizer).items() if "running" not in k and "num_batches" not in k)
    loop.run_synthesizer_phase(3)
    assert len(loop.replay) == 2


def test_history_records_the_diagnostics(digits, trained_state):
    ref = make_target(trained_state)
    loop = make_loop(digits, trained_state, reference=ref, clean=ref, cycles=1, source="random")
    res = loop.run(export=False)
    row = res.history[0]
    for key in ("readability", "unrecognised_frac", "param_hist", "affinity", "clean_acc_added", "diversity", "cache_hardness_mean"):
        assert key in row, key
    assert row["readability"] == pytest.approx(1 - row["unrecognised_frac"])
    assert set(row["param_hist"]) >= {"angle_shear", "sx_sy", "tx_ty", "edge_frac", "corner_frac"}


def test_resume_matches_the_uninterrupted_run_with_the_new_options(digits, trained_state, tmp_path):
    options = {
        "cycles": 3, "objective": "teacher", "teacher": "ema", "anchor": "random_delta", "s_zero_init": True, "s_noise_dim": 4, "s_replay": 2,
        "s_update_every": 2, "diversity_weight": 0.5, "mix_random": 0.5, "s_train_steps": 2,
    }  # fmt: skip
    full = make_loop(digits, trained_state, run_dir=tmp_path / "full", **options)
    full.run(export=False)
    first = make_loop(digits, trained_state, run_dir=tmp_path / "killed", **options)
    first.run(max_cycles=1, export=False)
    resumed = make_loop(digits, MNISTClassifier().state_dict(), run_dir=tmp_path / "killed", **options)
    resumed.run(resume=True, export=False)
    for a, b in ((full.synthesizer, resumed.synthesizer), (full.target, resumed.target), (full.ema, resumed.ema)):
        assert _same(_params(a), _params(b))
    assert len(full.replay) == len(resumed.replay) == 2
    for sa, sb in zip(full.replay.states, resumed.replay.states):
        assert _same(sa, sb)
    for ca, cb in zip(full.caches, resumed.caches):
        assert torch.equal(ca.images, cb.images) and torch.equal(ca.params, cb.params)
    strip = [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in full.history]
    assert strip == [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in resumed.history]
    assert copy.deepcopy(full.history[1]).get("s_trained") is False
