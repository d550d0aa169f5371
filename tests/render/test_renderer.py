import json

import cv2
import numpy as np
import pytest
import torch
from render_helpers import iou, make_config

from synthloop.config import build_config
from synthloop.data.images import encode_png
from synthloop.errors import ConfigError
from synthloop.render import VARIATIONS, RenderConfig, Renderer


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


def test_config_accepts_non_square_sizes_and_checks_colours():
    assert RenderConfig(size=(40, 28)).size == (40, 28)
    with pytest.raises(ConfigError, match="base_color"):
        build_config(RenderConfig, {"texture": {"base_color": [1.0, 2.0, 0.0]}})
