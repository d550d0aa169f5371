import cv2
import numpy as np
import torch
from render_helpers import iou, make_config

from synthloop.data.images import encode_png
from synthloop.render import VARIATIONS, Renderer, bundled_font_dir, identity_params, rasterize_glyph


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
