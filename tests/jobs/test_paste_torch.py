"""The torch path of ``synthloop paste`` (``--device cuda``), tested on the CPU through the same code."""

import json

import cv2
import numpy as np
import pytest
import torch
from paste_helpers import TINY, output_files, tiny_config

from synthloop.compose.apply import apply_scene
from synthloop.compose.scene_batch import composite_native_batch
from synthloop.errors import InputError
from synthloop.functional.numpy_ops import to_uint8
from synthloop.jobs.paste import WORK_DIR, read_shards, run_paste, scene_variants
from synthloop.jobs.paste_assets import build_assets
from synthloop.jobs.paste_torch import resolve_device, run_paste_torch


def cfg(*extra):
    return tiny_config(10, *extra)


files = output_files


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    local, torch_out = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("torch")
    run_paste(cfg(), local)
    run_paste_torch(cfg(), torch_out, device="cpu", batch_size=4)
    return local, torch_out


def test_the_torch_path_writes_the_same_dataset_structure(runs):
    local, out = runs
    assert sorted(files(out)) == sorted(files(local))
    assert (out / "params.jsonl").read_bytes() == (local / "params.jsonl").read_bytes()  # the same scenes
    for p in sorted((out / "images").iterdir()):
        img = cv2.imdecode(np.frombuffer(p.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (48, 64, 3)
    a, b = (json.loads((d / "annotations.json").read_text()) for d in (local, out))
    assert a["categories"] == b["categories"]
    assert [{k: v for k, v in im.items()} for im in a["images"]] == b["images"]
    assert {tuple(sorted(x)) for x in a["annotations"]} == {tuple(sorted(x)) for x in b["annotations"]}
    assert {tuple(sorted(x["attributes"])) for x in b["annotations"]} == {tuple(sorted(x["attributes"])) for x in a["annotations"]}
    # the same objects are labelled; boxes agree to a pixel or two (OpenCV's 1/32-pixel warp weights)
    key = lambda x: (x["image_id"], x["attributes"]["instance"])
    la, lb = sorted(a["annotations"], key=key), sorted(b["annotations"], key=key)
    assert [key(x) for x in la] == [key(x) for x in lb] and len(la) >= 15
    assert max(abs(u - v) for x, y in zip(la, lb) for u, v in zip(x["bbox"], y["bbox"])) <= 2
    run = json.loads((out / "run.json").read_text())
    assert run["backend"] == "torch" and run["device"] == "cpu" and run["batch_size"] == 4


@pytest.mark.parametrize("mode", ["none", "alpha", "gaussian", "box", "poisson"])
def test_torch_pixels_match_the_numpy_compositor_within_rounding(mode):
    job = cfg(f"scene.blend.modes=[{mode}]", "scene.canvas=[96,128]")
    assets = build_assets(job)
    scenes = [p for i in range(6) for _, p in scene_variants(job, assets, i)]
    comp = composite_native_batch(scenes, assets.instances, assets.backgrounds)
    for n, p in enumerate(scenes):
        ref = apply_scene(p, assets.instances, assets.backgrounds)
        got = (comp.image[n].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.int16)
        diff = np.abs(got - to_uint8(ref.image).astype(np.int16))
        assert diff.max() <= 2 and diff.mean() < 0.05, (mode, n, diff.max(), diff.mean())
        vis = comp.visible_area[n, : len(p.objects)].tolist()
        for o, v in zip(ref.objects, vis):
            assert abs(o.visible_area - v) <= 0.03 * o.visible_area + 2


def test_a_scene_does_not_depend_on_the_batch_it_is_in():
    job = cfg("scene.blend.modes=[none,alpha,motion,poisson]", "scene.blend.per=object", "scene.photometric.enabled=true")
    assets = build_assets(job)
    scenes = [p for i in range(6) for _, p in scene_variants(job, assets, i)]
    batch = composite_native_batch(scenes, assets.instances, assets.backgrounds)
    for n, p in enumerate(scenes):
        one = composite_native_batch([p], assets.instances, assets.backgrounds)
        assert torch.equal(one.image[0], batch.image[n])
        assert torch.equal(one.visible[0], batch.visible[n, : one.visible.shape[1]])


class Abort(Exception):
    pass


def test_resume_after_an_abort_is_byte_identical(runs, tmp_path):
    _, uninterrupted = runs
    out = tmp_path / "resumed"

    def stop(done, total):
        if done >= 5:
            raise Abort

    with pytest.raises(Abort):
        run_paste_torch(cfg(), out, device="cpu", batch_size=4, progress=stop)
    done = read_shards(out / WORK_DIR)  # scenes recorded; the next batch's images may be on disk already
    assert 4 <= len(done) < 10 and not (out / "annotations.json").exists()
    (out / done[min(done)]["images"][0]["file_name"]).unlink()  # a lost image is made again
    summary = run_paste_torch(cfg(), out, device="cpu", batch_size=4, resume=True)
    assert 0 < summary.rendered < 10
    assert files(out) == files(uninterrupted)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no CUDA GPU is available"):
        run_paste_torch(cfg(), tmp_path / "out", device="cuda")
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="cpu or cuda"):
        resolve_device("meta")


def test_the_command_line_runs_the_torch_path_and_refuses_a_missing_gpu(tmp_path):
    from typer.testing import CliRunner

    from synthloop.cli import app

    cli = CliRunner()
    job = tmp_path / "job.yaml"
    job.write_text("seed: 0\n")
    r = cli.invoke(app, ["paste", str(job), *TINY[:4], "num_images=3", "--out", str(tmp_path / "cpu"), "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "cpu" / "run.json").read_text())["backend"] == "torch"
    if not torch.cuda.is_available():
        r = cli.invoke(app, ["paste", str(job), *TINY[:4], "--out", str(tmp_path / "gpu"), "--device", "cuda", "--quiet"])
        assert r.exit_code != 0 and "no CUDA GPU is available" in r.output
