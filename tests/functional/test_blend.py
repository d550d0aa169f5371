import cv2
import numpy as np
import pytest
import torch
from functional_helpers import gradcheck, rand, tol

from synthloop.functional import BLEND_MODES, DIFFERENTIABLE_BLEND_MODES, blend
from synthloop.functional.blend import BlendMode, blend_into, blend_mode, blend_np, blend_options, register_blend, window_margin

# The central list: every parametrised test below runs over all registered modes.
ALL_MODES = BLEND_MODES
NOT_DIFFERENTIABLE = tuple(m for m in ALL_MODES if m not in DIFFERENTIABLE_BLEND_MODES)

S, LO, HI = 128, 32, 96  # canvas size and the object's square [LO, HI) on it
FAR = 26  # every mode's influence (pyramid's, the widest, reaches 23 px) stays closer than this


def test_mode_lists():
    assert set(ALL_MODES) == {"none", "alpha", "gaussian", "box", "motion", "pyramid", "poisson"}
    assert set(DIFFERENTIABLE_BLEND_MODES) <= set(ALL_MODES)
    assert NOT_DIFFERENTIABLE == ("none", "poisson")


def scene(gen, dtype, device, batch=1):
    fg = rand(batch, 3, S, S, gen=gen, dtype=dtype, device=device)
    bg = rand(batch, 3, S, S, gen=gen, dtype=dtype, device=device)
    alpha = torch.zeros(batch, 1, S, S, dtype=dtype, device=device)
    alpha[..., LO:HI, LO:HI] = 1.0
    return fg, alpha, bg


def chebyshev_outside(device) -> torch.Tensor:
    """``(S, S)`` distance in pixels outside the object (> 0) or depth inside it (<= 0)."""
    r = torch.arange(S, device=device)
    d = torch.maximum(LO - r, r - (HI - 1))
    return torch.maximum(d.view(-1, 1), d.view(1, -1))


@pytest.mark.parametrize("mode", ALL_MODES)
def test_keeps_background_far_from_object(mode, device, dtype, gen):
    fg, alpha, bg = scene(gen, dtype, device)
    out = blend(fg, alpha, bg, mode)
    assert out.shape == bg.shape and out.dtype == dtype and out.device.type == device.type
    far = chebyshev_outside(device) >= FAR
    torch.testing.assert_close(out[..., far], bg[..., far], **tol(dtype))


@pytest.mark.parametrize("mode", [m for m in ALL_MODES if m != "poisson"])
def test_keeps_foreground_deep_inside(mode, device, dtype, gen):
    # poisson re-solves the interior from the background's boundary values; it is tested below
    fg, alpha, bg = scene(gen, dtype, device)
    out = blend(fg, alpha, bg, mode)
    deep = chebyshev_outside(device) <= -FAR
    torch.testing.assert_close(out[..., deep], fg[..., deep], **tol(dtype))


@pytest.mark.parametrize("mode", ALL_MODES)
def test_output_in_unit_range(mode, gen):
    fg, _, bg = scene(gen, torch.float32, "cpu")
    alpha = rand(1, 1, S, S, gen=gen)
    out = blend(fg, alpha, bg, mode)
    assert out.min() >= 0 and out.max() <= 1 and torch.isfinite(out).all()


def test_alpha_mode_is_the_formula(device, dtype, gen):
    fg, bg = rand(2, 3, 9, 11, gen=gen, dtype=dtype, device=device), rand(2, 3, 9, 11, gen=gen, dtype=dtype, device=device)
    alpha = rand(2, 1, 9, 11, gen=gen, dtype=dtype, device=device)
    torch.testing.assert_close(blend(fg, alpha, bg, "alpha"), alpha * fg + (1 - alpha) * bg, **tol(dtype))
    torch.testing.assert_close(blend(fg, alpha, bg), alpha * fg + (1 - alpha) * bg, **tol(dtype))  # the default


def test_none_mode_is_a_hard_paste(device, dtype, gen):
    fg, bg = rand(2, 3, 9, 11, gen=gen, dtype=dtype, device=device), rand(2, 3, 9, 11, gen=gen, dtype=dtype, device=device)
    alpha = rand(2, 1, 9, 11, gen=gen, dtype=dtype, device=device)
    torch.testing.assert_close(blend(fg, alpha, bg, "none"), torch.where(alpha > 0.5, fg, bg), **tol(dtype))


