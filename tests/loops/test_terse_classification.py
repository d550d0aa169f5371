import copy
import json

import numpy as np
import pytest
import torch
from classification_helpers import N_DIGITS, digits, make_target, trained_state  # noqa: F401  (fixtures)

from synthloop.config import build_config
from synthloop.data.affnist import AFFNIST_RANGES, translation_bounds
from synthloop.errors import ConfigError, InputError
from synthloop.loops.cache import HardExampleCache, render_digits
from synthloop.loops.export import load_exported
from synthloop.loops.terse_classification import TerseClassificationConfig, TerseClassificationLoop
from synthloop.loops.training import fit_classifier, sgd
from synthloop.models import MNISTClassifier, MNISTSynthesizer, ParamRanges, freeze, is_hard_from_probs


def small_config(**overrides):
    values = dict(cycles=2, hard_per_class=4, s_batch_size=64, s_max_steps=6, t_epochs=1, t_batch_size=32)
    values.update(overrides)
    return TerseClassificationConfig(**values)


def make_loop(digits, state, run_dir=None, **overrides):
    x, y = digits
    return TerseClassificationLoop(small_config(**overrides), make_target(state), x, y, run_dir=run_dir)


# ---------------------------------------------------------------- synthesizer outputs and the S step


def test_synthesizer_outputs_stay_in_ranges_and_on_canvas(digits, trained_state):
    loop = make_loop(digits, trained_state, ranges={"angle": (-5.0, 10.0), "sx": (0.9, 1.0)})
    index = torch.arange(128)
    with torch.no_grad():
        images, params = loop.synthesize(index)
    assert images.shape == (128, 1, 40, 40) and params.shape == (128, 6)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    lo = torch.tensor([-5.0, -16.0, -16.0, -0.2, 0.9, 0.8])
    hi = torch.tensor([10.0, 16.0, 16.0, 0.2, 1.0, 1.2])
    assert bool((params >= lo - 1e-5).all()) and bool((params <= hi + 1e-5).all())
    # fitted translation: every digit stays entirely on the canvas
    b = translation_bounds(loop.images[index], params)
    tx, ty = params[:, 1], params[:, 2]
    assert bool((tx >= b[:, 0] - 1e-4).all() and (tx <= b[:, 1] + 1e-4).all())
    assert bool((ty >= b[:, 2] - 1e-4).all() and (ty <= b[:, 3] + 1e-4).all())
    # the composite is the warped digit: its ink is (close to) the source's ink times the area scale
    area = params[:, 4] * params[:, 5]
    ink = images.sum((1, 2, 3)) / (loop.images[index].sum((1, 2, 3)) * area)
    assert torch.allclose(ink, torch.ones(128), atol=0.05)


def test_synthesizer_step_gradient_flow(digits, trained_state):
    loop = make_loop(digits, trained_state, discriminator=True)
    s_before = {k: v.clone() for k, v in loop.synthesizer.state_dict().items()}
    t_before = {k: v.clone() for k, v in loop.target.state_dict().items()}
    d_before = {k: v.clone() for k, v in loop.discriminator.state_dict().items()}
    loop.target.train()
    s_ids = {id(p) for g in loop.opt_s.param_groups for p in g["params"]}
    assert s_ids == {id(p) for p in loop.synthesizer.parameters()}
    assert not s_ids & {id(p) for p in loop.target.parameters()}
    assert not s_ids & {id(p) for p in loop.discriminator.parameters()}

    losses = loop.synthesizer_step(torch.arange(64))
    assert {"loss_s", "loss_t", "loss_adv", "hard_frac"} <= set(losses)
    assert all(np.isfinite(v) for v in losses.values())
    for name, p in loop.synthesizer.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    # the foreground path carries signal: its weights get nonzero gradients and move
    for name, p in loop.synthesizer.named_parameters():
        if name.startswith(("backbone.0", "fg_branch.0", "regressor.8")):
            assert p.grad.abs().sum() > 0, name
    changed = [k for k, v in loop.synthesizer.state_dict().items() if v.is_floating_point() and not torch.equal(v, s_before[k])]
    assert "regressor.8.weight" in changed and "backbone.0.weight" in changed
    # T and D untouched, not frozen any more, T back in its previous mode
    assert all(torch.equal(v, t_before[k]) for k, v in loop.target.state_dict().items())
    assert all(torch.equal(v, d_before[k]) for k, v in loop.discriminator.state_dict().items())
    assert all(p.requires_grad and p.grad is None for p in loop.target.parameters())
    assert all(p.requires_grad and p.grad is None for p in loop.discriminator.parameters())
    assert loop.target.training


