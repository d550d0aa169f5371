import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from paste_helpers import output_files, tiny_config
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from synthloop.compose.apply import apply_scene
from synthloop.compose.params import SceneParams
from synthloop.data.builtin import MnistDigits
from synthloop.errors import ConfigError, InputError
from synthloop.jobs import paste_worker
from synthloop.jobs.paste import run_paste, scene_variants
from synthloop.jobs.paste_assets import build_assets
from synthloop.jobs.paste_config import load_paste_config
from synthloop.jobs.replay import replay_image


def cfg(*extra):
    return tiny_config(6, *extra)


files = output_files


@pytest.fixture(scope="module")
def one_shot(tmp_path_factory):
    out = tmp_path_factory.mktemp("one_shot")
    run_paste(cfg(), out)
    return out


def test_layout_and_records(one_shot):
    names = sorted(p.name for p in (one_shot / "images").iterdir())
    assert names == [f"{i:06d}.jpg" for i in range(6)]
    assert not (one_shot / ".work").exists()
    params = [json.loads(line) for line in (one_shot / "params.jsonl").read_text().splitlines()]
    assert [p["id"] for p in params] == list(range(6)) and params[0]["file_name"] == "images/000000.jpg"
    run = json.loads((one_shot / "run.json").read_text())
    assert run["seed"] == 0 and run["finished"] and run["started"] and "synthloop_version" in run
    stored = yaml.safe_load((one_shot / "config.yaml").read_text())
    assert stored["num_images"] == 6 and stored["scene"]["canvas"] == [48, 64]
    assert load_paste_config(one_shot / "config.yaml") == cfg()


def test_coco_output_agrees_with_the_rendered_objects(one_shot, capsys):
    coco = COCO(str(one_shot / "annotations.json"))
    job = cfg()
    assets = build_assets(job)
    params = {json.loads(line)["id"]: json.loads(line)["params"] for line in (one_shot / "params.jsonl").read_text().splitlines()}
    n_objects = 0
    for img in coco.loadImgs(coco.getImgIds()):
        assert (img["width"], img["height"]) == (64, 48)
        assert img["attributes"]["params"] == params[img["id"]]
        # what was stored is exactly SceneParams.to_dict() of the scene sampled again from its seed
        ((_, fresh),) = scene_variants(job, assets, img["id"])
        assert fresh.to_dict() == params[img["id"]]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        result = apply_scene(SceneParams.from_dict(params[img["id"]]), assets.instances, assets.backgrounds)
        objs = result.labelled(job.scene.min_visibility)
        assert len(anns) == len(objs)
        for ann, obj in zip(anns, objs):
            with warnings.catch_warnings():  # pycocotools vs numpy 2's copy keyword
                warnings.simplefilter("ignore", DeprecationWarning)
                m = coco.annToMask(ann).astype(bool)
            assert np.array_equal(m, obj.mask)
            assert ann["area"] == m.sum() == obj.visible_area
            x, y, w, h = ann["bbox"]
            assert [x, y, x + w, y + h] == list(obj.box)
            assert list(mask_utils.toBbox(ann["segmentation"])) == ann["bbox"]
            assert ann["iscrowd"] == 0 and ann["category_id"] == obj.category_id
            attrs = ann["attributes"]
            assert attrs["visibility"] == pytest.approx(obj.visibility, abs=1e-6)
            assert attrs["visibility"] >= job.scene.min_visibility
            assert attrs["truncation"] == pytest.approx(obj.truncation, abs=1e-6)
            assert attrs["occlusion"] == pytest.approx(obj.occlusion, abs=1e-6)
            n_objects += 1
    assert n_objects >= 6


def test_two_workers_write_the_same_dataset(one_shot, tmp_path):
    run_paste(cfg(), tmp_path / "two", workers=2)
    assert files(tmp_path / "two") == files(one_shot)


