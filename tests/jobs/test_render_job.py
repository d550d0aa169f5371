import json

import pytest
import torch
import yaml

from synthloop.config import build_config, load_config
from synthloop.data.images import load_image
from synthloop.errors import ConfigError, InputError
from synthloop.jobs.render import RenderJobConfig, write_dataset
from synthloop.render import VARIATIONS, Renderer, bundled_font_dir
from synthloop.utils.seeding import make_generator


def _config(**kw):
    off = {v: {"enabled": False} for v in ("background", "occlusion")}  # no photos to decode
    return RenderJobConfig(fonts=[str(bundled_font_dir() / "DejaVuSans.ttf")], **off, **kw)


def test_config_errors_list_valid_keys():
    with pytest.raises(ConfigError, match="yaww: unknown key; valid keys here: enabled, focal, p, pitch, roll, yaw"):
        build_config(RenderJobConfig, {"camera": {"yaww": 10}})
    with pytest.raises(ConfigError, match="cout: unknown key; valid keys here:.*count"):
        build_config(RenderJobConfig, {"cout": 10})
    with pytest.raises(ConfigError, match="camera.*yaw: min 10.0 is greater than max -10.0"):
        build_config(RenderJobConfig, {"camera": {"yaw": [10, -10]}})
    with pytest.raises(ConfigError, match="background"):
        build_config(RenderJobConfig, {"background": {"kinds": {"plain": 0}}})
    assert build_config(RenderJobConfig, {}, ["size=64", "camera.enabled=false"]).size == (64, 64)


def test_config_yaml_keeps_its_key_order(tmp_path):
    cfg = _config(count=3, batch_size=2)
    write_dataset(cfg, tmp_path / "out")
    text = (tmp_path / "out" / "config.yaml").read_text()
    order = [*VARIATIONS, "count", "seed", "batch_size", "size", "channels", "glyph_size", "supersample", "fonts", "chars", "shapes", "output"]
    assert list(yaml.safe_load(text)) == order
    assert load_config(RenderJobConfig, tmp_path / "out" / "config.yaml") == cfg


def test_batches_are_the_renderers_batches_and_progress_is_reported(tmp_path):
    cfg = _config(count=7, batch_size=3, seed=5)
    calls = []
    run = write_dataset(cfg, tmp_path / "out", progress=lambda done, total: calls.append((done, total)))
    assert calls == [(3, 7), (6, 7), (7, 7)]
    assert run["count"] == 7 and run["seed"] == 5 and run["classes"] == list("0123456789")
    records = [json.loads(line) for line in (tmp_path / "out" / "params.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == list(range(7))
    # batch b is Renderer.render of make_generator(seed, "render", b)
    r = Renderer(cfg)
    for b, start, m in ((0, 0, 3), (2, 6, 1)):
        batch = r.render(m, make_generator(cfg.seed, "render", b))
        assert r.to_records(batch.params) == [rec["params"] for rec in records[start : start + m]]
        pixels = (batch.image[:, 0] * 255.0).round().to(torch.uint8).numpy()
        for j in range(m):
            assert (pixels[j] == load_image(tmp_path / "out" / records[start + j]["file_name"], mode="L")).all()


def test_a_failed_run_leaves_nothing_behind(tmp_path):
    def stop(done, total):
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        write_dataset(_config(count=4, batch_size=2), tmp_path / "out", progress=stop)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        write_dataset(_config(count=1), tmp_path / "file")


def test_a_killed_runs_staging_folder_is_removed(tmp_path):
    """kill -9 leaves the hidden staging sibling; the next run into the same folder removes it
    (regression: it stayed behind)."""
    stale = [tmp_path / ".out.0badc0de.render", tmp_path / ".out.0badc0de.old"]
    for s in stale:
        (s / "images").mkdir(parents=True)
    (tmp_path / ".other.0badc0de.render").mkdir()  # another run's: untouched
    write_dataset(_config(count=2, batch_size=2), tmp_path / "out")
    assert not any(s.exists() for s in stale) and (tmp_path / ".other.0badc0de.render").is_dir()