def test_target_and_discriminator_steps_leave_synthesizer_alone(digits, trained_state):
    loop = make_loop(digits, trained_state, discriminator=True)
    s_before = {k: v.clone() for k, v in loop.synthesizer.state_dict().items()}
    t_before = [p.clone() for p in loop.target.parameters()]
    d_before = [p.clone() for p in loop.discriminator.parameters()]
    x, y = digits
    out = loop.target_step(x[:32], y[:32])
    assert set(out) == {"loss_t"} and np.isfinite(out["loss_t"])
    with torch.no_grad(), freeze(loop.synthesizer):  # how the loop feeds D: composites of a frozen S
        fake, _ = loop.synthesize(torch.arange(32))
    out = loop.discriminator_step(x[32:64], fake)
    assert set(out) == {"loss_d"}
    assert any(not torch.equal(a, b) for a, b in zip(t_before, loop.target.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, loop.discriminator.parameters()))
    assert all(torch.equal(v, s_before[k]) for k, v in loop.synthesizer.state_dict().items())
    assert all(p.grad is None for p in loop.synthesizer.parameters())


# ---------------------------------------------------------------- hard examples and the cache


def test_hard_example_criterion_margin_is_strict():
    # p_max_other - p_true > margin, strictly (values exact in binary floating point)
    probs = torch.tensor([[0.25, 0.375, 0.375], [0.25, 0.5, 0.25], [0.75, 0.125, 0.125], [0.5, 0.25, 0.25]])
    labels = torch.tensor([0, 0, 1, 0])
    assert is_hard_from_probs(probs, labels, 0.125).tolist() == [False, True, True, False]


def test_synthesizer_phase_caches_only_hard_examples_that_replay(digits, trained_state):
    loop = make_loop(digits, trained_state, hard_per_class=3, s_max_steps=20)
    cache, stats = loop.run_synthesizer_phase(1)
    assert cache.full and stats["s_steps"] >= 1
    assert cache.counts.tolist() == [3] * 10 and len(cache) == 30
    assert cache.params.shape == (30, 6) and cache.source_index.shape == (30,)
    assert torch.equal(cache.labels, loop.labels[cache.source_index])
    # every cached sample is hard for the (unchanged) target, with the hardness recorded
    with torch.no_grad():
        probs = loop.target.eval()(cache.images).softmax(1)
    assert bool(is_hard_from_probs(probs, cache.labels, 0.05).all())
    assert torch.allclose(cache.hardness, 1 - probs.gather(1, cache.labels[:, None]).squeeze(1), atol=1e-5)
    # parameters + source digits replay the cached images through paste_batch
    assert torch.equal(cache.replay(loop.images), cache.images)


def test_cache_bookkeeping_first_policy():
    cache = HardExampleCache(num_classes=3, per_class=2)
    labels = torch.tensor([0, 0, 0, 1, 2, 1, 1])
    images = torch.arange(7, dtype=torch.float32).view(7, 1, 1, 1).expand(7, 1, 2, 2)
    params = torch.arange(42, dtype=torch.float32).view(7, 6)
    accept = torch.tensor([True, False, True, True, True, True, True])
    n = cache.add(images, labels, params, torch.arange(7), torch.rand(7), accept=accept)
    assert n == 5 and cache.counts.tolist() == [2, 2, 1] and not cache.full
    assert cache.images[:, 0, 0, 0].tolist() == [0.0, 2.0, 3.0, 4.0, 5.0]  # first accepted of each class, in order
    assert torch.equal(cache.params, params[[0, 2, 3, 4, 5]])
    assert cache.class_full().tolist() == [True, True, False]
    assert cache.add(images, labels, params, torch.arange(7), torch.rand(7)) == 1  # only class 2 has room
    assert cache.full and len(cache) == cache.capacity == 6
    assert cache.add(images, labels, params, torch.arange(7), torch.rand(7)) == 0