def test_killed_run_resumes_to_the_one_shot_output(one_shot, tmp_path, monkeypatch):
    out = tmp_path / "crash"
    real = paste_worker.encode
    calls = {"n": 0}

    def crash_on_fourth(fmt, quality, img):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("simulated crash")
        return real(fmt, quality, img)

    monkeypatch.setattr(paste_worker, "encode", crash_on_fourth)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_paste(cfg(), out)
    # nothing half-written: three images, three shard lines, no final files, no temp files
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000.jpg", "000001.jpg", "000002.jpg"]
    assert not (out / "annotations.json").exists() and not (out / "params.jsonl").exists()
    (shard,) = (out / ".work").glob("shard-*.jsonl")
    assert len(shard.read_text().splitlines()) == 3
    # a writer killed mid-line leaves a torn last line; an image may exist without its record
    with open(shard, "a") as fh:
        fh.write('{"index": 5, "images": [{"id"')
    (out / "images" / ".000004.jpg.dead.tmp").write_bytes(b"partial")
    monkeypatch.setattr(paste_worker, "encode", real)
    with pytest.raises(InputError, match="not empty"):
        run_paste(cfg(), out)
    summary = run_paste(cfg(), out, resume=True)
    assert summary.rendered == 3
    assert files(out) == files(one_shot)
    assert len(json.loads((out / "run.json").read_text())["resumed"]) == 1
    # resuming a finished job does nothing
    assert run_paste(cfg(), out, resume=True).rendered == 0


def test_resume_refuses_another_config(one_shot, tmp_path):
    out = tmp_path / "r"
    run_paste(cfg("num_images=2"), out)
    with pytest.raises(InputError, match=r"different configuration \(changed: num_images: 2 -> 3, scene.objects: .* -> \[1, 1\]\)") as e:
        run_paste(cfg("num_images=3", "scene.objects=[1,1]"), out, resume=True)
    assert e.value.field == "num_images" and e.value.file.endswith("config.yaml")


def test_overwrite_replaces_a_previous_job_only(tmp_path):
    out = tmp_path / "o"
    run_paste(cfg("num_images=3"), out)
    (out / "notes.txt").write_text("mine")
    run_paste(cfg("num_images=2"), out, overwrite=True)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000.jpg", "000001.jpg"]
    assert (out / "notes.txt").read_text() == "mine"


def test_all_modes_writes_one_layout_per_blend_mode(tmp_path):
    out = tmp_path / "m"
    run_paste(cfg("num_images=2", "scene.blend.modes=[none,gaussian,motion]", "scene.blend.all_modes=true"), out)
    params = [json.loads(line) for line in (out / "params.jsonl").read_text().splitlines()]
    assert [p["file_name"] for p in params[:3]] == ["images/000000_none.jpg", "images/000000_gaussian.jpg", "images/000000_motion.jpg"]
    assert [p["id"] for p in params] == list(range(6))
    layouts = [[o["affine"] for o in p["params"]["objects"]] for p in params[:3]]
    assert layouts[0] == layouts[1] == layouts[2]
    assert [{o["blend"]["mode"] for o in p["params"]["objects"]} for p in params[:3]] == [{"none"}, {"gaussian"}, {"motion"}]
    images = [(out / p["file_name"]).read_bytes() for p in params[:3]]
    assert len(set(images)) == 3


def test_png_output_replays_pixel_for_pixel(tmp_path):
    out = tmp_path / "png"
    run_paste(cfg("num_images=3", "image_format=png", "backgrounds.pool=2", "scene.blend.modes=[alpha,poisson,pyramid]"), out)
    for image_id in range(3):
        r = replay_image(out, image_id, save_to=tmp_path / "re.png")
        assert r.identical and r.max_abs_diff == 0 and r.labels_identical
        assert (tmp_path / "re.png").read_bytes() == (out / r.file_name).read_bytes()
    bg = json.loads((out / "params.jsonl").read_text().splitlines()[0])["params"]["background"]
    assert bg["kind"] == "pooled" and bg["source"]["kind"] in ("gradient", "checkers")
    # a changed pixel is caught
    from synthloop.data.images import encode_png, load_image

    px = load_image(out / "images/000001.png")
    px[0, 0] ^= 1
    (out / "images/000001.png").write_bytes(encode_png(px))
    r = replay_image(out, 1)
    assert not r.identical and not r.bytes_identical and not r.pixels_identical and r.max_abs_diff == 1


