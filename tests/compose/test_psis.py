"""Instance switching (PSIS)."""

import functools

import numpy as np
import torch

from synthloop.compose import SceneConfig, apply_scene


def _blob_dataset(tmp_path):
    """Three 64x64 images, each with two objects (class 1 squares and class 2 discs)."""
    from PIL import Image

    from synthloop.data.dataset import Annotation, Category, Dataset, ImageEntry

    rng = np.random.default_rng(0)
    images = []
    yy, xx = np.mgrid[:64, :64]
    for i in range(3):
        img = (rng.random((64, 64, 3)) * 60).astype(np.uint8)
        sq = np.zeros((64, 64), bool)
        s = 14 + 2 * i
        sq[8 : 8 + s, 8 : 8 + s] = True
        disc = (yy - 44) ** 2 + (xx - 44) ** 2 <= (9 + i) ** 2
        img[sq] = (200, 40 * i, 40)
        img[disc] = (40, 200, 40 * i)
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        anns = [Annotation(1, (8.0, 8.0, float(s), float(s)), mask=sq), Annotation(2, tuple(float(v) for v in (44 - 9 - i, 44 - 9 - i, 2 * (9 + i) + 1, 2 * (9 + i) + 1)), mask=disc)]
        images.append(ImageEntry(i, f"{i}.png", 64, 64, anns))
    return Dataset(tmp_path, [Category(1, "square"), Category(2, "disc")], images)


def test_instance_switching_swaps_same_class_matched_by_scale(tmp_path):
    from synthloop.compose.psis import DatasetScenes, sample_psis
    from synthloop.data.images import load_image

    scenes = DatasetScenes(_blob_dataset(tmp_path), functools.partial(load_image, mode="RGB"))
    cfg = SceneConfig()
    cfg.artefacts.enabled = False
    cfg.blend.modes = ["none"]
    p = sample_psis(cfg, scenes, torch.Generator().manual_seed(0), image_index=0)
    switched = [o for o in p.objects if not o.distractor]
    assert len(switched) == 2 and len(p.objects) == 4  # both objects switched, originals kept underneath
    for o in switched:
        ii, _, _ = scenes.items[o.instance]
        assert ii != 0  # comes from another image
    r = apply_scene(p, scenes, scenes)
    labelled = r.labelled(0.5)
    assert sorted(o.category_id for o in labelled) == [1, 2]
    # the switched-in square covers exactly the original square's mask box (14x14 at 8,8)
    sq = next(o for o in labelled if o.category_id == 1)
    assert sq.box == (8.0, 8.0, 22.0, 22.0)
    assert r.image[10, 10, 0] > 0.7  # red square pixels (from another image) are there
    # nothing to switch when tolerances exclude every candidate: the image is reproduced exactly
    cfg.placement.psis_scale_tolerance = 1.0
    cfg.placement.psis_aspect_tolerance = 1.0
    p2 = sample_psis(cfg, scenes, torch.Generator().manual_seed(0), image_index=0)
    r2 = apply_scene(p2, scenes, scenes)
    assert all(not o.distractor for o in p2.objects)
    assert np.abs(r2.image - scenes.image(0)).max() < 1e-4  # far below one uint8 level
