"""Tiny labelled image folders and refine configs shared by the refine job and CLI tests."""

import numpy as np
import pytest
import yaml
from PIL import Image

TINY = {"generator": {"base_channels": 4, "n_blocks": 1}, "discriminator": {"width": 0.0625}, "batch_size": 4}


def _folder(root, classes, per_class, *, seed, masks_root=None):
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        for i in range(per_class):
            img = rng.integers(0, 40, (28, 28), dtype=np.uint8)
            m = np.zeros((28, 28), np.uint8)
            m[4 + 4 * c : 14 + 4 * c, 6:20] = 255
            img[m > 0] = 230
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / name / f"{name}_{i}.png")
            if masks_root is not None:
                (masks_root / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(m).save(masks_root / name / f"{name}_{i}.png")
    return root


@pytest.fixture
def data(tmp_path):
    syn = _folder(tmp_path / "syn", ["one", "two"], 4, seed=0, masks_root=tmp_path / "syn_masks")
    real = _folder(tmp_path / "real", ["one", "two"], 3, seed=1)
    return tmp_path, syn, real


def _config(tmp_path, syn, real, **extra):
    cfg = {
        "method": "cyclegan",
        "seed": 0,
        "device": "cpu",
        "data": {"synthetic": str(syn), "real": str(real), "synthetic_masks": str(tmp_path / "syn_masks")},
        "cyclegan": {**TINY, "steps": 3},
        "checkpoint_every": 2,
        "log_every": 1,
        "evaluation": {"classifier_steps": 2, "batch_size": 4, "classifier": {"widths": [4, 8], "blocks_per_stage": 1}},
    }
    for key, value in extra.items():
        cfg[key] = value
    path = tmp_path / "refine.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
