import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from synthloop.cli import app
from synthloop.config import load_config
from synthloop.data.coco import read_coco, rle_to_mask
from synthloop.data.images import encode_png, load_image
from synthloop.jobs.render import RenderJobConfig
from synthloop.render import VARIATIONS, Renderer, bundled_font_dir

runner = CliRunner()


def _config(tmp_path, **extra):
    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    (photos / "p.png").write_bytes(encode_png(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)))
    cfg = {
        "count": 23,
        "batch_size": 10,
        "seed": 4,
        "fonts": [str(bundled_font_dir() / "DejaVuSans.ttf"), str(bundled_font_dir() / "DejaVuSerif.ttf")],
        "background": {"photo_sources": [str(photos)]},
        "output": {"masks": True},
        **extra,
    }
    path = tmp_path / "render.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _render(*args):
    return runner.invoke(app, ["render", *map(str, args)])


def test_render_writes_image_folder_coco_and_replayable_params(tmp_path):
    cfg, out = _config(tmp_path), tmp_path / "out"
    res = _render(cfg, "size=[28,28]", "--out", out)
    assert res.exit_code == 0, res.output
    assert "wrote 23 images of 10 classes" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["annotations.json", "config.yaml", "images", "masks", "params.jsonl", "run.json"]
    pngs = sorted(out.glob("images/*/*.png"))
    assert len(pngs) == 23 and {p.parent.name for p in pngs} <= set("0123456789")
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 4 and run["count"] == 23 and "synthloop_version" in run and "git_commit" in run
    # the resolved config reads back into the same config
    saved = load_config(RenderJobConfig, out / "config.yaml")
    assert saved == load_config(RenderJobConfig, cfg, ["size=[28,28]"])
    # COCO: one annotation per image, category = label, mask = the written mask image
    ds = read_coco(out / "annotations.json", check_images=True)
    records = [json.loads(line) for line in (out / "params.jsonl").read_text().splitlines()]
    assert len(ds.images) == len(records) == 23
    for entry, rec in zip(ds.images, records):
        assert entry.file_name == rec["file_name"] and rec["file_name"].startswith(f"images/{rec['class']}/")
        (ann,) = entry.annotations
        assert ann.category_id == rec["label"] == int(rec["class"])
        written = load_image(out / rec["file_name"].replace("images/", "masks/", 1), mode="L") > 0
        assert np.array_equal(ann.mask, written)
        assert np.array_equal(rle_to_mask(ann.rle, 28, 28), written)
    # every image replays bit for bit from its params record alone
    renderer = Renderer(saved)
    for rec in records[:5] + records[-2:]:
        img = renderer.apply(renderer.from_records([rec["params"]])).image[0, 0]
        pixels = (img * 255.0).round().to(torch.uint8).numpy()
        assert np.array_equal(pixels, load_image(out / rec["file_name"], mode="L"))


def test_same_config_writes_the_same_dataset(tmp_path):
    cfg = _config(tmp_path, count=6)
    assert _render(cfg, "--out", tmp_path / "a").exit_code == 0
    assert _render(cfg, "--out", tmp_path / "b").exit_code == 0
    assert (tmp_path / "a" / "params.jsonl").read_text() == (tmp_path / "b" / "params.jsonl").read_text()
    for p in (tmp_path / "a").glob("images/*/*.png"):
        assert p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes()


def test_rgb_output_and_variation_switches(tmp_path):
    cfg, out = _config(tmp_path, count=4), tmp_path / "rgb"
    off = [f"{v}.enabled=false" for v in VARIATIONS]
    res = _render(cfg, "channels=3", "size=[32,48]", "output.coco=false", *off, "--out", out)
    assert res.exit_code == 0, res.output
    img = load_image(next(out.glob("images/*/*.png")), mode="RGB")
    assert img.shape == (32, 48, 3) and not (out / "annotations.json").exists()
    assert all(json.loads(line)["params"]["variations"] == [] for line in (out / "params.jsonl").read_text().splitlines())


def test_errors_are_one_line_messages(tmp_path):
    cfg = _config(tmp_path, count=3)
    res = _render(cfg, "camera.yaww=3", "--out", tmp_path / "x")
    assert res.exit_code == 2 and "camera.yaww: unknown key; valid keys here: enabled, focal, p, pitch, roll, yaw" in res.output
    assert not (tmp_path / "x").exists()
    bad = tmp_path / "bad.ttf"
    bad.write_bytes(b"\x00\x01 not a font")
    res = _render(cfg, f"fonts=[{bad}]", "--out", tmp_path / "x")
    assert res.exit_code == 2 and "bad.ttf" in res.output and "Traceback" not in res.output
    empty = tmp_path / "empty_fonts"
    empty.mkdir()
    res = _render(cfg, f"fonts=[{empty}]", "--out", tmp_path / "x")
    assert res.exit_code == 2 and "no font files" in res.output
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.*"))


def test_output_folder_is_replaced_only_with_overwrite(tmp_path):
    cfg, out = _config(tmp_path, count=3), tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    res = _render(cfg, "--out", out)
    assert res.exit_code == 2 and "not empty" in res.output and (out / "stale.txt").exists()
    res = _render(cfg, "--out", out, "--overwrite")
    assert res.exit_code == 0, res.output
    assert not (out / "stale.txt").exists() and len(list(out.glob("images/*/*.png"))) == 3
    assert not list(tmp_path.glob(".out.*"))


@pytest.mark.slow  # spawns two worker processes, each importing torch
def test_worker_processes_write_the_same_dataset(tmp_path):
    cfg = _config(tmp_path, count=12, batch_size=4)
    assert _render(cfg, "--out", tmp_path / "one").exit_code == 0
    res = _render(cfg, "output.workers=2", "--out", tmp_path / "two")
    assert res.exit_code == 0, res.output
    for name in ("params.jsonl", "annotations.json"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text()
    one = sorted((tmp_path / "one").glob("images/*/*.png"))
    assert len(one) == 12 and all(p.read_bytes() == (tmp_path / "two" / p.relative_to(tmp_path / "one")).read_bytes() for p in one)


def test_a_run_stopped_by_bad_input_leaves_nothing_behind(tmp_path):
    """A truncated background photo fails while rendering: the output folder is not created (or,
    made empty by the user before, stays empty), so the corrected command runs in it as it is."""
    cfg = _config(tmp_path, count=3)
    photos = tmp_path / "photos" / "p.png"
    good = photos.read_bytes()
    photos.write_bytes(good[: len(good) // 2])
    for out in (tmp_path / "new", tmp_path / "made_empty"):
        if out.name == "made_empty":
            out.mkdir()
        res = _render(cfg, "--out", out)
        assert res.exit_code == 2 and "p.png" in res.output and "Traceback" not in res.output
        assert (not out.exists() or not any(out.iterdir())) and not list(tmp_path.glob(f".{out.name}.*"))
    photos.write_bytes(good)
    for out in (tmp_path / "new", tmp_path / "made_empty"):
        res = _render(cfg, "--out", out)  # no --overwrite needed
        assert res.exit_code == 0, res.output
        assert len(list(out.glob("images/*/*.png"))) == 3


def test_address_needs_the_ray_backend(tmp_path):
    res = _render(_config(tmp_path, count=2), "--out", tmp_path / "x", "--address", "localhost:6379")
    assert res.exit_code == 2 and "--address needs --backend ray" in res.output
    assert not (tmp_path / "x").exists()
