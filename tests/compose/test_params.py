"""Scene params."""

import torch
from compose_helpers import square_instances

from synthloop.compose import BlendSpec, SceneConfig, SolidBackgrounds, sample_scene


def test_same_layout_once_per_blend_mode():
    inst, bg = square_instances(), SolidBackgrounds()
    p = sample_scene(SceneConfig(canvas=(64, 64)), inst, bg, torch.Generator().manual_seed(0))
    q = p.with_blend(BlendSpec("gaussian", {"sigma": 1.0}))
    assert [o.affine for o in q.objects] == [o.affine for o in p.objects]
    assert all(o.blend.mode == "gaussian" for o in q.objects)