def test_cache_latest_policy_keeps_most_recent():
    cache = HardExampleCache(num_classes=2, per_class=2, policy="latest")
    for start in (0, 10):
        idx = torch.arange(start, start + 4)
        cache.add(torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 0, 0]), torch.zeros(4, 6), idx, torch.zeros(4))
    assert cache.counts.tolist() == [2, 2]
    assert sorted(cache.source_index.tolist()) == [1, 11, 12, 13]


def test_cache_save_load_round_trip_and_errors(tmp_path):
    cache = HardExampleCache(num_classes=10, per_class=1)
    with pytest.raises(InputError, match="empty"):
        cache.images
    with pytest.raises(InputError, match="empty"):
        cache.save(tmp_path / "empty.npz")
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(10, 1, 5, 5, generator=g)
    cache.add(imgs, torch.arange(10), torch.rand(10, 6, generator=g), torch.arange(10), torch.rand(10, generator=g))
    cache.save(tmp_path / "c.npz")
    back = HardExampleCache.load(tmp_path / "c.npz")
    for key in ("images", "labels", "params", "source_index", "hardness"):
        assert torch.equal(getattr(back, key), getattr(cache, key))
    assert back.full and back.per_class == 1
    with pytest.raises(InputError, match="not found"):
        HardExampleCache.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "zero.npz", images=np.zeros((0, 1, 5, 5), np.float32), labels=np.zeros(0, np.int64), params=np.zeros((0, 6), np.float32),
             source_index=np.zeros(0, np.int64), hardness=np.zeros(0, np.float32), param_names=np.array(["angle", "tx", "ty", "shear", "sx", "sy"]),
             num_classes=np.array(10), per_class=np.array(1))  # fmt: skip
    with pytest.raises(InputError, match="no samples"):
        HardExampleCache.load(tmp_path / "zero.npz")
    with pytest.raises(InputError, match="per_class"):
        HardExampleCache(num_classes=10, per_class=0)


def test_random_source_is_class_balanced_recipe(digits, trained_state):
    loop = make_loop(digits, trained_state, source="random", hard_per_class=5)
    cache, stats = loop.run_random_phase(1)
    assert cache.counts.tolist() == [5] * 10 and stats["s_steps"] == 0
    for col, name in enumerate(("angle", "tx", "ty", "shear", "sx", "sy")):
        lo, hi = AFFNIST_RANGES[name]
        assert float(cache.params[:, col].min()) >= lo - 1e-5 and float(cache.params[:, col].max()) <= hi + 1e-5
    assert torch.equal(render_digits(loop.images[cache.source_index], cache.params), cache.images)


# ---------------------------------------------------------------- the run: checkpoints, resume, outputs


def _history_without_times(history):
    return [{k: v for k, v in row.items() if not k.endswith("_seconds")} for row in history]