@pytest.mark.parametrize(("mode", "option"), [("gaussian", {"sigma": 0.0}), ("box", {"kernel_size": 1}), ("motion", {"kernel_size": 1})])
def test_zero_strength_feathering_is_alpha_blend(mode, option, gen):
    fg, bg = rand(1, 3, 12, 12, gen=gen), rand(1, 3, 12, 12, gen=gen)
    alpha = (rand(1, 1, 12, 12, gen=gen) > 0.5).float()
    torch.testing.assert_close(blend(fg, alpha, bg, mode, **option), blend(fg, alpha, bg, "alpha"))


@pytest.mark.parametrize("mode", ["gaussian", "box", "motion"])
def test_feathering_softens_a_hard_edge(mode, gen):
    fg, bg = torch.ones(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    alpha = torch.zeros(1, 1, 16, 16)
    alpha[..., :, :8] = 1.0  # vertical edge: horizontal motion blur smears across it
    out = blend(fg, alpha, bg, mode)
    row = out[0, 0, 8]
    assert 0 < row[7] < 1 and 0 < row[8] < 1 and row[7] > row[8]
    assert row[0].item() == pytest.approx(1.0, abs=1e-6) and row[-1].item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("mode", DIFFERENTIABLE_BLEND_MODES)
def test_gradcheck(mode, device):
    gen = torch.Generator().manual_seed(3)
    # 8x8 gives the pyramid three levels; values stay away from the output clamp at 0 and 1.
    # Two channels check that alpha's gradient sums over them (one for the pyramid, to stay fast).
    c = 1 if mode == "pyramid" else 2
    fg = rand(1, c, 8, 8, gen=gen, dtype=torch.float64, device=device, low=0.2, high=0.8).requires_grad_()
    bg = rand(1, c, 8, 8, gen=gen, dtype=torch.float64, device=device, low=0.2, high=0.8).requires_grad_()
    alpha = rand(1, 1, 8, 8, gen=gen, dtype=torch.float64, device=device, low=0.1, high=0.9).requires_grad_()
    assert gradcheck(lambda f, a, b: blend(f, a, b, mode), (fg, alpha, bg))


def test_none_mode_gradients_flow_to_fg_and_bg_only(gen):
    fg = rand(1, 2, 6, 6, gen=gen, dtype=torch.float64).requires_grad_()
    bg = rand(1, 2, 6, 6, gen=gen, dtype=torch.float64).requires_grad_()
    alpha = rand(1, 1, 6, 6, gen=gen, dtype=torch.float64).requires_grad_()
    assert gradcheck(lambda f, b: blend(f, alpha, b, "none"), (fg, bg))
    (g,) = torch.autograd.grad(blend(fg, alpha, bg, "none").sum(), alpha, allow_unused=True)
    assert g is None or g.abs().max() == 0


@pytest.mark.parametrize("mode", ALL_MODES)
def test_batched_equals_unbatched(mode, device, dtype, gen):
    fg, bg = rand(3, 3, 20, 24, gen=gen, dtype=dtype, device=device), rand(3, 3, 20, 24, gen=gen, dtype=dtype, device=device)
    alpha = torch.zeros(3, 1, 20, 24, dtype=dtype, device=device)
    alpha[0, :, 4:12, 5:15] = 1
    alpha[1, :, 0:9, 10:24] = 0.8  # touches the border
    alpha[2, :, 6:18, 2:20] = rand(1, 12, 18, gen=gen, dtype=dtype, device=device)
    out = blend(fg, alpha, bg, mode)
    for i in range(3):
        single = blend(fg[i : i + 1], alpha[i : i + 1], bg[i : i + 1], mode)
        torch.testing.assert_close(out[i : i + 1], single, **tol(dtype))


@pytest.mark.parametrize("levels", [1, 2, 4, 6])
def test_pyramid_reproduces_inputs_at_constant_alpha_odd_size(levels, device, dtype, gen):
    fg, bg = rand(2, 3, 37, 53, gen=gen, dtype=dtype, device=device), rand(2, 3, 37, 53, gen=gen, dtype=dtype, device=device)
    ones = torch.ones(2, 1, 37, 53, dtype=dtype, device=device)
    torch.testing.assert_close(blend(fg, ones, bg, "pyramid", levels=levels), fg, **tol(dtype))
    torch.testing.assert_close(blend(fg, ones * 0, bg, "pyramid", levels=levels), bg, **tol(dtype))


def opencv_pyramid_blend(fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray, levels: int) -> np.ndarray:
    """Independent Burt-Adelson reference on ``(H, W)`` float64 arrays with cv2.pyrDown/pyrUp."""
    gf, gb, ga = [fg], [bg], [alpha]
    for _ in range(levels - 1):
        gf, gb, ga = gf + [cv2.pyrDown(gf[-1])], gb + [cv2.pyrDown(gb[-1])], ga + [cv2.pyrDown(ga[-1])]
    out = ga[-1] * gf[-1] + (1 - ga[-1]) * gb[-1]
    for lvl in range(levels - 2, -1, -1):
        size = (gf[lvl].shape[1], gf[lvl].shape[0])
        lap_f = gf[lvl] - cv2.pyrUp(gf[lvl + 1], dstsize=size)
        lap_b = gb[lvl] - cv2.pyrUp(gb[lvl + 1], dstsize=size)
        out = cv2.pyrUp(out, dstsize=size) + ga[lvl] * lap_f + (1 - ga[lvl]) * lap_b
    return np.clip(out, 0, 1)


@pytest.mark.parametrize("levels", [2, 3])
@pytest.mark.parametrize("size", [(64, 64), (37, 53)])
def test_pyramid_matches_opencv_reference(levels, size, gen):
    # OpenCV reflects at the border where we replicate; with the object's influence kept off the
    # border (few levels) the two must agree everywhere.
    H, W = size
    fg, bg = rand(1, 1, H, W, gen=gen, dtype=torch.float64), rand(1, 1, H, W, gen=gen, dtype=torch.float64)
    alpha = torch.zeros(1, 1, H, W, dtype=torch.float64)
    alpha[..., H // 2 - 6 : H // 2 + 5, W // 2 - 8 : W // 2 + 7] = 1
    alpha[..., H // 2 - 2 : H // 2 + 1, W // 2 - 3 : W // 2 + 2] = 0.3
    ref = opencv_pyramid_blend(fg[0, 0].numpy(), alpha[0, 0].numpy(), bg[0, 0].numpy(), levels)
    out = blend(fg, alpha, bg, "pyramid", levels=levels)
    torch.testing.assert_close(out[0, 0], torch.from_numpy(ref), atol=1e-12, rtol=0)


def test_pyramid_differs_from_alpha_blend_near_the_seam(gen):
    fg, alpha, bg = scene(gen, torch.float64, "cpu")
    diff = (blend(fg, alpha, bg, "pyramid") - blend(fg, alpha, bg, "alpha")).abs()
    assert diff[..., LO - 2 : LO + 2, LO:HI].mean() > 1e-2  # multi-band: the seam is blended, not cut


def test_poisson_is_detached_and_not_differentiable(gen):
    fg, alpha, bg = scene(gen, torch.float32, "cpu")
    fg.requires_grad_()
    bg.requires_grad_()
    out = blend(fg, alpha, bg, "poisson")
    assert not out.requires_grad and out.grad_fn is None


def test_poisson_reproduces_background_when_fg_equals_bg(dtype):
    # checks that OpenCV places the clone exactly over the mask (no off-by-one shift): a textured
    # foreground identical to the background must come back unchanged up to 8-bit rounding.
    ys, xs = torch.meshgrid(torch.arange(37, dtype=dtype), torch.arange(53, dtype=dtype), indexing="ij")
    img = torch.stack([0.5 + 0.3 * torch.sin(xs / 2.0) * torch.cos(ys / 3.0), 0.5 + 0.3 * torch.cos(xs / 1.5 + ys / 2.5), 0.5 + 0.2 * torch.sin(ys)])[None]
    alpha = torch.zeros(1, 1, 37, 53, dtype=dtype)
    alpha[..., 10:25, 12:40] = 1
    out = blend(img, alpha, img, "poisson")
    torch.testing.assert_close(out, img, atol=3 / 255, rtol=0)
    shifted = torch.roll(img, 1, dims=-1)
    assert (blend(shifted, alpha, img, "poisson") - img).abs().max() > 10 / 255  # the check above has teeth


def test_poisson_object_touching_the_border(dtype, gen):
    fg, bg = rand(1, 3, 24, 30, gen=gen, dtype=dtype), rand(1, 3, 24, 30, gen=gen, dtype=dtype)
    alpha = torch.zeros(1, 1, 24, 30, dtype=dtype)
    alpha[..., 0:10, 18:30] = 1  # top-right corner, touching two borders
    out = blend(fg, alpha, bg, "poisson")
    assert out.shape == bg.shape and out.dtype == dtype and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    outside = torch.ones(24, 30, dtype=torch.bool)
    outside[0:10, 18:30] = False
    assert torch.equal(out[..., outside], bg[..., outside])  # exact outside the mask's box
    assert (out[..., 0:10, 18:30] - bg[..., 0:10, 18:30]).abs().max() > 0.05  # and something was cloned


def test_poisson_full_canvas_mask_and_grey_images(gen):
    fg, bg = rand(1, 1, 20, 20, gen=gen), rand(1, 1, 20, 20, gen=gen)
    out = blend(fg, torch.ones(1, 1, 20, 20), bg, "poisson")
    assert out.shape == (1, 1, 20, 20) and torch.isfinite(out).all()


def test_poisson_empty_mask_returns_background(dtype, gen):
    fg, bg = rand(2, 3, 16, 16, gen=gen, dtype=dtype), rand(2, 3, 16, 16, gen=gen, dtype=dtype)
    alpha = torch.zeros(2, 1, 16, 16, dtype=dtype)
    alpha[..., 5:9, 5:9] = 0.4  # below the 0.5 threshold: empty
    assert torch.equal(blend(fg, alpha, bg, "poisson"), bg)


def test_poisson_mixed_clone_and_bad_clone(gen):
    fg, alpha, bg = scene(gen, torch.float32, "cpu")
    mixed = blend(fg, alpha, bg, "poisson", clone="mixed")
    assert not torch.equal(mixed, blend(fg, alpha, bg, "poisson"))
    with pytest.raises(ValueError, match="unknown poisson clone 'blurry'; valid: normal, mixed"):
        blend(fg, alpha, bg, "poisson", clone="blurry")


def test_unknown_mode_lists_valid_modes():
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="unknown blend mode 'screen'") as info:
        blend(x, x[:, :1], x, "screen")
    for mode in ALL_MODES:
        assert mode in str(info.value)


@pytest.mark.parametrize(
    ("fg_shape", "alpha_shape", "bg_shape", "match"),
    [
        ((1, 3, 8, 8), (1, 1, 8, 8), (1, 3, 8, 9), "fg .* and bg .* must have the same shape"),
        ((1, 3, 8, 8), (1, 1, 8, 8), (2, 3, 8, 8), "must have the same shape"),
        ((1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8), r"alpha must be \(B, 1, H, W\)"),
        ((2, 3, 8, 8), (1, 1, 8, 8), (2, 3, 8, 8), r"alpha must be \(B, 1, H, W\)"),
        ((1, 3, 8, 8), (1, 1, 7, 8), (1, 3, 8, 8), r"alpha must be \(B, 1, H, W\)"),
        ((1, 3, 8, 8), (1, 8, 8), (1, 3, 8, 8), r"alpha must be \(B, 1, H, W\)"),
    ],
)
@pytest.mark.parametrize("mode", ALL_MODES)
def test_shape_mismatch(fg_shape, alpha_shape, bg_shape, match, mode):
    with pytest.raises(ValueError, match=match):
        blend(torch.zeros(fg_shape), torch.zeros(alpha_shape), torch.zeros(bg_shape), mode)


def test_unknown_blend_option_is_an_error():
    import pytest as _pytest
    import torch as _torch

    from synthloop.functional.blend import blend as _blend, blend_options

    x = _torch.rand(1, 3, 8, 8)
    a = _torch.ones(1, 1, 8, 8)
    assert blend_options("gaussian") == ("sigma",)
    with _pytest.raises(ValueError, match="sigmaa"):
        _blend(x, a, x, "gaussian", sigmaa=3.0)


@pytest.mark.parametrize("mode,opts,tol", [("none", {}, 0.02), ("alpha", {}, 0.02), ("gaussian", {"sigma": 1.5}, 0.02), ("box", {"kernel_size": 5}, 0.02), ("motion", {"kernel_size": 5, "angle": 30.0}, 0.25), ("pyramid", {"levels": 3}, 0.08)])
def test_numpy_blend_agrees_with_torch_blend(mode, opts, tol):
    g = torch.Generator().manual_seed(0)
    fg, bg = torch.rand(1, 3, 33, 41, generator=g), torch.rand(1, 3, 33, 41, generator=g)
    a = torch.zeros(1, 1, 33, 41)
    a[..., 8:25, 10:30] = 1
    ref = blend(fg, a, bg, mode, **opts)[0].permute(1, 2, 0).numpy()
    hwc = lambda t: np.ascontiguousarray(t[0].permute(1, 2, 0).numpy())
    fast = blend_np(hwc(fg), np.ascontiguousarray(a[0, 0].numpy()), hwc(bg), mode, opts)
    assert np.abs(fast - ref).max() < tol


@pytest.mark.parametrize("mode,opts", [("none", {}), ("alpha", {}), ("gaussian", {"sigma": 1.5}), ("box", {"kernel_size": 5}), ("motion", {"kernel_size": 7, "angle": 30.0}), ("pyramid", {"levels": 3}), ("poisson", {})])
def test_blend_into_a_canvas_view_equals_blend_np(mode, opts):
    rng = np.random.default_rng(0)
    canvas = rng.random((60, 70, 3), dtype=np.float32)
    before = canvas.copy()
    fg = rng.random((30, 40, 4), dtype=np.float32)  # RGBA: the alpha channel is ignored
    alpha = np.zeros((30, 40), np.float32)
    alpha[6:24, 8:30] = 1.0
    alpha[10:14, 12:20] = 0.5
    view = canvas[20:50, 15:55]
    ref = blend_np(np.ascontiguousarray(fg[..., :3]), alpha, view.copy(), mode, opts)
    blend_into(view, fg, alpha, mode, opts)
    assert np.abs(view - ref).max() < 1e-6
    assert view.min() >= 0.0 and view.max() <= 1.0
    outside = np.ones(canvas.shape[:2], bool)
    outside[20:50, 15:55] = False
    assert np.array_equal(canvas[outside], before[outside])  # only the view was written
    if mode in ("none", "alpha"):
        assert np.array_equal(view[6:24, 8:10], fg[6:24, 8:10, :3])  # alpha 1: the foreground, exactly
        assert np.array_equal(view[:5], before[20:25, 15:55])  # alpha 0: the background, exactly


# --------------------------------------------------------------------------------------------
# the registry


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_mode_runs_on_both_paths_with_its_defaults(mode):
    spec = blend_mode(mode)
    assert spec.name == mode and blend_options(mode) == tuple(spec.defaults)
    assert set(spec.sampled) <= set(spec.defaults)
    rng = np.random.default_rng(0)
    fg, bg = rng.random((20, 24, 3), dtype=np.float32), rng.random((20, 24, 3), dtype=np.float32)
    a = np.zeros((20, 24), np.float32)
    a[5:15, 6:18] = 1.0
    assert blend_np(fg, a, bg, mode).shape == bg.shape
    t = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None]
    assert blend(t(fg), torch.from_numpy(a)[None, None], t(bg), mode, **spec.defaults).shape == (1, 3, 20, 24)


def test_window_margins():
    assert [window_margin(m) for m in ALL_MODES] == [1, 1, 7, 3, 3, 16, 3]
    assert window_margin("gaussian", {"sigma": 0.5}) == 3
    assert window_margin("box", {"kernel_size": 9}) == 5
    # a motion blend blurs with 7 taps by default, yet without a kernel_size its window has always
    # had a 5-tap margin (kept: a wider window changes float rounding of the output)
    assert blend_mode("motion").defaults["kernel_size"] == 7
    assert window_margin("motion", {}) == 3 and window_margin("motion", {"kernel_size": 7}) == 4
    assert window_margin("pyramid", {"levels": 3}) == 8


def test_unknown_mode_and_duplicate_registration_are_errors():
    x = np.zeros((4, 4, 3), np.float32)
    a = np.zeros((4, 4), np.float32)
    for call in (lambda: blend_np(x, a, x, "nonee"), lambda: blend_into(x, x, a, "nonee"), lambda: window_margin("nonee")):
        with pytest.raises(ValueError, match="unknown blend mode 'nonee'; valid modes: none, alpha"):
            call()
    with pytest.raises(KeyError, match="already registered"):
        register_blend(BlendMode("alpha", lambda fg, alpha, bg: fg, numpy_feather=lambda a, o: a))
    with pytest.raises(ValueError, match="exactly one"):
        BlendMode("x", lambda fg, alpha, bg: fg)


@pytest.mark.parametrize("box", [(10, 11, 5, 30), (5, 30, 20, 22), (12, 13, 7, 8)])
def test_poisson_on_a_sliver_mask_pastes_hard_like_the_numpy_op(box):
    # seamlessClone raises on a mask under 3 px wide or tall; both ops paste such a sliver hard
    y0, y1, x0, x1 = box
    g = torch.Generator().manual_seed(0)
    fg, bg = torch.rand(1, 3, 40, 50, generator=g), torch.rand(1, 3, 40, 50, generator=g)
    alpha = torch.zeros(1, 1, 40, 50)
    alpha[..., y0:y1, x0:x1] = 1
    out = blend(fg, alpha, bg, "poisson")
    torch.testing.assert_close(out, torch.where(alpha > 0.5, fg, bg))
    ref = blend_np(fg[0].permute(1, 2, 0).numpy(), alpha[0, 0].numpy(), bg[0].permute(1, 2, 0).numpy(), "poisson")
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), ref, atol=1e-6)
