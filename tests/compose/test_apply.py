"""The deterministic compositor: replay, occlusion/truncation bookkeeping, artefacts."""

import json

import numpy as np
import pytest
import torch
from compose_helpers import square_instances

from synthloop.compose import BlendSpec, ObjectParams, SceneConfig, SceneParams, SolidBackgrounds, apply_scene, sample_scene
from synthloop.compose.apply import alpha_support, window_of
from synthloop.functional.numpy_ops import affine_matrices, warp_window


def test_sample_is_deterministic_and_replays_bit_identically():
    inst, bg = square_instances(), SolidBackgrounds((0.2, 0.3, 0.4))
    cfg = SceneConfig(canvas=(96, 128), objects=(2, 4), distractors=(1, 2))
    cfg.blend.modes = ["none", "gaussian", "box", "motion", "pyramid", "alpha"]
    for seed in range(5):
        p1 = sample_scene(cfg, inst, bg, torch.Generator().manual_seed(seed))
        p2 = sample_scene(cfg, inst, bg, torch.Generator().manual_seed(seed))
        assert p1.to_dict() == p2.to_dict()
        r1 = apply_scene(p1, inst, bg)
        replay = SceneParams.from_dict(json.loads(json.dumps(p1.to_dict())))
        r2 = apply_scene(replay, inst, bg)
        assert np.array_equal(r1.image, r2.image)
        assert all(np.array_equal(a.mask, b.mask) for a, b in zip(r1.objects, r2.objects))
    p3 = sample_scene(cfg, inst, bg, torch.Generator().manual_seed(99))
    assert p3.to_dict() != p1.to_dict()


def _obj(inst, affine, mode="none"):
    return ObjectParams(instance=inst, category_id=1, affine=affine, photometric=[1, 1, 1, 0], blend=BlendSpec(mode))


def test_occlusion_and_truncation_bookkeeping():
    # two 20x30 opaque rectangles (instance alpha is 30x20 inside a 40x30 cut-out)
    inst, bg = square_instances(), SolidBackgrounds()
    H, W = 100, 100
    bottom = _obj(0, [0, 0, 0, 0, 1, 1])  # centred: mask box x 45..65? (cut-out 30 wide -> mask 20 wide)
    top = _obj(1, [0, 10, 0, 0, 1, 1])  # shifted right by 10 px: covers half of the bottom one
    edge = _obj(2, [0, -50, 0, 0, 1, 1])  # centre on the left edge: half outside the canvas
    r = apply_scene(SceneParams(canvas=(H, W), background={"kind": "solid", "color": [0, 0, 0]}, objects=[bottom, top, edge]), inst, bg)
    b, t, e = r.objects
    assert b.full_area == 600 and t.full_area == 600
    assert b.visible_area == 300 and b.occlusion == pytest.approx(0.5)
    assert t.visible_area == 600 and t.visibility == 1.0
    assert e.truncation == pytest.approx(0.5) and e.in_canvas_area == 300
    assert b.box == (40.0, 35.0, 50.0, 65.0)  # the visible left half only
    assert [o.instance for o in r.labelled(min_visibility=0.6)] == [1]
    # pixels: the top object's colours are on the canvas where it is
    rgb, _ = inst.arrays(1)
    # the top cut-out (30 wide, 40 tall) is centred at (60, 50): canvas (row 40, col 60) = cut-out (10, 15)
    assert np.allclose(r.image[40, 60], rgb[10, 15], atol=1e-5)


def test_artefacts_change_background_only_in_pasted_regions():
    inst, bg = square_instances(), SolidBackgrounds((0.0, 0.0, 0.0))
    cfg = SceneConfig(canvas=(64, 64), objects=(1, 1))
    cfg.artefacts.count = (2, 2)
    cfg.blend.modes = ["none"]
    p = sample_scene(cfg, inst, bg, torch.Generator().manual_seed(3))
    assert len(p.artefacts) == 2 and p.artefact_background is not None
    # artefacts come from another background: make it white to see them
    p.artefact_background = {"kind": "solid", "color": [1.0, 1.0, 1.0]}
    p.objects = []
    r = apply_scene(p, inst, bg)
    changed = (r.image > 0.5).all(-1)
    assert 0 < changed.mean() < 0.9


def test_the_alpha_support_window_holds_every_nonzero_warped_pixel():
    alpha = np.zeros((28, 28), np.float32)
    alpha[6:20, 9:17] = np.random.default_rng(0).random((14, 8), dtype=np.float32) + 0.01
    box = alpha_support(alpha)
    assert box == (8, 5, 18, 21)
    for angle in (0.0, 17.0, 45.0, 133.0):
        A = affine_matrices(np.array([[angle, 3.3, -2.1, 0.1, 4.7, 3.9]]), np.array([[28, 28]]), (200, 220))[0]
        full = warp_window(alpha, A, window_of(A, (28, 28), 1))[..., 0]
        x0, y0, x1, y1 = small = window_of(A, (28, 28), 1, box)
        fx0, fy0, *_ = window_of(A, (28, 28), 1)
        inner = full[y0 - fy0 : y1 - fy0, x0 - fx0 : x1 - fx0]
        assert (full > 0).sum() == (inner > 0).sum() > 0  # nothing non-zero outside the small window
        assert (small[2] - small[0]) * (small[3] - small[1]) < full.size


def test_visible_masks_are_windows_of_the_canvas_mask():
    inst, bg = square_instances(), SolidBackgrounds((0.2, 0.3, 0.4))
    cfg = SceneConfig(canvas=(96, 128), objects=(3, 5))
    for seed in range(4):
        r = apply_scene(sample_scene(cfg, inst, bg, torch.Generator().manual_seed(seed)), inst, bg)
        for o in r.objects:
            full = o.mask
            assert full.shape == (96, 128) and full.flags.f_contiguous
            assert full.sum() == o.visible_area == o.window_mask.sum()
            if o.visible_area:
                rows, cols = np.flatnonzero(full.any(1)), np.flatnonzero(full.any(0))
                assert o.box == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        # visible masks never overlap
        assert (np.sum([o.mask for o in r.objects], 0) <= 1).all()


def test_cached_rgba_is_read_only_and_the_render_repeats():
    inst, bg = square_instances(), SolidBackgrounds((0.2, 0.3, 0.4))
    p = sample_scene(SceneConfig(canvas=(64, 64), objects=(2, 3)), inst, bg, torch.Generator().manual_seed(1))
    a = apply_scene(p, inst, bg).image
    from synthloop.compose.apply import rgba_of

    cached = rgba_of(inst, p.objects[0].instance)
    assert cached is rgba_of(inst, p.objects[0].instance) and not cached.flags.writeable
    assert np.array_equal(apply_scene(p, inst, bg).image, a)