def test_resume_after_a_kill_matches_the_uninterrupted_run(digits, trained_state, tmp_path):
    full = make_loop(digits, trained_state, run_dir=tmp_path / "full")
    res_full = full.run(export=False)
    assert res_full.finished and res_full.completed_cycles == 2

    first = make_loop(digits, trained_state, run_dir=tmp_path / "killed")
    res_first = first.run(max_cycles=1, export=False)
    assert not res_first.finished and res_first.completed_cycles == 1
    assert (tmp_path / "killed" / "checkpoint.pt").is_file()
    with pytest.raises(InputError, match="--resume"):
        make_loop(digits, trained_state, run_dir=tmp_path / "killed").run()
    with pytest.raises(InputError, match="different configuration.*lr_t"):
        make_loop(digits, trained_state, run_dir=tmp_path / "killed", lr_t=0.5).run(resume=True)

    # a fresh process would build fresh models: their weights come from the checkpoint
    fresh_state = MNISTClassifier().state_dict()
    resumed = make_loop(digits, fresh_state, run_dir=tmp_path / "killed")
    res = resumed.run(resume=True, export=False)
    assert res.finished and res.completed_cycles == 2
    for a, b in ((full.synthesizer, resumed.synthesizer), (full.target, resumed.target)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert len(full.caches) == len(resumed.caches) == 2
    for ca, cb in zip(full.caches, resumed.caches):
        for key in ("images", "labels", "params", "source_index", "hardness"):
            assert torch.equal(getattr(ca, key), getattr(cb, key))
    assert _history_without_times(full.history) == _history_without_times(resumed.history)


def test_end_to_end_run_writes_dataset_and_loadable_model(digits, trained_state, tmp_path):
    x, y = digits
    loop = make_loop(digits, trained_state, run_dir=tmp_path, hard_per_class=3)
    seen = []
    res = loop.run(evaluate=lambda m: {"marker": 1.0}, progress=lambda task, done, total: seen.append(task))
    assert res.finished and res.exported["format"] == "torch.export"
    assert any("synthesizer" in t for t in seen) and any("target" in t for t in seen)
    for name in ("config.yaml", "history.json", "checkpoint.pt", "target.pt2", "target.json"):
        assert (tmp_path / name).is_file(), name
    history = json.loads((tmp_path / "history.json").read_text())
    assert [r["cycle"] for r in history] == [1, 2] and all(r["marker"] == 1.0 for r in history)
    assert history[1]["synthetic_total"] == sum(len(c) for c in res.caches) > 0
    on_disk = HardExampleCache.load(tmp_path / "cycles" / "cycle_001" / "samples.npz")
    assert torch.equal(on_disk.images, res.caches[0].images) and torch.equal(on_disk.params, res.caches[0].params)
    assert not (tmp_path / "cycles" / "cycle_001" / "grid.png").exists()  # figures are the caller's (on_cycle)
    spec = json.loads((tmp_path / "target.json").read_text())
    assert spec["inputs"][0]["shape"] == ["N", 1, 40, 40] and spec["outputs"][0]["shape"] == ["N", 10]
    exported = torch.export.load(str(tmp_path / "target.pt2")).module()
    loop.target.eval()
    for n in (1, 5):
        with torch.no_grad():
            assert torch.allclose(exported(x[:n]), loop.target(x[:n]), atol=1e-5)
    assert torch.allclose(load_exported(tmp_path / "target.json")(x[:3]), loop.target(x[:3]), atol=1e-5)


# ---------------------------------------------------------------- bad input


def test_classifier_with_wrong_output_width_is_rejected(digits):
    x, y = digits
    with pytest.raises(InputError, match=r"expected \(2, 10\).*num_classes=10"):
        TerseClassificationLoop(small_config(), MNISTClassifier(num_classes=7), x, y)


def test_missing_class_and_malformed_data_are_rejected(digits, trained_state):
    x, y = digits
    keep = y != 3
    with pytest.raises(InputError, match=r"class \[3\]"):
        TerseClassificationLoop(small_config(), make_target(trained_state), x[keep], y[keep])
    with pytest.raises(InputError, match="empty"):
        TerseClassificationLoop(small_config(), make_target(trained_state), x[:0], y[:0])
    with pytest.raises(InputError, match=r"\[0, 10\)"):
        TerseClassificationLoop(small_config(), make_target(trained_state), x[:4], torch.tensor([0, 1, 2, 11]))


def test_ranges_with_min_above_max_are_clear_errors():
    with pytest.raises(ConfigError, match=r"ranges\.angle.*min 5\.0 > max -5\.0"):
        build_config(TerseClassificationConfig, {"ranges": {"angle": [5, -5]}})
    with pytest.raises(ConfigError, match=r"ranges\.bogus"):
        build_config(TerseClassificationConfig, {"ranges": {"bogus": [0, 1]}})
    with pytest.raises(InputError, match="min 1.5 > max 1.0"):
        MNISTSynthesizer(ranges=ParamRanges(sx=(1.5, 1.0)))


def test_resume_needs_a_run_folder(digits, trained_state):
    with pytest.raises(InputError, match="run folder"):
        make_loop(digits, trained_state).run(resume=True)


def test_discriminator_step_without_discriminator_is_an_error(digits, trained_state):
    loop = make_loop(digits, trained_state)
    with pytest.raises(InputError, match="discriminator"):
        loop.discriminator_step(torch.zeros(2, 1, 40, 40), torch.zeros(2, 1, 40, 40))


def test_subsampled_training_epochs(digits):
    x, y = digits
    model = MNISTClassifier()
    before = copy.deepcopy(model.state_dict())
    stats = fit_classifier(model, sgd(model, 0.01, 0.5), [(x, y), (x[:20], y[:20])], num_classes=10, epochs=2, batch_size=32,
                           generator=torch.Generator().manual_seed(1), subsample=[50, None])  # fmt: skip
    assert stats["samples"] == 70 and stats["batches"] == 6
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
