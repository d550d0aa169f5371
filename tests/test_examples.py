"""Every example config runs (tiny overrides), and the committed tiny COCO dataset is what its
generator script writes."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from synthloop.data.coco import read_coco
from synthloop.data.images import load_image
from synthloop.jobs.paste import run_paste
from synthloop.jobs.paste_config import load_paste_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIGS = sorted(p for p in EXAMPLES.glob("*.yaml") if p.name != "render.yaml")  # paste configs; render.yaml: tests/test_readme.py


def test_there_are_examples():
    assert {p.name for p in CONFIGS} >= {"paste_builtin.yaml", "paste_coco.yaml"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_example_runs(config, tmp_path):
    cfg = load_paste_config(config, ["num_images=2", "scene.canvas=[64,80]", "backgrounds.pool=2"])
    summary = run_paste(cfg, tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert len(doc["images"]) == summary.images == 2 * (len(cfg.scene.blend.modes) if cfg.scene.blend.all_modes else 1)
    assert doc["annotations"], "the example produced no labelled object"
    for fmt, marker in (("yolo", "data.yaml"), ("voc", "Annotations")):
        assert (tmp_path / "out" / fmt / marker).exists() == (fmt in cfg.formats)


def test_tiny_coco_matches_its_generator(tmp_path):
    spec = importlib.util.spec_from_file_location("make_tiny_coco", EXAMPLES / "make_tiny_coco.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.build(tmp_path)
    committed = read_coco(EXAMPLES / "data" / "tiny_coco" / "annotations.json")
    fresh = read_coco(tmp_path / "annotations.json")
    assert [c.name for c in committed.categories] == ["disc", "square", "triangle"]
    assert len(committed.images) == len(fresh.images) == 4
    for a, b in zip(committed.images, fresh.images):
        assert np.array_equal(load_image(committed.image_path(a)), load_image(fresh.image_path(b)))
        assert [x.bbox for x in a.annotations] == [x.bbox for x in b.annotations]
        assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a.annotations, b.annotations))
    assert sum(p.stat().st_size for p in (EXAMPLES / "data").rglob("*") if p.is_file()) < 20_000
