"""The sampler's fast paths give the same bits as the straightforward code they replaced (issue 14):
one batched draw per scene step instead of scalar draws, one placement's matrix in Python floats
instead of the batched NumPy function, OpenCV bounding boxes instead of NumPy scans. The job-level
pin is tests/jobs/test_paste_pinned.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthloop.compose.apply import alpha_support
from synthloop.compose.sampler import mask_box, placed_box, uniforms
from synthloop.functional.numpy_ops import affine_matrices


def test_one_batched_draw_equals_scalar_draws_and_leaves_the_same_state():
    for seed in range(400):
        n = 1 + seed % 9
        a, b = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        for _ in range(seed % 3):  # earlier integer draws, as in a scene
            assert int(torch.randint(0, 7, (), generator=a)) == int(torch.randint(0, 7, (), generator=b))
        scalar = [float(torch.rand((), generator=a, dtype=torch.float64)) for _ in range(n)]
        assert uniforms(b, n) == scalar
        assert int(torch.randint(0, 1_000_003, (), generator=a)) == int(torch.randint(0, 1_000_003, (), generator=b))
        assert float(torch.rand((), generator=a, dtype=torch.float64)) == float(torch.rand((), generator=b, dtype=torch.float64))


def _placed_box_reference(affine, geom, canvas):
    """placed_box as written before issue 14 (through the batched NumPy matrix function)."""
    h, w, (x0, y0, x1, y1) = geom
    A = affine_matrices(np.asarray([affine], dtype=np.float64), np.asarray([(h, w)]), canvas)[0]
    pts = np.array([[x0, y0, 1.0], [x1, y0, 1.0], [x1, y1, 1.0], [x0, y1, 1.0]]) @ A.T
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


def test_placed_box_is_bit_identical_to_the_batched_matrix_path():
    rng = np.random.default_rng(0)
    for i in range(1500):
        h, w = (int(v) for v in rng.integers(1, 400, 2))
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        geom = (h, w, (x0, y0, int(rng.integers(x0 + 1, w + 1)), int(rng.integers(y0 + 1, h + 1))))
        canvas = (int(rng.integers(8, 1200)), int(rng.integers(8, 1200)))
        angle = float(rng.choice([0.0, 90.0, -45.0, 180.0])) if i % 7 == 0 else float(rng.uniform(-180, 180))
        t = rng.uniform(-900, 900, 2) if i % 2 else (0.0, 0.0)
        affine = [angle, float(t[0]), float(t[1]), float(rng.uniform(-40, 40)) if i % 3 else 0.0, float(rng.uniform(0.01, 20)), float(rng.uniform(0.01, 20))]
        if i % 4 == 1:  # the centred box of the same rotation first, as sample_affine does (a memo keeps its 2x2 part)
            centred = [affine[0], 0.0, 0.0, *affine[3:]]
            assert placed_box(centred, geom, canvas) == _placed_box_reference(centred, geom, canvas)
        if i % 50 == 3:  # -0.0 after 0.0: a different key
            affine[0] = 0.0
            placed_box(affine, geom, canvas)
            affine[0] = -0.0
        got, want = placed_box(affine, geom, canvas), _placed_box_reference(affine, geom, canvas)
        assert got == want and all(math.copysign(1, a) == math.copysign(1, b) for a, b in zip(got, want)), (affine, geom, canvas)


def _mask_box_reference(alpha):
    on = alpha > 0.5
    rows = np.flatnonzero(on.any(1))
    if rows.size == 0:
        return 0, 0, alpha.shape[1], alpha.shape[0]
    cols = np.flatnonzero(on.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _alpha_support_reference(alpha):
    rows = np.flatnonzero((alpha > 0).any(1))
    if rows.size == 0:
        return 0, 0, 1, 1
    cols = np.flatnonzero((alpha > 0).any(0))
    h, w = alpha.shape[:2]
    return max(int(cols[0]) - 1, 0), max(int(rows[0]) - 1, 0), min(int(cols[-1]) + 2, w), min(int(rows[-1]) + 2, h)


@pytest.mark.parametrize("strided", [False, True])
def test_bounding_boxes_match_the_numpy_scans(strided):
    rng = np.random.default_rng(1)
    for i in range(1000):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        a = np.zeros((h, w), np.float32)
        kind = i % 5
        if kind == 1:
            a[:] = 1.0
        elif kind == 2:  # one pixel around the 0.5 threshold
            a[rng.integers(h), rng.integers(w)] = rng.choice([0.3, 0.5, 0.500001, 1.0])
        elif kind >= 3:
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            a[y0 : y0 + rng.integers(1, h + 1), x0 : x0 + rng.integers(1, w + 1)] = rng.random()
            a *= rng.random((h, w)) > 0.3
        if strided:  # the alpha channel of an RGBA cut-out, as the sources hand it out
            rgba = np.zeros((h, w, 4), np.float32)
            rgba[..., 3] = a
            a = rgba[..., 3]
        assert mask_box(a) == _mask_box_reference(a)
        assert alpha_support(a) == _alpha_support_reference(a)
