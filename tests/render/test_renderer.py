import json

import cv2
import numpy as np
import pytest
import torch

from synthloop.config import build_config
from synthloop.data.images import encode_png
from synthloop.errors import ConfigError, InputError
from synthloop.render import VARIATIONS, Renderer, RenderConfig, bundled_font_dir, find_fonts, identity_params, rasterize_glyph
from synthloop.render.variations import gaussian_blur_exact, stroke_width

FONT = str(bundled_font_dir() / "DejaVuSans.ttf")


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """Two small photos, so photo backgrounds do not decode the large bundled ones in every test."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(2):
        img = cv2.GaussianBlur(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), (0, 0), 2.0)
        (root / f"p{i}.png").write_bytes(encode_png(img))
    return str(root)


def make_config(photo_dir, on=(), p=1.0, **kw):
    """One font; only the variations in ``on`` enabled, each with probability ``p``."""
    switches = {v: {"enabled": v in on, "p": p} for v in VARIATIONS}
    switches["background"]["photo_sources"] = [photo_dir]
    for k, v in kw.pop("extra", {}).items():
        switches[k].update(v)
    return RenderConfig(fonts=[FONT], **switches, **kw)


def iou(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return (a & b).sum() / max((a | b).sum(), 1)


def test_params_replay_bit_identically(photo_dir):
    r = Renderer(make_config(photo_dir, on=VARIATIONS))
    params = r.sample(32, torch.Generator().manual_seed(3))
    assert bool(params.flags.all())
    batch = r.apply(params)
    again = r.apply(params)
    assert torch.equal(batch.image, again.image) and torch.equal(batch.mask, again.mask)
    # through JSON and back
    records = json.loads(json.dumps(r.to_records(params)))
    replay = r.apply(r.from_records(records))
    assert torch.equal(batch.image, replay.image) and torch.equal(batch.mask, replay.mask)
    # one sample alone, and a slice, give the same pixels as inside the batch
    for i in (0, 7, 31):
        one = r.apply(r.from_records([records[i]]))
        assert torch.equal(one.image[0], batch.image[i]) and torch.equal(one.mask[0], batch.mask[i])
    assert torch.equal(r.apply(params.select(range(10, 20))).image, batch.image[10:20])
    # the same generator seed draws the same params
    assert torch.equal(r.render(32, torch.Generator().manual_seed(3)).image, batch.image)


def test_default_config_renders_mnist_like_batches():
    r = Renderer()
    b = r.render(16, torch.Generator().manual_seed(0))
    assert b.image.shape == (16, 1, 28, 28) and b.mask.shape == (16, 1, 28, 28)
    assert b.image.dtype == torch.float32 and 0.0 <= float(b.image.min()) and float(b.image.max()) <= 1.0
    assert r.classes == list("0123456789") and len(r.glyphs) == 10 * 21  # the bundled text faces


@pytest.mark.parametrize("variation", VARIATIONS)
def test_each_variation_toggles(photo_dir, variation):
    base = Renderer(make_config(photo_dir)).render(48, torch.Generator().manual_seed(1))
    r = Renderer(make_config(photo_dir, on=(variation,), p=0.5))
    batch = r.render(48, torch.Generator().manual_seed(1))
    on = batch.params.enabled(variation)
    assert 10 <= int(on.sum()) <= 38
    assert torch.equal(batch.params.glyph, base.params.glyph)  # a switch never changes the glyph draws
    for i in range(48):
        same = torch.equal(batch.image[i], base.image[i])
        assert same != bool(on[i]), f"sample {i}: variation {'on' if on[i] else 'off'} but image {'unchanged' if same else 'changed'}"
    # switched off (with other ranges), it is the base render exactly
    off = make_config(photo_dir, on=(), p=0.5, extra={variation: {"enabled": False}})
    assert torch.equal(Renderer(off).render(48, torch.Generator().manual_seed(1)).image, base.image)


def test_switching_one_variation_keeps_the_others_draws(photo_dir):
    a = Renderer(make_config(photo_dir, on=("camera", "texture"))).sample(16, torch.Generator().manual_seed(2))
    b = Renderer(make_config(photo_dir, on=("camera", "texture", "occlusion"))).sample(16, torch.Generator().manual_seed(2))
    assert torch.equal(a.camera, b.camera) and torch.equal(a.fill.color_a, b.fill.color_a)


def test_mask_matches_the_rendered_glyph(photo_dir):
    plain = Renderer(make_config(photo_dir)).render(32, torch.Generator().manual_seed(0))
    assert torch.equal(plain.image, plain.mask)  # white glyph on black: the image is the coverage
    for i in range(32):
        assert iou(plain.mask[i, 0] > 0.5, plain.image[i, 0] > 0.5) == 1.0
    # geometric variations move the mask with the glyph
    identity_photometric = {"contrast": (1, 1), "brightness": (1, 1), "illumination": (0, 0), "blur": (0, 0), "noise": (0, 0)}
    cfg = make_config(photo_dir, on=("camera", "elastic", "stroke", "augment"), extra={"augment": identity_photometric})
    moved = Renderer(cfg).render(32, torch.Generator().manual_seed(0))
    assert (moved.image - moved.mask).abs().max() < 1e-5
    assert not torch.equal(moved.mask, plain.mask)


def test_mask_matches_an_independent_rasterisation(photo_dir):
    size, glyph_size, k = 112, 0.6, 4
    r = Renderer(make_config(photo_dir, size=size, glyph_size=glyph_size, chars="8"))
    mask = r.render(1, torch.Generator().manual_seed(0)).mask[0, 0].numpy() > 0.5
    # reference: PIL's glyph scaled to the glyph size, centre of mass on the canvas centre, built
    # at k x the resolution with OpenCV and area-averaged down
    hi = rasterize_glyph(bundled_font_dir() / "DejaVuSans.ttf", "8").astype(np.float32) / 255.0
    scale = k * glyph_size * size / max(hi.shape)
    big = cv2.resize(hi, (round(hi.shape[1] * scale), round(hi.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    ys, xs = np.indices(big.shape)
    cy, cx = (ys * big).sum() / big.sum() + 0.5, (xs * big).sum() / big.sum() + 0.5
    shift = np.float32([[1, 0, k * size / 2 - cx], [0, 1, k * size / 2 - cy]])
    ref = cv2.warpAffine(big, shift, (k * size, k * size), flags=cv2.INTER_LINEAR)
    ref = cv2.resize(ref, (size, size), interpolation=cv2.INTER_AREA)
    assert iou(mask, ref > 0.5) > 0.95


def test_occluders_hide_part_of_the_mask(photo_dir):
    b = Renderer(make_config(photo_dir, on=("occlusion",), extra={"occlusion": {"size": (0.4, 0.6), "count": (2, 2)}})).render(16, torch.Generator().manual_seed(0))
    assert bool((b.mask <= b.amodal + 1e-7).all())
    assert bool((b.visibility < 0.999).sum() >= 8)


def test_labels_are_the_characters_drawn(photo_dir):
    mild = {"camera": {"yaw": (-15, 15), "pitch": (-15, 15), "roll": (-5, 5)}}
    r = Renderer(make_config(photo_dir, on=("camera", "elastic", "stroke"), extra=mild))
    sevens = r.render(24, torch.Generator().manual_seed(0), labels=[7] * 24)
    assert sevens.label.tolist() == [7] * 24
    assert {r.glyphs.glyphs[int(g)].char for g in sevens.params.glyph} == {"7"}
    # nearest plain template (by mask IoU) of every distorted 7 is the 7
    templates = Renderer(make_config(photo_dir)).render(10, torch.Generator().manual_seed(0), labels=list(range(10))).mask[:, 0] > 0.5
    for m in sevens.mask[:, 0] > 0.5:
        assert int(np.argmax([iou(m, t) for t in templates])) == 7
    # labels are drawn class-balanced
    counts = torch.bincount(r.sample(2000, torch.Generator().manual_seed(1)).label, minlength=10)
    assert int(counts.min()) > 140 and int(counts.max()) < 260


def test_camera_yaw_and_pitch_foreshorten_the_glyph(photo_dir):
    r = Renderer(make_config(photo_dir, size=64, chars="0"))
    p = identity_params(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), 1)
    p.camera[1] = torch.tensor([60.0, 0.0, 0.0, 50.0])  # yaw, nearly orthographic
    p.camera[2] = torch.tensor([0.0, 60.0, 0.0, 50.0])  # pitch
    m = r.apply(p).mask[:, 0] > 0.5
    width = m.any(1).sum(1).float()
    height = m.any(2).sum(1).float()
    assert abs(float(width[1] / width[0]) - 0.5) < 0.1 and abs(float(height[1] / height[0]) - 1.0) < 0.1
    assert abs(float(height[2] / height[0]) - 0.5) < 0.1 and abs(float(width[2] / width[0]) - 1.0) < 0.1


def test_crop_zoom_scales_the_glyph(photo_dir):
    r = Renderer(make_config(photo_dir, size=64, chars="0"))
    p = identity_params(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), 1)
    p.augment[1, 0] = 1.25
    p.flags[1, VARIATIONS.index("augment")] = True
    area = r.apply(p).mask.sum(dim=(1, 2, 3))
    assert abs(float(area[1] / area[0]) - 1.25**2) < 0.05


def test_light_from_the_left_brightens_left_facing_edges(photo_dir, tmp_path):
    bar = np.zeros((40, 12, 4), np.uint8)
    bar[..., :3], bar[..., 3] = 255, 255
    (tmp_path / "bar.png").write_bytes(encode_png(bar))
    r = Renderer(make_config(photo_dir, size=64, chars="", shapes=[{"name": "bar", "file": str(tmp_path / "bar.png")}]))
    p = identity_params(torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long), 1)
    p.lighting[0] = torch.tensor([180.0, 45.0, 0.5, 0.2, 0.06, 0.025])  # azimuth 180: light from the left
    p.flags[0, VARIATIONS.index("lighting")] = True
    img = r.apply(p).image[0, 0]
    row = img[32]
    inside = (r.apply(identity_params(p.glyph, p.label, 1)).mask[0, 0, 32] > 0.99).nonzero().flatten()
    left, right, centre = float(row[inside[0]]), float(row[inside[-1]]), float(row[32])
    assert left > centre > right


def test_stroke_width_thickens_and_thins():
    tiles = torch.zeros(4, 1, 32, 32)
    tiles[:, :, 8:24, 14:18] = 1.0
    out = stroke_width(tiles, torch.tensor([0.0, 1.0, 2.5, -1.0]))
    area = out.sum(dim=(1, 2, 3))
    assert torch.equal(out[0], tiles[0])
    assert float(area[0]) < float(area[1]) < float(area[2]) and float(area[3]) < float(area[0])
    assert float(out[3].max()) == 1.0 and float(out[3, 0, 16, 13]) == 0.0  # eroded from 4 to 2 px wide
    assert float(out[1, 0, 16, 13]) == 1.0 and float(out[1, 0, 16, 12]) == 0.0  # grown by one px per side


def test_exact_blur_matches_the_functional_blur_and_is_batch_independent():
    from synthloop.functional.filters import gaussian_blur

    x = torch.rand(8, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.0, 0.3, 0.8, 1.0, 1.5, 2.0, 0.5, 1.2])
    out = gaussian_blur_exact(x, sigma)
    assert torch.allclose(out, gaussian_blur(x, sigma), atol=1e-6)
    assert torch.equal(out[0], x[0])
    for i in range(8):
        assert torch.equal(gaussian_blur_exact(x[i : i + 1], sigma[i : i + 1])[0], out[i])


def test_rgb_supersampled_output(photo_dir):
    b = Renderer(make_config(photo_dir, on=VARIATIONS, size=(40, 56), channels=3, supersample=2)).render(8, torch.Generator().manual_seed(0))
    assert b.image.shape == (8, 3, 40, 56) and b.mask.shape == (8, 1, 40, 56)
    assert float((b.image[:, 0] - b.image[:, 1]).abs().max()) > 0.05  # colour, not grey


def test_shapes_render_as_extra_classes(photo_dir, tmp_path):
    tri = np.zeros((30, 30, 4), np.uint8)
    cv2.fillPoly(tri, [np.array([[15, 2], [28, 27], [2, 27]])], (255, 0, 0, 255))
    (tmp_path / "tri.png").write_bytes(encode_png(tri))
    r = Renderer(make_config(photo_dir, chars="01", shapes=[{"name": "triangle", "file": str(tmp_path / "tri.png")}]))
    assert r.classes == ["0", "1", "triangle"]
    b = r.render(6, torch.Generator().manual_seed(0), labels=[2] * 6)
    assert b.label.tolist() == [2] * 6
    assert float(b.mask.sum()) > 0 and torch.equal(b.image, b.mask)
    assert r.to_records(b.params)[0]["glyph"] == {"shape": "triangle", "file": "tri.png"}


def test_unreadable_font_names_the_file(tmp_path):
    bad = tmp_path / "broken.ttf"
    bad.write_bytes(b"definitely not a font")
    with pytest.raises(InputError, match="broken.ttf"):
        find_fonts([bad])
    with pytest.raises(InputError, match="broken.ttf"):
        Renderer(RenderConfig(fonts=[str(bad)]))
    with pytest.raises(InputError, match="broken.ttf"):  # a folder whose only font is broken
        find_fonts([tmp_path])


def test_font_folder_errors(tmp_path):
    with pytest.raises(InputError, match="no font files"):
        find_fonts([tmp_path])
    with pytest.raises(InputError, match="not found"):
        find_fonts([tmp_path / "missing"])
    with pytest.raises(InputError, match="no glyph for '一'"):
        find_fonts([FONT], chars="0一")
    assert find_fonts([bundled_font_dir()], chars="0") and find_fonts([FONT]) == [bundled_font_dir() / "DejaVuSans.ttf"]


def test_config_errors_list_valid_keys():
    with pytest.raises(ConfigError, match="yaww: unknown key; valid keys here: enabled, focal, p, pitch, roll, yaw"):
        build_config(RenderConfig, {"camera": {"yaww": 10}})
    with pytest.raises(ConfigError, match="cout: unknown key; valid keys here:.*count"):
        build_config(RenderConfig, {"cout": 10})
    with pytest.raises(ConfigError, match="camera.*yaw: min 10.0 is greater than max -10.0"):
        build_config(RenderConfig, {"camera": {"yaw": [10, -10]}})
    with pytest.raises(ConfigError, match="background"):
        build_config(RenderConfig, {"background": {"kinds": {"plain": 0}}})
    assert build_config(RenderConfig, {}, ["size=64", "camera.enabled=false"]).size == (64, 64)


def test_bad_records_name_the_field(photo_dir):
    r = Renderer(make_config(photo_dir))
    rec = r.to_records(r.sample(1, torch.Generator().manual_seed(0)))[0]
    with pytest.raises(InputError, match=r"\[0\]\.glyph"):
        r.from_records([{**rec, "glyph": {"font": "nope.ttf", "char": "3"}}])
    with pytest.raises(InputError, match=r"\[0\]\.camera\.yaw"):
        r.from_records([{**rec, "variations": ["camera"], "camera": {"yaw": "x", "pitch": 0, "roll": 0, "focal": 2}}])


def test_config_accepts_non_square_sizes_and_checks_colours():
    assert RenderConfig(size=(40, 28)).size == (40, 28)
    with pytest.raises(ConfigError, match="base_color"):
        build_config(RenderConfig, {"texture": {"base_color": [1.0, 2.0, 0.0]}})