def test_jpeg_replay_is_byte_identical(one_shot):
    r = replay_image(one_shot, 4)
    assert r.identical and r.bytes_identical and r.labels_identical
    assert 0 < r.max_abs_diff < 128  # JPEG loss against the raw render, not zero
    with pytest.raises(InputError, match="no image with id 99"):
        replay_image(one_shot, 99)


def test_yolo_and_voc_outputs(tmp_path):
    out = tmp_path / "f"
    run_paste(cfg("num_images=2", "formats=[coco,yolo,voc]"), out)
    coco = json.loads((out / "annotations.json").read_text())
    n = len(coco["annotations"])
    labels = sorted((out / "yolo" / "labels").rglob("*.txt"))
    assert len(labels) == 2 and sum(len(p.read_text().splitlines()) for p in labels) == n
    assert yaml.safe_load((out / "yolo" / "data.yaml").read_text())["nc"] == 10
    xmls = sorted((out / "voc" / "Annotations").glob("*.xml"))
    assert len(xmls) == 2 and sum(p.read_text().count("<object>") for p in xmls) == n


def test_bad_config_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"field scene\.blend\.sigma: unknown key; valid keys here: all_modes, box_kernel"):
        cfg("scene.blend.sigma=2")
    with pytest.raises(ConfigError, match="only one instance source"):
        cfg("instances.builtin=mnist", "instances.rgba_folder=x")
    with pytest.raises(ConfigError, match="coco must be among the formats"):
        cfg("formats=[yolo]")
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_image: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: field num_image: unknown key; valid keys here: backgrounds, chunk_size"):
        load_paste_config(bad)


def test_coco_config_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "job.yaml"
    f.write_text("instances:\n  coco:\n    json: data/a.json\n    images: data\nbackgrounds: [my_photos, noise]\n")
    c = load_paste_config(f)
    assert c.instances.coco.json_file == tmp_path / "sub" / "data" / "a.json"
    assert c.instances.coco.images == tmp_path / "sub" / "data"
    assert c.instances.builtin is None
    assert c.backgrounds.sources == [str(tmp_path / "sub" / "my_photos"), "noise"]


def test_mnist_digits_are_tinted_cutouts():
    digits = MnistDigits.load(7, limit=20)
    again = MnistDigits.load(7, limit=20)
    rgb, alpha = digits.arrays(3)
    assert rgb.shape == (28, 28, 3) and alpha.shape == (28, 28)
    assert np.array_equal(rgb, again.arrays(3)[0])  # the tint is fixed by the seed
    assert (rgb == rgb[0, 0]).all() and rgb[0, 0].max() >= 0.75  # one vivid colour
    assert not np.array_equal(MnistDigits.load(8, limit=20).arrays(3)[0], rgb)
    assert alpha.max() == 1.0 and alpha.min() == 0.0
    assert digits.category_of(3) == int(digits.labels[3]) + 1
    assert [c.name for c in digits.categories] == [str(d) for d in range(10)]


def test_mnist_tensors_match_arrays():
    digits = MnistDigits.load(0, limit=5)
    rgb, alpha = digits.tensor(2)
    assert rgb.shape == (3, 28, 28) and alpha.shape == (1, 28, 28)
    r, a = digits.arrays(2)
    assert np.array_equal(rgb.permute(1, 2, 0).numpy(), r) and np.array_equal(alpha[0].numpy(), a)
    rgb.zero_()  # the tensors are copies: the source is unchanged
    assert digits.arrays(2)[0].max() > 0


