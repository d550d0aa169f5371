"""The TERSE scene loop for detection on tiny data (64x64 images, 2 classes, 1-2 steps)."""

from __future__ import annotations

import copy
import math
import json

import numpy as np
import pytest
import torch

from synthloop.compose.sources import TensorInstances
from synthloop.data.backgrounds import BackgroundBank
from synthloop.errors import InputError
from synthloop.loops.terse_detection import SceneTerse, replay_scene, write_synthetic_coco
from synthloop.loops.terse_detection_config import SceneTerseConfig
from synthloop.models.detection import DetectionTarget, LabelMap, SmallDetector

SIZE = 64
LABEL_MAP = LabelMap((3, 7), ("ring", "bar"))  # non-contiguous COCO ids: labels 1, 2


def _bank(n: int = 6, categories: tuple[int, ...] = (3, 7)) -> TensorInstances:
    g = torch.Generator().manual_seed(5)
    rgbs, alphas, cats = [], [], []
    for i in range(n):
        a = torch.zeros(1, 20, 16)
        if i % 2:
            a[:, 2:18, 5:11] = 1.0  # a bar
        else:
            a[:, 3:17, 2:14] = 1.0  # a ring
            a[:, 7:13, 6:10] = 0.0
        rgbs.append(torch.rand(3, 1, 1, generator=g).expand(3, 20, 16).clone())
        alphas.append(a)
        cats.append(categories[i % len(categories)])
    return TensorInstances(rgbs, alphas, cats)


def _real(n: int = 6) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(3)
    images = torch.rand(n, 3, SIZE, SIZE, generator=g)
    targets = [{"boxes": torch.tensor([[5.0, 6.0, 25.0, 30.0]]), "labels": torch.tensor([1 + i % 2])} for i in range(n)]
    return images, targets


def _target(seed: int = 0) -> DetectionTarget:
    torch.manual_seed(seed)
    return DetectionTarget(SmallDetector(3, SIZE, width=8, fpn_channels=32, head_convs=1), LABEL_MAP)


TINY = dict(
    cycles=2,
    s_steps=1,
    batch_size=4,
    hard_per_cycle=3,
    max_candidates_per_cycle=8,
    t_epochs=1,
    t_batch_size=4,
    num_objects=2,
    fg_size=32,
    s_channels=[8, 16],
    s_branch_channels=8,
    s_input_size=32,
    d_width=0.125,
    d_steps=1,
    blend_modes=["alpha", "gaussian"],
)


def _loop(**overrides) -> SceneTerse:
    cfg = SceneTerseConfig(**{**TINY, **overrides})
    images, targets = _real()
    return SceneTerse(cfg, _target(), images, targets, _bank(), BackgroundBank(["noise", "gradient"]))


def _strip(history):
    return [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in history]


