import math

import pytest
import torch

from synthloop.errors import InputError
from synthloop.loops.refine.checkpoint import (
    load_refiner_checkpoint,
    save_refiner_checkpoint,
)
from synthloop.loops.refine.common import (
    ClassifierConfig,
    DiscriminatorConfig,
    Domain,
    GeneratorConfig,
    ImagePool,
    PairSampler,
)
from synthloop.loops.refine.cyclegan import CycleGANConfig, CycleGANTrainer
from synthloop.loops.refine.divergence import DivergenceConfig, DivergenceError
from synthloop.loops.refine.mrgan import (
    STAGE2_MODES,
    MrGANConfig,
    MrGANStageConfig,
    MrGANTrainer,
)
from synthloop.loops.refine.pixelda import (
    PixelDAConfig,
    PixelDAGeneratorConfig,
    PixelDATrainer,
)

SIZE = 28
TINY_G = GeneratorConfig(base_channels=4, n_blocks=1)
TINY_D = DiscriminatorConfig(width=0.0625)


def blobs(n, num_classes, *, seed, channels=1, gamma=1.0):
    """Class c: a bright square whose position depends on c, plus noise; masks mark the square."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    x = 0.15 * torch.rand(n, channels, SIZE, SIZE, generator=g)
    masks = torch.zeros(n, 1, SIZE, SIZE)
    for i, c in enumerate(labels.tolist()):
        r, col = 4 + 6 * (c // 2), 4 + 10 * (c % 2)
        x[i, :, r : r + 8, col : col + 8] = 0.9
        masks[i, :, r : r + 8, col : col + 8] = 1
    return x.clamp(0, 1) ** gamma, labels, masks


@pytest.fixture(scope="module")
def domains():
    xs, ys, ms = blobs(16, 4, seed=1)
    xr, yr, _ = blobs(12, 4, seed=2, gamma=2.0)
    return Domain(xs, ys, ms, name="synthetic"), Domain(xr, yr, name="real")


def cyclegan_cfg(**kw):
    base = dict(generator=TINY_G, discriminator=TINY_D, batch_size=4, steps=3)
    return CycleGANConfig(**{**base, **kw})


def mrgan_stage(**kw):
    base = dict(generator=TINY_G, discriminator=TINY_D, batch_size=4, steps=2, pretrain_g_steps=1, pretrain_d_steps=1, g_updates_per_step=2)
    return MrGANStageConfig(**{**base, **kw})


def pixelda_cfg(**kw):
    base = dict(
        generator=PixelDAGeneratorConfig(base_channels=4, n_blocks=1),
        discriminator=TINY_D,
        classifier=ClassifierConfig(widths=(4, 8), blocks_per_stage=1),
        batch_size=4,
        steps=3,
    )
    return PixelDAConfig(**{**base, **kw})


def all_finite(losses):
    return all(math.isfinite(v) for v in losses.values())


def check_refined(refined, inputs):
    assert refined.shape == inputs.shape
    assert refined.min() >= 0 and refined.max() <= 1


# ------------------------------------------------------------------------------------- training


def test_cyclegan_runs_with_every_loss(domains):
    syn, real = domains
    t = CycleGANTrainer(cyclegan_cfg(identity=True, lambda_l1=0.1), syn, real, seed=0)
    history = t.train()
    assert len(history) == 3 and t.done and all(all_finite(h) for h in history)
    expected = {"g_adv_s2r", "g_adv_r2s", "cycle_syn", "cycle_real", "identity_real", "identity_syn", "l1_syn", "l1_real"}
    expected |= {"bg_syn", "fg_syn", "g_total", "d_real", "d_syn", "d_total", "batch_std"}
    assert expected <= set(history[0])
    assert "bg_real" not in history[0]  # the real side has no masks
    total = history[0]
    recomputed = (
        total["g_adv_s2r"] + total["g_adv_r2s"] + 10 * (total["cycle_syn"] + total["cycle_real"])
        + 0.5 * 10 * (total["identity_real"] + total["identity_syn"]) + 0.1 * (total["l1_syn"] + total["l1_real"])
        + total["bg_syn"] + total["fg_syn"]
    )  # fmt: skip
    assert total["g_total"] == pytest.approx(recomputed, rel=1e-5)
    check_refined(t.refine(syn.images), syn.images)
    check_refined(t.translate_real(real.images), real.images)
    with pytest.raises(RuntimeError, match="finished"):
        t.train_step()


def test_cyclegan_learning_rate_decays_linearly(domains):
    syn, real = domains
    t = CycleGANTrainer(cyclegan_cfg(steps=4, decay_fraction=0.5, lr_g=1e-3), syn, real)
    factors = [t.train_step()["lr_factor"] for _ in range(4)]
    assert factors == [1.0, 1.0, 1.0, 0.5]
    assert t.opt_g.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_mrgan_phases_and_stage2_modes(domains):
    syn, real = domains
    for mode in STAGE2_MODES:
        cfg = MrGANConfig(stage1=mrgan_stage(), stage2=mrgan_stage(pretrain_g_steps=0, pretrain_d_steps=0, steps=1), stage2_mode=mode)
        t = MrGANTrainer(cfg, syn, real, seed=0)
        assert t.total_steps == 4 + 1
        history = t.train()
        assert t.done and len(history) == 5 and all(all_finite(h) for h in history)
        assert "stage1/pretrain_l1_s2r" in history[0] and "stage1/d_total" in history[1]
        assert "stage1/g_adv_s2r" in history[2] and "stage2/g_adv_s2r" in history[4]
        s2 = t.stage2
        # stage 2 trains on the pair its mode names: RS = G1(S), RR = F1(R)
        rs, rr = t.stage1.refine(syn.images), t.stage1.translate_real(real.images)
        source, target = {"rr_rs": (rs, rr), "r_rs": (rs, real.images), "rr_s": (syn.images, rr)}[mode]
        assert torch.equal(s2.synthetic.images, source) and torch.equal(s2.real.images, target)
        assert torch.equal(s2.synthetic.labels, syn.labels) and torch.equal(s2.real.labels, real.labels)
        refined = t.refine(syn.images)
        check_refined(refined, syn.images)
        expected = s2.refine(syn.images if mode == "rr_s" else rs)
        assert torch.equal(refined, expected)
        mapped = t.map_real(real.images)
        assert torch.equal(mapped, real.images if mode == "r_rs" else rr)


def test_mrgan_stage_defaults_are_the_papers():
    s = MrGANStageConfig()
    assert (s.lr_g, s.lr_d, s.g_updates_per_step, s.steps) == (2e-4, 1e-5, 5, 40_000)
    assert (s.pretrain_g_steps, s.pretrain_d_steps) == (1000, 500)
    assert s.real_label_range == (0.7, 1.2) and s.fake_label_range == (0.0, 0.3)
    # a partial stage config keeps MrGAN's defaults for the rest
    assert MrGANConfig.model_validate({"stage1": {"steps": 7}}).stage1.lr_d == 1e-5
    c = CycleGANConfig()
    assert (c.lr_g, c.lr_d, c.betas, c.lambda_cycle, c.identity_ratio, c.pool_size) == (2e-4, 2e-4, (0.5, 0.999), 10.0, 0.5, 50)


def test_pixelda_runs_and_combines_its_losses(domains):
    syn, real = domains
    cfg = pixelda_cfg()
    t = PixelDATrainer(cfg, syn, real, seed=0)
    history = t.train()
    assert len(history) == 3 and all(all_finite(h) for h in history)
    h = history[0]
    assert {"d_loss", "t_loss", "g_adv", "g_task", "g_content", "g_total", "t_acc_refined"} <= set(h)
    assert h["g_total"] == pytest.approx(cfg.alpha * h["g_adv"] + cfg.beta * h["g_task"] + cfg.gamma * h["g_content"], rel=1e-5)
    assert h["dt_total"] == pytest.approx(cfg.alpha * h["d_loss"] + cfg.beta * h["t_loss"], rel=1e-5)
    refined = t.refine(syn.images)
    check_refined(refined, syn.images)
    assert torch.equal(refined, t.refine(syn.images))  # default noise is derived from the seed
    other = t.refine(syn.images, generator=torch.Generator().manual_seed(99))
    assert not torch.equal(refined, other)


def test_pixelda_needs_synthetic_labels(domains):
    syn, real = domains
    with pytest.raises(InputError, match="task classifier") as e:
        PixelDATrainer(pixelda_cfg(), Domain(syn.images), real)
    assert e.value.field == "synthetic.labels"


def test_pixelda_lr_staircase(domains):
    syn, real = domains
    t = PixelDATrainer(pixelda_cfg(steps=5, lr_decay_steps=2, lr_decay_rate=0.5, lr=1e-3), syn, real)
    assert [t.train_step()["lr"] for _ in range(5)] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4])


# --------------------------------------------------------------------------- determinism/resume


def _cyclegan_resume_cfg():
    # every source of randomness on: pools that fill and swap, label smoothing and flipping,
    # several generator updates, both pre-training phases
    return mrgan_stage(steps=2, pool_size=3, label_flip_prob=0.5)


@pytest.mark.parametrize("method", ["cyclegan", "pixelda"])
def test_same_seed_same_first_step_losses(domains, method):
    syn, real = domains

    def first(seed):
        if method == "cyclegan":
            t = CycleGANTrainer(cyclegan_cfg(), syn, real, seed=seed)
        else:
            t = PixelDATrainer(pixelda_cfg(), syn, real, seed=seed)
        return t.train_step()

    assert first(3) == first(3)
    assert first(3) != first(4)


def _params_equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def _opt_state_equal(a, b):
    sa, sb = a.state_dict()["state"], b.state_dict()["state"]
    return sa.keys() == sb.keys() and all(
        torch.equal(torch.as_tensor(sa[k][n]), torch.as_tensor(sb[k][n])) for k in sa for n in sa[k]
    )


@pytest.mark.parametrize("method", ["cyclegan", "pixelda", "mrgan"])
def test_checkpoint_resume_matches_uninterrupted_run(domains, tmp_path, method):
    syn, real = domains

    def make():
        if method == "cyclegan":
            return CycleGANTrainer(_cyclegan_resume_cfg(), syn, real, seed=7)
        if method == "pixelda":
            return PixelDATrainer(pixelda_cfg(steps=4), syn, real, seed=7)
        stage = mrgan_stage(pretrain_g_steps=0, pretrain_d_steps=0, steps=2, pool_size=2)
        return MrGANTrainer(MrGANConfig(stage1=stage, stage2=stage), syn, real, seed=7)

    full = make()
    expected = full.train()
    assert len(expected) == 4

    part = make()
    part.train(3)  # for MrGAN: stage 1 done, stage 2 one step in
    save_refiner_checkpoint(tmp_path / "ckpt.pt", part, {"note": "test"})
    resumed = make()
    assert load_refiner_checkpoint(tmp_path / "ckpt.pt", resumed) == {"note": "test"}
    assert resumed.step == 3
    assert resumed.train() == expected[3:]
    assert resumed.history == full.history

    def trainers(t):
        return [t.stage1, t.stage2] if method == "mrgan" else [t]

    for a, b in zip(trainers(full), trainers(resumed)):
        assert a.models.keys() == b.models.keys()
        assert all(_params_equal(a.models[k], b.models[k]) for k in a.models)
        assert all(_opt_state_equal(a.optimizers[k], b.optimizers[k]) for k in a.optimizers)
        for k in a.rngs:
            assert torch.equal(a.rngs[k].get_state(), b.rngs[k].get_state())


def test_checkpoint_of_another_method_is_rejected(domains, tmp_path):
    syn, real = domains
    save_refiner_checkpoint(tmp_path / "c.pt", CycleGANTrainer(cyclegan_cfg(), syn, real))
    with pytest.raises(InputError, match="method 'cyclegan'") as e:
        load_refiner_checkpoint(tmp_path / "c.pt", PixelDATrainer(pixelda_cfg(), syn, real))
    assert e.value.file == str(tmp_path / "c.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(InputError, match="cannot read checkpoint"):
        load_refiner_checkpoint(tmp_path / "junk.pt", CycleGANTrainer(cyclegan_cfg(), syn, real))


# ------------------------------------------------------------------------------------- pairing


def test_label_aligned_pairs_share_classes():
    src = Domain(torch.rand(40, 1, 4, 4), torch.arange(40) % 5)
    tgt = Domain(torch.rand(23, 1, 4, 4), torch.tensor([4, 0, 1, 2, 3] * 4 + [0, 0, 4]))
    s = PairSampler(src, tgt, label_aligned=True, generator=torch.Generator().manual_seed(0))
    assert s.aligned
    seen = torch.zeros(23, dtype=torch.bool)
    for _ in range(50):
        si, ti = s.sample(16)
        assert torch.equal(src.labels[si], tgt.labels[ti])
        seen[ti] = True
    assert seen.all()  # every target sample of each class gets drawn


def test_unaligned_pairing_and_missing_classes():
    src = Domain(torch.rand(40, 1, 4, 4), torch.arange(40) % 5)
    tgt = Domain(torch.rand(40, 1, 4, 4), torch.arange(40) % 5)
    s = PairSampler(src, tgt, label_aligned=False, generator=torch.Generator().manual_seed(0))
    si, ti = s.sample(256)
    assert not s.aligned and (src.labels[si] != tgt.labels[ti]).any()
    unlabelled = PairSampler(src, Domain(tgt.images), label_aligned=True, generator=torch.Generator())
    assert not unlabelled.aligned
    partial = Domain(torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 2]), name="real folder r")
    with pytest.raises(InputError, match=r"class\(es\) 3, 4 of .* no sample in real folder r"):
        PairSampler(src, partial, label_aligned=True, generator=torch.Generator())


def test_trainer_pairs_same_classes(domains):
    syn, real = domains
    t = CycleGANTrainer(cyclegan_cfg(), syn, real, seed=0)
    si, ti = t.sampler.sample(32)
    assert t.sampler.aligned and torch.equal(syn.labels[si], real.labels[ti])


# ------------------------------------------------------------------------------------ divergence


@pytest.mark.parametrize("method", ["cyclegan", "pixelda"])
def test_nan_raises_divergence_error(domains, method):
    syn, real = domains
    t = CycleGANTrainer(cyclegan_cfg(), syn, real) if method == "cyclegan" else PixelDATrainer(pixelda_cfg(), syn, real)
    net = t.g_s2r if method == "cyclegan" else t.g
    with torch.no_grad():
        next(net.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(DivergenceError, match="non-finite loss") as e:
        t.train_step()
    assert e.value.event.kind == "non_finite_loss" and e.value.event.step == 0
    assert t.step == 0 and t.events == [e.value.event]


def test_nan_recorded_and_update_skipped(domains):
    syn, real = domains
    t = CycleGANTrainer(cyclegan_cfg(), syn, real, divergence=DivergenceConfig(action="record"))
    with torch.no_grad():
        t.g_s2r.head[1].bias.fill_(float("nan"))
    before = {k: v.clone() for k, v in t.d_real.state_dict().items()}
    losses = t.train_step()
    assert t.step == 1 and not math.isfinite(losses["g_total"])
    assert [e.kind for e in t.events] == ["non_finite_loss"] and "update was skipped" in t.events[0].message
    assert all(torch.equal(before[k], v) for k, v in t.d_real.state_dict().items())  # nothing stepped


@pytest.mark.parametrize("method", ["cyclegan", "pixelda"])
def test_constant_generator_is_mode_collapse(domains, method):
    syn, real = domains
    div = DivergenceConfig(min_batch_std=1e-4, patience=2)
    t = CycleGANTrainer(cyclegan_cfg(steps=4), syn, real, divergence=div) if method == "cyclegan" else PixelDATrainer(pixelda_cfg(steps=4), syn, real, divergence=div)
    head = t.g_s2r.head[1] if method == "cyclegan" else t.g.head[0]
    assert t.train_step()["batch_std"] > 1e-3  # a healthy generator varies with its input
    with torch.no_grad():
        head.weight.zero_()  # output = tanh(bias): the same image whatever the input
    for p in head.parameters():
        p.requires_grad_(False)
    assert t.train_step()["batch_std"] == 0.0  # one low step: patience not reached
    with pytest.raises(DivergenceError, match="mode collapse") as e:
        t.train_step()
    assert e.value.event.kind == "mode_collapse" and e.value.event.value == 0.0


def test_domain_validation():
    with pytest.raises(InputError, match="NaN"):
        Domain(torch.full((2, 1, 4, 4), float("nan")), name="synthetic")
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        Domain(torch.full((2, 1, 4, 4), 2.0))
    with pytest.raises(InputError, match="no images"):
        Domain(torch.zeros(0, 1, 4, 4))
    with pytest.raises(InputError, match="labels must be an integer") as e:
        Domain(torch.zeros(2, 1, 4, 4), torch.zeros(3, dtype=torch.long), name="real")
    assert e.value.field == "real.labels"
    a = Domain(torch.zeros(2, 1, 8, 8), name="a")
    with pytest.raises(InputError, match="1-channel images but b has 3"):
        CycleGANTrainer(cyclegan_cfg(), a, Domain(torch.zeros(2, 3, 8, 8), name="b"))
    with pytest.raises(InputError, match="same size"):
        CycleGANTrainer(cyclegan_cfg(), a, Domain(torch.zeros(2, 1, 12, 12), name="b"))
    with pytest.raises(InputError, match="multiples of 4"):
        CycleGANTrainer(cyclegan_cfg(), Domain(torch.zeros(2, 1, 6, 6)), Domain(torch.zeros(2, 1, 6, 6)))


# ------------------------------------------------------------------------------------ components


def test_image_pool():
    g = torch.Generator().manual_seed(0)
    pool = ImagePool(3)
    first = torch.arange(2.0).view(2, 1, 1, 1)
    assert torch.equal(pool.query(first, g), first) and pool.count == 2
    second = torch.arange(10.0, 16.0).view(6, 1, 1, 1)
    out = pool.query(second, g)
    assert pool.count == 3 and out[0].item() == 10.0  # the third slot still filled from the batch
    swapped = [i for i in range(1, 6) if out[i].item() != second[i].item()]
    assert swapped  # with 5 coin flips some images come from the history
    history = {0.0, 1.0, 10.0, 11.0, 12.0, 13.0, 14.0}
    assert all(out[i].item() in history for i in swapped)
    assert torch.equal(ImagePool(0).query(second, g), second)
