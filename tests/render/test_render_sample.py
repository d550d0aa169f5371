import pytest
import torch
from render_helpers import make_config

from synthloop.render import VARIATIONS, Renderer


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