def _weights(module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


def test_run_end_to_end_keeps_hard_labelled_composites(tmp_path):
    loop = _loop()
    result = loop.run(tmp_path / "run")
    assert len(result.history) == 2 and result.completed_cycles == 2
    assert len(result.scenes) == sum(h["kept"] for h in result.history) > 0
    for h in result.history:
        assert h["kept"] <= 3 and h["candidates_tried"] <= 8 and h["s_steps"] == 1 and h["d_steps"] == 1
    for s in result.scenes:
        assert s.image.shape == (3, SIZE, SIZE) and 0.0 <= float(s.image.min()) and float(s.image.max()) <= 1.0
        n = s.target["boxes"].shape[0]
        assert n >= 1 and s.target["labels"].shape == (n,) and s.confidence.shape == (n,)
        assert set(s.target["labels"].tolist()) <= {1, 2}
        assert s.category_ids == [LABEL_MAP.category_id(v) for v in s.target["labels"].tolist()]
        b = s.target["boxes"]
        assert bool((b[:, 2] - b[:, 0] >= 1).all() and (b[:, 3] - b[:, 1] >= 1).all())
        assert bool((b >= 0).all() and (b <= SIZE).all())
        assert bool((s.confidence < 0.5).any())  # keep="hard": some object below the threshold
        json.dumps(s.params.to_dict())  # JSON-able
        assert s.params.meta["cycle"] in (1, 2) and len(s.params.objects) == 2 and s.params.version == 2
    for name in ("checkpoint.pt", "history.json", "scenes.json", "config.yaml"):
        assert (tmp_path / "run" / name).is_file()
    assert len(json.loads((tmp_path / "run" / "scenes.json").read_text())) == len(result.scenes)


def test_deterministic_given_the_seed():
    a, b = _loop().run(), _loop().run()
    assert _strip(a.history) == _strip(b.history)
    assert len(a.scenes) == len(b.scenes)
    for x, y in zip(a.scenes, b.scenes):
        assert torch.equal(x.image, y.image) and x.params == y.params
    c = _loop(seed=1, cycles=1).run()
    assert c.scenes[0].params != a.scenes[0].params


def test_replay_is_bit_identical():
    loop = _loop(cycles=1)
    scenes = loop.run().scenes
    assert scenes
    for s in scenes:
        params = json.loads(json.dumps(s.params.to_dict()))  # through JSON, as written to disk
        r = replay_scene(params, loop.foregrounds, loop.backgrounds, LABEL_MAP)
        assert torch.equal(r.image, s.image)
        assert torch.equal(r.target["boxes"], s.target["boxes"]) and torch.equal(r.target["labels"], s.target["labels"])
        assert torch.equal(r.confidence, s.confidence)


def test_resume_continues_exactly(tmp_path):
    ref = _loop()
    full = ref.run(tmp_path / "full")
    first = _loop()
    part = first.run(tmp_path / "part", max_cycles=1)
    assert part.completed_cycles == 1
    with pytest.raises(InputError, match="already holds a checkpoint"):
        _loop().run(tmp_path / "part")
    resumed_loop = _loop()
    resumed = resumed_loop.run(tmp_path / "part", resume=True)
    assert resumed.completed_cycles == 2
    assert _strip(resumed.history) == _strip(full.history)
    assert [s.params for s in resumed.scenes] == [s.params for s in full.scenes]
    for x, y in zip(resumed.scenes, full.scenes):
        assert torch.equal(x.image, y.image)
    for m_a, m_b in ((resumed_loop.target.model, ref.target.model), (resumed_loop.synthesizer, ref.synthesizer), (resumed_loop.discriminator, ref.discriminator)):
        assert torch.equal(_weights(m_a), _weights(m_b))
    with pytest.raises(InputError, match="different configuration"):
        _loop(lr_s=5e-2).run(tmp_path / "part", resume=True)


def test_s_step_trains_only_s_and_d_step_only_d():
    loop = _loop()
    t0, s0, d0 = _weights(loop.target.model), _weights(loop.synthesizer), _weights(loop.discriminator)
    out = loop.s_step()
    assert {"loss_s", "loss_t", "loss_adv"} <= out.keys() and out["skipped"] == 0.0
    assert torch.equal(_weights(loop.target.model), t0) and torch.equal(_weights(loop.discriminator), d0)
    assert not torch.equal(_weights(loop.synthesizer), s0)
    # frozen players are restored (trainable again) and never in S's optimiser
    assert all(p.requires_grad for p in loop.target.model.parameters())
    s_params = {id(p) for group in loop.opt_s.param_groups for p in group["params"]}
    assert not s_params & {id(p) for p in loop.target.model.parameters()}
    assert not s_params & {id(p) for p in loop.discriminator.parameters()}
    s1 = _weights(loop.synthesizer)
    loop.d_step()
    assert torch.equal(_weights(loop.synthesizer), s1) and torch.equal(_weights(loop.target.model), t0)
    assert not torch.equal(_weights(loop.discriminator), d0)


def test_targets_loss_reaches_the_synthesizer():
    from synthloop.models.targets import freeze

    loop = _loop(discriminator=False)
    layouts = [loop.sample_layout(torch.Generator().manual_seed(i)) for i in range(2)]
    rgba, canvas = loop._synth_inputs(layouts)
    with freeze(loop.target.model):
        affine, photo = loop._place(layouts, canvas, rgba)
        comp = loop.composite(layouts, affine, photo)
        loss = loop.target.loss(comp.image, loop._targets(comp, layouts))
        loss.backward()
    grads = [p.grad for p in loop.synthesizer.regressor.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in loop.target.model.parameters())


def test_s_loss_is_bounded():
    loop = _loop(discriminator=False, s_loss_bound=0.05)
    out = loop.s_step()
    assert out["loss_t"] > 0.5 and -0.05 - 1e-6 <= out["loss_s"] < 0
    raw = _loop(discriminator=False, s_loss_bound=None).s_step()
    assert raw["loss_s"] == pytest.approx(-raw["loss_t"])


def test_generate_hard_vs_all():
    loop = _loop(max_candidates_per_cycle=12)
    all_kept = loop.generate(5, keep="all", generator=torch.Generator().manual_seed(0))
    stats = dict(loop.last_generation)
    assert len(all_kept) == 5 and stats["kept"] == 5 and stats["tried"] >= 5
    hard = loop.generate(5, keep="hard", generator=torch.Generator().manual_seed(0))
    assert loop.last_generation["tried"] <= 12
    assert all(bool((s.confidence < 0.5).any()) for s in hard)
    # generation stops at the candidate budget
    loop.config.max_candidates_per_cycle = 3
    assert len(loop.generate(5, keep="all", generator=torch.Generator().manual_seed(0))) == 3
    assert loop.last_generation["tried"] == 3


def test_random_synthesizer_places_uniformly_in_the_ranges():
    loop = _loop(synthesizer="random", keep="all", blend_modes=["none", "box", "motion"])
    assert loop.synthesizer is None and loop.discriminator is None
    result = loop.run()
    assert len(result.scenes) == 6 and all(h["s_steps"] == 0 for h in result.history)
    lo, hi = loop.param_ranges.bounds()
    for s in result.scenes:
        for o in s.params.objects:
            assert all(lo[i] - 1e-4 <= v <= hi[i] + 1e-4 for i, v in enumerate(o.affine))
            assert o.affine[5] == pytest.approx(o.affine[4])  # aspect kept
    with pytest.raises(InputError):
        loop.s_step()


@pytest.mark.parametrize(
    "overrides",
    [
        {"num_objects": 1},
        {"cleanup": False},
        {"s_dropout": 0.0},
        {"artefacts": False},
        {"discriminator": False},
        {"real_ratio": "1:3"},
        {"photometric": False},
    ],
)
def test_ablation_knobs(overrides):
    loop = _loop(cycles=1, **overrides)
    result = loop.run()
    assert result.completed_cycles == 1
    scenes = result.scenes
    if overrides.get("num_objects") == 1:
        assert all(len(s.params.objects) == 1 for s in scenes)
    if overrides.get("artefacts") is False:
        assert all(not s.params.artefacts and s.params.artefact_background is None for s in scenes)
    if overrides.get("discriminator") is False:
        assert loop.discriminator is None and "d_loss" not in result.history[0]
    if overrides.get("photometric") is False:
        assert all(o.photometric is None for s in scenes for o in s.params.objects)
    if "cleanup" in overrides:
        assert all(o.cleanup is False for s in scenes for o in s.params.objects)


def test_occluded_objects_are_left_out_of_the_labels():
    loop = _loop(synthesizer="random", artefacts=False)
    layout = loop.sample_layout(torch.Generator().manual_seed(0))
    same = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    for o in layout.objects:
        o.instance, o.category_id = 0, 3  # the same ring twice, in the same place
        o.affine = list(same)
        o.photometric = None
    scene = replay_scene(layout, loop.foregrounds, loop.backgrounds, LABEL_MAP)
    assert scene.target["labels"].tolist() == [1]
    assert scene.target["boxes"].shape == (1, 4)
    layout.objects[1].affine[1] = 200.0  # second object off the canvas: the first is visible again
    scene = replay_scene(layout, loop.foregrounds, loop.backgrounds, LABEL_MAP)
    assert scene.target["labels"].tolist() == [1]
    layout.objects[1].affine[1] = 16.0  # partly overlapping: both visible enough
    assert replay_scene(layout, loop.foregrounds, loop.backgrounds, LABEL_MAP).target["labels"].tolist() == [1, 1]


def test_version_1_scene_params_still_replay():
    """A kept scene written by synthloop before the one scene schema (a TERSE dict of version 1)
    is converted on reading and replays the same pixels."""
    loop = _loop(cycles=1)
    s = loop.run().scenes[0]
    p = s.params
    (art,) = p.artefacts or [None]
    v1 = {
        "version": 1, "cycle": p.meta["cycle"], "canvas": list(p.canvas), "fg_size": p.frame.size, "fg_fill": p.frame.fill,
        "cleanup": p.objects[0].cleanup, "cleanup_sigma": p.frame.cleanup_sigma, "cleanup_mu": p.frame.cleanup_mu,
        "min_visibility": p.min_visibility, "background": p.background,
        "artefact": None if art is None else {"background": p.artefact_background, "shape_index": art.instance, "affine": art.affine},
        "blend": {"mode": p.objects[0].blend.mode},
        "objects": [{"index": o.instance, "category_id": o.category_id, "anchor": o.anchor, "affine": o.affine, "photometric": o.photometric} for o in p.objects],
        "confidence": p.meta["confidence"], "index": p.meta["index"],
    }  # fmt: skip
    r = replay_scene(json.loads(json.dumps(v1)), loop.foregrounds, loop.backgrounds, LABEL_MAP)
    assert torch.equal(r.image, s.image) and torch.equal(r.confidence, s.confidence)
    assert r.params.to_dict() == json.loads(json.dumps(p.to_dict()))
    with pytest.raises(InputError, match="version 3"):
        replay_scene({**p.to_dict(), "version": 3}, loop.foregrounds, loop.backgrounds, LABEL_MAP)


def test_write_synthetic_coco_loads_with_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    from synthloop.data.coco import read_coco

    loop = _loop(cycles=1)
    scenes = loop.run().scenes
    path = write_synthetic_coco(scenes, tmp_path / "syn", LABEL_MAP)
    coco = COCO(str(path))
    assert len(coco.getImgIds()) == len(scenes)
    assert len(coco.getAnnIds()) == sum(s.target["boxes"].shape[0] for s in scenes)
    assert sorted(coco.getCatIds()) == [3, 7]
    ds = read_coco(path)
    first = ds.images[0]
    assert first.attributes["params"]["objects"] == json.loads(json.dumps(scenes[0].params.to_dict()))["objects"]
    assert (tmp_path / "syn" / first.file_name).is_file()
    r = replay_scene(first.attributes["params"], loop.foregrounds, loop.backgrounds, LABEL_MAP)
    assert torch.equal(r.image, scenes[0].image)


def test_bad_input():
    images, targets = _real()
    cfg = SceneTerseConfig(**TINY)
    bank = BackgroundBank(["noise"])
    with pytest.raises(InputError, match="category id 9") as err:
        SceneTerse(cfg, _target(), images, targets, _bank(categories=(3, 9)), bank)
    assert err.value.field == "foregrounds[1].category_id"
    torch.manual_seed(0)
    wrong = SmallDetector(5, SIZE, width=8, fpn_channels=32, head_convs=1)
    with pytest.raises(InputError, match="num_classes"):
        SceneTerse(cfg, wrong, images, targets, _bank(), bank, label_map=LABEL_MAP)
    with pytest.raises(InputError, match="empty"):
        SceneTerse(cfg, _target(), images, targets, TensorInstances([], [], []), bank)
    with pytest.raises(InputError):
        SceneTerse(cfg, _target(), images, targets[:2], _bank(), bank)
    with pytest.raises(ValueError):
        SceneTerseConfig(**{**TINY, "blend_modes": ["poisson"]})
    with pytest.raises(ValueError):
        SceneTerseConfig(**{**TINY, "t_batch_size": 6, "real_ratio": "1:3"})
    with pytest.raises(ValueError):
        SceneTerseConfig(**{**TINY, "ranges": {"sx": [1.0, 0.5]}})


class _SmallBackgrounds:
    """A background source that renders at a fixed 40x40, whatever size is asked for."""

    def sample_one(self, size, generator):
        return {"value": float(torch.rand((), generator=generator))}

    def render_one(self, params, size):
        return np.full((40, 40, 3), params["value"], np.float32)


def test_background_of_another_size_is_rendered_at_the_targets_size():
    images, targets = _real()
    loop = SceneTerse(SceneTerseConfig(**{**TINY, "cycles": 1, "discriminator": False}), _target(), images, targets, _bank(), _SmallBackgrounds())
    scenes = loop.generate(2, keep="all", generator=torch.Generator().manual_seed(0))
    assert scenes and all(s.image.shape == (3, SIZE, SIZE) for s in scenes)
    copy.deepcopy(scenes[0].params)


def test_hard_filter_keeps_only_composites_with_a_hard_object(monkeypatch):
    loop = _loop(synthesizer="random", num_objects=1, max_candidates_per_cycle=16)

    def confidence(images, targets):  # a target that finds "bar" (label 2) hard and "ring" easy
        return [torch.where(t["labels"] == 2, 0.1, 0.9) for t in targets]

    monkeypatch.setattr(loop.target, "confidence", confidence)
    kept = loop.generate(16, keep="hard", generator=torch.Generator().manual_seed(0))
    stats = loop.last_generation
    assert stats["tried"] == 16 and 0 < stats["hard"] < stats["scored"]
    assert len(kept) == stats["hard"] and all(s.target["labels"].tolist() == [2] for s in kept)
    assert all(s.params.meta["confidence"] == [pytest.approx(0.1)] for s in kept)
    everything = loop.generate(16, keep="all", generator=torch.Generator().manual_seed(0))
    assert len(everything) == stats["scored"] > len(kept)


def test_s_step_with_composites_without_labelled_objects():
    loop = _loop(min_visibility=1.0, ranges={"sx": [3.0, 3.0], "sy": [3.0, 3.0]})  # objects too big to fit: none labelled
    out = loop.s_step()
    assert out["objects"] == 0.0 and out["skipped"] == 0.0 and math.isfinite(out["loss_s"])
    assert loop.generate(2, keep="all", generator=torch.Generator().manual_seed(0)) == []
    assert loop.last_generation["scored"] == 0 and loop.last_generation["tried"] == 8
