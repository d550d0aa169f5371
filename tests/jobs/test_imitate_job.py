"""``synthloop imitate``: end to end on a tiny COCO set made here (seconds), resume equality,
--overwrite, and bad input (an InputError naming file and field, no half-written folder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from synthloop.cli import app
from synthloop.data.coco import mask_bbox, write_coco
from synthloop.data.dataset import Annotation, Category, Dataset, ImageEntry
from synthloop.data.images import encode_png
from synthloop.errors import ConfigError, InputError
from synthloop.jobs.imitate import run_imitate_job
from synthloop.jobs.imitate_config import ImitateJobConfig, load_imitate_config
from synthloop.loops.checkpoint import load_checkpoint
from synthloop.utils.atomic import atomic_write_bytes

SIZE = 64
CATEGORIES = [Category(1, "square"), Category(2, "bar")]
TINY_MODEL = {"name": "small_fcos", "args": {"width": 4, "fpn_channels": 32, "head_convs": 1, "score_thresh": 0.0}}
TINY_LOOP = {
    "max_cycles": 2,
    "patience": 3,
    "per_failure": 1,
    "scenes_per_cycle": 4,
    "t_batch_size": 4,
    "fg_size": 24,
    "score_threshold": 0.02,
    "crop_size": 16,
}


def make_coco(root: Path, n: int, seed: int) -> Path:
    """``n`` 64x64 PNGs with a square (category 1) and/or a bar (2) on a flat background, exact masks."""
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(n):
        img = np.empty((SIZE, SIZE, 3), np.uint8)
        img[:] = rng.integers(0, 120, 3)
        anns = []
        for k, cat in enumerate((1, 2) if i % 2 == 0 else (2,)):
            m = np.zeros((SIZE, SIZE), bool)
            x, y = 6 + 30 * k + int(rng.integers(0, 6)), 8 + int(rng.integers(0, 20))
            m[y : y + (16 if cat == 1 else 22), x : x + (16 if cat == 1 else 8)] = True
            img[m] = rng.integers(140, 256, 3)
            anns.append(Annotation(cat, mask_bbox(m), mask=m))
        atomic_write_bytes(root / f"images/{i:02d}.png", encode_png(img))
        entries.append(ImageEntry(i + 1, f"images/{i:02d}.png", SIZE, SIZE, anns))
    return write_coco(Dataset(root=root, categories=list(CATEGORIES), images=entries), root, copy_images=False)


def job_dict(tmp: Path) -> dict:
    if not (tmp / "train" / "annotations.json").is_file():
        make_coco(tmp / "train", 8, 0)
        make_coco(tmp / "val", 4, 1)
        make_coco(tmp / "test", 4, 2)
    return {
        "seed": 3, "image_size": SIZE, "real": {"annotations": str(tmp / "train")}, "val": {"annotations": str(tmp / "val")},
        "test": {"annotations": str(tmp / "test")}, "foregrounds": {"source": "real"}, "backgrounds": ["noise", "gradient"], "model": TINY_MODEL,
        "baseline": {"epochs": 1, "batch_size": 4}, "loop": dict(TINY_LOOP), "eval_batch_size": 8, "report": {"scale": 1},
    }  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("imitate")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_imitate_job(ImitateJobConfig.model_validate(job_dict(tmp)), tmp / "out")
    finally:
        torch.set_num_threads(threads)
    return tmp, result


def test_every_output_exists_and_is_consistent(finished):
    tmp, result = finished
    out = tmp / "out"
    for name in (
        "config.resolved.yaml",
        "run.json",
        "baseline.pt",
        "cycle_001.pt",
        "scenes_001.json",
        "failures_001.json",
        "cycles.json",
        "model.pt",
        "metrics.json",
        "report.html",
    ):
        assert (out / name).is_file(), name
    cycles = json.loads((out / "cycles.json").read_text())
    assert cycles == result.history and cycles[0]["cycle"] == 0 and len(cycles) == 3
    assert all(h["synthetic_share"] == 0.5 for h in cycles[1:])
    metrics = json.loads((out / "metrics.json").read_text())
    sel = result.selected_cycle
    assert sel == max((1, 2), key=lambda c: cycles[c]["val"]["ap"])  # selected by val, never by test
    assert metrics["selected"]["val"]["ap"] == pytest.approx(cycles[sel]["val"]["ap"], abs=1e-4)
    assert set(metrics["selected"]) == {"val", "test"} and "test" in metrics["baseline"]
    assert load_checkpoint(out / "model.pt")["cycle"] == sel
    for a, b in zip(load_checkpoint(out / "model.pt")["model"].values(), load_checkpoint(out / f"cycle_{sel:03d}.pt")["model"].values()):
        assert torch.equal(a, b)
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 3 and run["finished"]
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["loop"]["seed"] == 3 and Path(resolved["val"]["annotations"]).is_absolute()


def test_report_has_gallery_plots_and_config(finished):
    tmp, _ = finished
    html = (tmp / "out" / "report.html").read_text()
    for needle in ("Failure gallery", "Validation AP", "synthetic share", "Resolved config", "loop.max_synthetic_share", "data:image/png;base64"):
        assert needle in html, needle
    assert html.count("<figure>") >= 2


def test_resume_equals_uninterrupted(finished, tmp_path):
    tmp, full = finished
    data = job_dict(tmp)
    part = dict(data, loop={**data["loop"], "max_cycles": 1})
    run_imitate_job(ImitateJobConfig.model_validate(part), tmp_path / "run")
    res = run_imitate_job(ImitateJobConfig.model_validate(data), tmp_path / "run", resume=True)  # more cycles extend a run
    strip = [{k: v for k, v in h.items() if not k.endswith("_s") and k != "seconds"} for h in res.history]
    assert strip == [{k: v for k, v in h.items() if not k.endswith("_s") and k != "seconds"} for h in full.history]
    assert (tmp_path / "run" / "scenes_002.json").read_text() == (tmp / "out" / "scenes_002.json").read_text()


def test_non_empty_folder_needs_resume_or_overwrite(finished, tmp_path):
    tmp, _ = finished
    cfg = ImitateJobConfig.model_validate(dict(job_dict(tmp), loop={**TINY_LOOP, "max_cycles": 1}))
    run_imitate_job(cfg, tmp_path / "o")
    with pytest.raises(InputError, match="--overwrite"):
        run_imitate_job(cfg, tmp_path / "o")
    res = run_imitate_job(cfg, tmp_path / "o", overwrite=True)
    assert len(res.history) == 2 and not (tmp_path / "o" / "cycle_002.pt").exists()


def test_bad_input_names_file_and_field_and_leaves_no_folder(finished, tmp_path):
    tmp, _ = finished
    data = job_dict(tmp)
    data["val"] = {"annotations": str(tmp_path / "missing.json")}
    with pytest.raises(InputError) as e:
        run_imitate_job(ImitateJobConfig.model_validate(data), tmp_path / "bad")
    assert "missing.json" in str(e.value)
    assert not (tmp_path / "bad").exists() or [p.name for p in (tmp_path / "bad").iterdir() if not p.name.startswith(".")] == []


def test_config_file_errors_name_file_and_key(tmp_path, finished):
    tmp, _ = finished
    data = job_dict(tmp)
    data["loop"]["max_synthetic_share"] = 1.5
    path = tmp_path / "imitate.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        load_imitate_config(path)
    assert "imitate.yaml" in str(e.value) and "loop.max_synthetic_share" in str(e.value)
    data = job_dict(tmp)
    del data["val"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="val"):
        load_imitate_config(path)


def test_relative_paths_resolve_against_the_config_file(finished, tmp_path):
    tmp, _ = finished
    data = job_dict(tmp)
    (tmp_path / "cfg").mkdir()
    data["val"] = {"annotations": "../v/annotations.json"}
    make_coco(tmp_path / "v", 2, 5)
    path = tmp_path / "cfg" / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_imitate_config(path, ["loop.max_cycles=1"])
    assert cfg.val.annotations == (tmp_path / "v" / "annotations.json").resolve() and cfg.loop.max_cycles == 1


def test_cli_runs_and_reports(finished, tmp_path):
    tmp, _ = finished
    data = dict(job_dict(tmp), loop={**TINY_LOOP, "max_cycles": 1})
    data.pop("test")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    res = CliRunner().invoke(app, ["imitate", str(path), "--out", str(tmp_path / "cli"), "--threads", "1", "-q"])
    assert res.exit_code == 0, res.output
    assert "val: baseline" in res.output and (tmp_path / "cli" / "report.html").is_file()
    bad = CliRunner().invoke(app, ["imitate", str(path), "--out", str(tmp_path / "cli2"), "loop.select_metric=ap95"])
    assert bad.exit_code != 0 and "select_metric" in bad.output
