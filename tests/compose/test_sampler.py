"""Scene samplers: placement limits, blend option draws."""

import pytest
import torch
from compose_helpers import square_instances

from synthloop.compose import BlendSpec, SceneConfig, SolidBackgrounds, TensorInstances, apply_scene, sample_scene
from synthloop.compose.config import BlendConfig
from synthloop.compose.sampler import box_iou, choice, sample_blend, uniform
from synthloop.errors import InputError
from synthloop.functional import BLEND_MODES


def test_limits_on_overlap_and_truncation_hold():
    inst, bg = square_instances(6), SolidBackgrounds()
    cfg = SceneConfig(canvas=(120, 160), objects=(4, 6))
    cfg.placement.max_iou = 0.1
    cfg.placement.max_truncation = 0.0
    cfg.placement.rotation = (0.0, 0.0)
    cfg.artefacts.enabled = False
    for seed in range(10):
        p = sample_scene(cfg, inst, bg, torch.Generator().manual_seed(seed))
        r = apply_scene(p, inst, bg)
        boxes = [o.box for o in r.objects if o.visible_area == o.full_area]
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                assert box_iou(boxes[i], boxes[j]) <= 0.1 + 1e-6
        for o in r.objects:
            assert o.truncation <= 0.02  # bilinear edge pixels may fall just outside


def test_empty_bank_is_an_error():
    with pytest.raises(InputError, match="empty"):
        sample_scene(SceneConfig(), TensorInstances([], [], []), SolidBackgrounds(), torch.Generator())


def _sample_blend_before_the_registry(cfg: BlendConfig, g: torch.Generator, mode: str | None = None) -> BlendSpec:
    """The sampler as written per mode before the blend registry (the draws must not change)."""
    mode = mode or choice(g, cfg.modes)
    if mode == "gaussian":
        return BlendSpec(mode, {"sigma": round(uniform(g, *cfg.gaussian_sigma), 4)})
    if mode == "box":
        return BlendSpec(mode, {"kernel_size": int(choice(g, cfg.box_kernel))})
    if mode == "motion":
        return BlendSpec(mode, {"kernel_size": int(choice(g, cfg.motion_kernel)), "angle": round(uniform(g, 0.0, 180.0), 3)})
    if mode == "pyramid":
        return BlendSpec(mode, {"levels": int(choice(g, cfg.pyramid_levels))})
    return BlendSpec(mode, {})


@pytest.mark.parametrize("mode", [None, *BLEND_MODES])
def test_sample_blend_draws_what_it_always_drew(mode):
    cfg = BlendConfig(modes=list(BLEND_MODES), gaussian_sigma=(0.3, 2.5), box_kernel=[3, 5, 7], motion_kernel=[5, 9], pyramid_levels=[2, 3, 4])
    g, ref = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for _ in range(50):
        assert sample_blend(cfg, g, mode) == _sample_blend_before_the_registry(cfg, ref, mode)
    assert torch.equal(g.get_state(), ref.get_state())
