"""Background sources that are also foreground sources (warnings), and excluded built-in photos."""

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from synthloop.data.backgrounds import builtin_photos
from synthloop.errors import ConfigError
from synthloop.jobs.paste_assets import ForegroundSource, background_overlap, build_backgrounds, paste_foregrounds
from synthloop.jobs.paste_config import BackgroundsConfig, load_paste_config


def _coco(root, category="coin", image=None):
    """A one-image COCO file in ``root`` (the image: ``image`` copied, or a grey 20x20 square)."""
    root.mkdir(parents=True, exist_ok=True)
    if image is None:
        Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(root / "a.png")
    else:
        Image.open(image).convert("RGB").save(root / "a.png")
    w, h = Image.open(root / "a.png").size
    ann = {
        "images": [{"id": 1, "file_name": "a.png", "width": w, "height": h}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 8, 8], "segmentation": [[2, 2, 10, 2, 10, 10, 2, 10]], "area": 64, "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": category}],
    }
    (root / "annotations.json").write_text(json.dumps(ann))
    return root / "annotations.json"


def test_exclude_is_validated_with_the_valid_names(tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("backgrounds: {sources: [photos], exclude: [coin]}\n")
    with pytest.raises(ConfigError) as err:
        load_paste_config(cfg)
    msg = str(err.value)
    assert (
        msg.startswith(f"{cfg}: field backgrounds.exclude: ") and "unknown built-in photo 'coin'" in msg and "valid names: astronaut" in msg and "coins" in msg
    )
    with pytest.raises(ConfigError, match="no source is photos or builtin"):
        load_paste_config(None, ["backgrounds.sources=[gradient]", "backgrounds.exclude=[coins]"])
    assert load_paste_config(None, ["backgrounds.exclude=[coins,coins]"]).backgrounds.exclude == ["coins"]


def test_build_backgrounds_leaves_excluded_photos_out():
    bank = build_backgrounds(BackgroundsConfig(sources=["builtin"], exclude=["coins"]), seed=0)
    assert "coins" not in bank.photos and len(bank.photos) == len(builtin_photos()) - 1
    g = torch.Generator().manual_seed(0)
    assert not any(bank.sample_one((16, 16), g).get("photo") == "coins" for _ in range(500))
    # every photo excluded: builtin is procedural only
    only = build_backgrounds(BackgroundsConfig(sources=["builtin"], exclude=list(builtin_photos())), seed=0)
    assert only.photos == [] and only.sources == ["procedural"]


def test_a_background_folder_that_is_a_foreground_folder(tmp_path):
    coco = _coco(tmp_path / "coins", category="box")
    fg = paste_foregrounds(load_paste_config(None, [f"instances.coco.json={coco}", "instances.builtin=null"]).instances)
    for bg in (tmp_path / "coins", tmp_path / "coins" / "a.png", tmp_path):  # the folder, an image in it, a folder around it
        (msg,) = background_overlap(BackgroundsConfig(sources=[str(bg)]), fg)
        assert f"background source {bg.resolve()} is also a foreground source (instances.coco: {tmp_path / 'coins'})" in msg
    (tmp_path / "bgs").mkdir()
    assert background_overlap(BackgroundsConfig(sources=[str(tmp_path / "bgs"), "gradient"]), fg) == []
    folder = [ForegroundSource("instances.rgba_folder", folder=tmp_path / "bgs")]
    assert "instances.rgba_folder" in background_overlap(BackgroundsConfig(sources=[str(tmp_path / "bgs")]), folder)[0]


def test_a_builtin_photo_that_is_a_foreground_image_or_shows_a_foreground_category(tmp_path):
    same = paste_foregrounds(
        load_paste_config(None, [f"instances.coco.json={_coco(tmp_path / 'a', 'thing', builtin_photos()['moon'])}", "instances.builtin=null"]).instances
    )
    (msg,) = background_overlap(BackgroundsConfig(sources=["builtin"]), same)
    assert "built-in background photo 'moon' is also a foreground image" in msg and "identical pixels" in msg and "backgrounds.exclude: [moon]" in msg
    assert background_overlap(BackgroundsConfig(sources=["builtin"], exclude=["moon"]), same) == []
    assert background_overlap(BackgroundsConfig(sources=["procedural"]), same) == []

    coins = [ForegroundSource("real", coco=_coco(tmp_path / "b", "Coin"))]
    (msg,) = background_overlap(BackgroundsConfig(sources=["photos"]), coins)
    assert msg == (
        "built-in background photo 'coins' shows objects like the foreground category 'Coin' (real), "
        "which would appear unlabelled in the backgrounds; leave it out with backgrounds.exclude: [coins]"
    )
    assert background_overlap(BackgroundsConfig(sources=["photos"], exclude=["coins"]), coins) == []
    # category_ids restrict what is pasted; built-in digits are no file source at all
    assert (
        background_overlap(BackgroundsConfig(sources=["photos"]), [ForegroundSource("real", coco=tmp_path / "b" / "annotations.json", category_ids=(7,))]) == []
    )
    assert paste_foregrounds(load_paste_config(None).instances) == []
    # a folder's categories are its subfolders
    (tmp_path / "cut" / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(tmp_path / "cut" / "cat" / "x.png")
    assert "'chelsea'" in background_overlap(BackgroundsConfig(sources=["photos"]), [ForegroundSource("instances.rgba_folder", folder=tmp_path / "cut")])[0]
    # a file its reader will reject is left to that reader
    (tmp_path / "broken.json").write_text("{")
    assert background_overlap(BackgroundsConfig(sources=["photos"]), [ForegroundSource("real", coco=tmp_path / "broken.json")]) == []


def test_paste_warns_before_it_runs(tmp_path):
    from synthloop.jobs.paste import run_paste

    cfg = load_paste_config(
        None, [f"instances.coco.json={_coco(tmp_path / 'c')}", "instances.builtin=null", "num_images=1", "scene.canvas=[32,32]", "backgrounds.sources=[photos]"]
    )
    with pytest.warns(UserWarning, match="photo 'coins' shows objects like the foreground category 'coin'"):
        run_paste(cfg, tmp_path / "out")
    cfg = load_paste_config(None, [f"instances.coco.json={tmp_path / 'c' / 'annotations.json'}", "instances.builtin=null", "num_images=1", "scene.canvas=[32,32]",
                                   "backgrounds.sources=[photos]", "backgrounds.exclude=[coins]"])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_paste(cfg, tmp_path / "out2")