def test_instance_switching_job_on_a_coco_dataset(tmp_path):
    tiny = Path(__file__).resolve().parents[2] / "examples" / "data" / "tiny_coco"
    job = load_paste_config(
        None,
        [
            f"instances.coco.json={tiny / 'annotations.json'}",
            f"instances.coco.images={tiny}",
            "scene.placement.strategy=psis",
            "num_images=3",
            "scene.blend.modes=[none]",
        ],
    )
    run_paste(job, tmp_path / "psis")
    doc = json.loads((tmp_path / "psis" / "annotations.json").read_text())
    assert {c["name"] for c in doc["categories"]} == {"disc", "square", "triangle"}
    assert all((im["width"], im["height"]) == (128, 96) for im in doc["images"])  # the dataset's own canvas
    assert doc["annotations"] and replay_image(tmp_path / "psis", 2).identical
    with pytest.raises(ConfigError, match="needs a segmented COCO dataset"):
        cfg("scene.placement.strategy=psis")
    with pytest.raises(InputError, match="no such file or folder") as err:
        run_paste(cfg(f"instances.coco.json={tmp_path / 'nope.json'}", "instances.builtin=null"), tmp_path / "bad")
    assert err.value.field == "instances.coco.json" and not (tmp_path / "bad").exists()


def _bad_inputs(tmp_path):
    """Three inputs that only fail once assets are read: an empty cut-out folder, a truncated JPEG
    background, a COCO file naming a missing image."""
    from PIL import Image

    empty = tmp_path / "empty_fg"
    empty.mkdir()
    bgs = tmp_path / "bgs"
    bgs.mkdir()
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(bgs / "a.jpg")
    (bgs / "a.jpg").write_bytes((bgs / "a.jpg").read_bytes()[:200])  # truncated
    coco = tmp_path / "coco"
    coco.mkdir()
    ann = {
        "images": [{"id": 1, "file_name": "missing.png", "width": 20, "height": 20}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 8, 8], "segmentation": [[2, 2, 10, 2, 10, 10, 2, 10]], "area": 64, "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "box"}],
    }
    (coco / "annotations.json").write_text(json.dumps(ann))
    return {
        "empty foreground folder": ([f"instances.rgba_folder={empty}", "instances.builtin=null"], []),
        "truncated JPEG": ([f"backgrounds.sources=[{bgs}]"], []),
        "missing image": ([f"instances.coco.json={coco / 'annotations.json'}", "instances.builtin=null"], []),
    }


@pytest.mark.parametrize("case", ["empty foreground folder", "truncated JPEG", "missing image"])
def test_a_run_stopped_by_bad_input_leaves_nothing_behind(tmp_path, case):
    """After the error the corrected command runs in the same folder, no --overwrite needed."""
    overrides, _ = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    with pytest.raises(InputError):
        run_paste(cfg(*overrides), out)
    assert not out.exists() or not any(out.iterdir())
    run_paste(cfg("num_images=2"), out)  # the fixed command
    assert len(list((out / "images").iterdir())) == 2


def test_window_rle_equals_the_full_mask_encoding():
    from synthloop.jobs.paste import _rle, window_rle

    rng = np.random.default_rng(0)
    for _ in range(500):
        H, W = (int(v) for v in rng.integers(1, 30, 2))
        h, w = int(rng.integers(0, H + 1)), int(rng.integers(0, W + 1))
        y0, x0 = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
        win = rng.random((h, w)) < rng.random()
        full = np.zeros((H, W), bool)
        full[y0 : y0 + h, x0 : x0 + w] = win
        assert window_rle(win, (x0, y0), (H, W)) == _rle(full)


def test_run_indices_renders_any_split_of_the_scenes_the_same(one_shot, tmp_path):
    # the worker entry point other backends call: scenes in two calls, in reverse order, then finalize
    from synthloop.jobs.paste import finalize, run_indices
    from synthloop.jobs.paste_config import resolved_dict

    job = cfg()
    out = tmp_path / "split"
    (out / "images").mkdir(parents=True)
    (out / "config.yaml").write_bytes((one_shot / "config.yaml").read_bytes())
    data = resolved_dict(job)
    assert run_indices(data, str(out), [5, 3, 4]) == 3
    assert run_indices(data, str(out), [2, 0, 1, 0]) == 4  # a scene twice (a retried task) is harmless
    finalize(job, out)
    got = files(out)
    want = files(one_shot)
    assert {k: v for k, v in got.items() if k.startswith("images/")} == {k: v for k, v in want.items() if k.startswith("images/")}
    assert got["annotations.json"] == want["annotations.json"] and got["params.jsonl"] == want["params.jsonl"]
