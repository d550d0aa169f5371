"""The policy's parameter space (synthloop.loops.policy_space): a sampled setting is a valid loop
config whose scenes respect it and replay exactly; blend and background probabilities reach the sampler."""

from __future__ import annotations

import pytest
import torch
from test_terse_detection import LABEL_MAP, SIZE, TINY, _bank, _real, _target

from synthloop.data.backgrounds import BackgroundBank
from synthloop.errors import InputError
from synthloop.loops.policy import CEMConfig, CEMPolicy
from synthloop.loops.policy_space import BLEND_SLOTS, Dim, PolicySpace, apply_setting, default_space, quantise_modes
from synthloop.loops.terse_detection import SceneTerse, replay_scene
from synthloop.loops.terse_detection_config import SceneTerseConfig

BLENDS = ["none", "alpha", "gaussian"]
SOURCES = ["noise", "checkers"]
BASE = SceneTerseConfig(**{**TINY, "synthesizer": "random", "keep": "all", "blend_modes": BLENDS, "artefacts": False})


def _scenes(space, setting, n=8, seed=0):
    cfg = apply_setting(BASE, space, setting)
    bank = BackgroundBank(SOURCES)
    images, targets = _real()
    loop = SceneTerse(cfg, _target(), images, targets, _bank(), space.backgrounds(setting, bank))
    return cfg, bank, loop.generate(n, keep="all", generator=torch.Generator().manual_seed(seed))


def test_a_sampled_setting_is_a_valid_config_and_its_scenes_respect_it():
    space = default_space(BLENDS, SOURCES, max_objects=4)
    assert {"background:noise", "background:checkers", "blend:none"} <= set(space.names)
    policy = CEMPolicy(space, CEMConfig(population=4, init_std=0.3, seed=2))
    for u in policy.ask(0):
        setting = space.decode(u)
        cfg, bank, scenes = _scenes(space, setting)
        assert cfg.num_objects == setting["objects"] and cfg.ranges.shear == BASE.ranges.shear  # untouched fields keep the base's values
        lo_s, hi_s = cfg.ranges.sx
        assert lo_s == pytest.approx(max(setting["scale_centre"] - setting["scale_width"], 0.05))
        assert cfg.ranges.angle == pytest.approx((-setting["rotation"], setting["rotation"]))
        assert cfg.photometric_ranges.brightness == pytest.approx((1 - setting["brightness_width"], 1 + setting["brightness_width"]))
        assert len(cfg.blend_modes) == BLEND_SLOTS and set(cfg.blend_modes) <= set(BLENDS)
        assert scenes
        for s in scenes:
            p = s.params
            assert len(p.objects) == setting["objects"]
            assert p.background["kind"] in SOURCES
            for o in p.objects:
                angle, tx, ty, _, sx, sy = o.affine
                assert abs(angle) <= setting["rotation"] + 1e-6
                assert abs(tx) <= setting["position_spread"] * SIZE + 1e-4 and abs(ty) <= setting["position_spread"] * SIZE + 1e-4
                assert lo_s - 1e-6 <= sx <= hi_s + 1e-6 and lo_s - 1e-6 <= sy <= hi_s + 1e-6
                assert o.blend.mode in cfg.blend_modes
            again = replay_scene(p.to_dict(), _bank(), bank, LABEL_MAP)  # the full bank replays a weighted bank's scenes
            assert torch.equal(again.image, s.image)


def test_blend_and_background_probabilities_reach_the_sampler():
    space = default_space(BLENDS, SOURCES)
    x = torch.tensor([d.default for d in space.dims], dtype=torch.float64)
    x[space.names.index("blend:gaussian")] = 3.0
    x[space.names.index("blend:none")] = -3.0
    x[space.names.index("blend:alpha")] = -3.0
    x[space.names.index("background:checkers")] = 3.0
    x[space.names.index("background:noise")] = -3.0
    setting = space.decode(space.normalise(x))
    assert setting["blend_probabilities"]["gaussian"] > 0.99 and setting["background_probabilities"]["checkers"] > 0.99
    _, _, scenes = _scenes(space, setting, n=10)
    assert all(o.blend.mode == "gaussian" for s in scenes for o in s.params.objects)
    assert all(s.params.background["kind"] == "checkers" for s in scenes)


def test_one_background_source_means_no_background_choice():
    space = default_space(BLENDS, ["photos"])
    assert not any(n.startswith("background:") for n in space.names)
    bank = object()
    assert space.backgrounds(space.decode(space.default_vector()), bank) is bank


def test_quantise_modes_follows_the_probabilities():
    modes = quantise_modes({"a": 0.5, "b": 0.3, "c": 0.2}, 10)
    assert [modes.count(m) for m in "abc"] == [5, 3, 2]
    modes = quantise_modes({"a": 0.34, "b": 0.33, "c": 0.33}, 20)
    assert len(modes) == 20 and [modes.count(m) for m in "abc"] == [7, 7, 6]
    assert quantise_modes({"a": 0.999, "b": 0.001}, 20) == ["a"] * 20  # a mode rounded to 0 entries is left out


def test_bad_dimensions_are_refused():
    with pytest.raises(InputError):
        Dim("x", 1.0, 0.0, 0.5)
    with pytest.raises(InputError):
        PolicySpace([Dim("x", 0.0, 1.0, 0.5), Dim("x", 0.0, 1.0, 0.5)], ["alpha"])
    with pytest.raises(InputError):
        default_space([])
    with pytest.raises(InputError):
        default_space(BLENDS).decode(torch.zeros(3))
