"""``run_terse_detection_job``: end to end on a tiny COCO set made here, resume, and bad input."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from synthloop.data.coco import mask_bbox, write_coco
from synthloop.data.dataset import Annotation, Category, Dataset, ImageEntry
from synthloop.data.images import encode_png
from synthloop.errors import ConfigError, InputError
from synthloop.jobs.terse_detection import load_detector, run_terse_detection_job
from synthloop.jobs.terse_detection_config import TerseDetectionJobConfig, load_job_config
from synthloop.jobs.terse_detection_setup import load_job_data
from synthloop.utils.atomic import atomic_write_bytes

SIZE = 64
CATEGORIES = [Category(1, "square", "shape"), Category(2, "disc", "shape")]

# a loop small enough for a test: 1 cycle, 2 S steps, a handful of composites, a tiny detector
TINY_LOOP = {
    "cycles": 1,
    "s_steps": 2,
    "batch_size": 2,
    "hard_per_cycle": 3,
    "max_candidates_per_cycle": 4,
    "t_epochs": 1,
    "t_batch_size": 4,
    "num_objects": 2,
    "fg_size": 24,
    "s_channels": [4, 8],
    "s_branch_channels": 8,
    "s_input_size": 32,
    "d_width": 0.125,
}
TINY_MODEL = {"name": "small_fcos", "args": {"width": 4, "fpn_channels": 32, "head_convs": 1}}


def make_tiny_coco(root: Path, *, n: int = 8, empty: tuple[int, ...] = (7,), seed: int = 0) -> Path:
    """``n`` 64x64 PNGs of coloured squares (category 1) and discs (2) on flat backgrounds, exact
    masks; the images in ``empty`` hold no object. Returns the annotations file."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        img = np.empty((SIZE, SIZE, 3), np.uint8)
        img[:] = rng.integers(0, 120, 3)
        anns = []
        if i not in empty:
            for k, cat in enumerate((1, 2) if i % 2 == 0 else (2,)):
                m = np.zeros((SIZE, SIZE), np.uint8)
                cx, cy, r = 16 + 30 * k + int(rng.integers(-3, 4)), 20 + int(rng.integers(0, 24)), int(rng.integers(7, 11))
                if cat == 1:
                    cv2.rectangle(m, (cx - r, cy - r), (cx + r, cy + r), 1, -1)
                else:
                    cv2.circle(m, (cx, cy), r, 1, -1)
                mask = m.astype(bool)
                img[mask] = rng.integers(140, 256, 3)
                anns.append(Annotation(cat, mask_bbox(mask), mask=mask))
        name = f"images/{i:02d}.png"
        atomic_write_bytes(root / name, encode_png(img))
        images.append(ImageEntry(i + 1, name, SIZE, SIZE, anns))
    return write_coco(Dataset(root=root, categories=list(CATEGORIES), images=images), root, copy_images=False)


def job_config(tmp_path: Path, **changes) -> TerseDetectionJobConfig:
    """A tiny job on a tiny data set (written once per test folder)."""
    ann = tmp_path / "data" / "annotations.json"
    if not ann.is_file():
        make_tiny_coco(tmp_path / "data")
    data = {
        "seed": 3,
        "image_size": SIZE,
        "real": {"annotations": str(ann)},
        "backgrounds": ["noise", "gradient"],
        "model": TINY_MODEL,
        "baseline": {"epochs": 1, "batch_size": 4},
        "loop": dict(TINY_LOOP),
        "eval_batch_size": 8,
        "report": {"samples_per_cycle": 3, "real_samples": 2, "scale": 1},
    }
    for key, value in changes.items():
        cur = data
        *path, last = key.split("__")
        for p in path:
            cur = cur.setdefault(p, {})
        cur[last] = value
    return TerseDetectionJobConfig.model_validate(data)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("job")
    cfg = job_config(tmp)
    seen: list[str] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a module fixture runs before conftest's per-test single-thread fixture
    try:
        result = run_terse_detection_job(cfg, tmp / "out", progress=lambda task, done, total: seen.append(task))
    finally:
        torch.set_num_threads(threads)
    return cfg, result, tmp, seen


def test_every_output_exists(finished_run):
    _, result, tmp, seen = finished_run
    out = tmp / "out"
    for name in (
        "config.resolved.yaml",
        "run.json",
        "baseline.pt",
        "loop/checkpoint.pt",
        "synthetic/annotations.json",
        "model.pt",
        "model.json",
        "metrics.json",
        "report.html",
    ):
        assert (out / name).is_file(), name
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 3 and run["loop_seed"] == 3 and run["synthloop_version"] and "git_commit" in run and run["finished"]
    assert {"baseline training", "baseline evaluation", "final evaluation"} <= set(seen) and any(t.startswith("cycle 1") for t in seen)
    assert len(result.history) == 1 and result.synthetic_images == result.history[0]["kept_total"] > 0
    for ap in (result.baseline_ap, result.final_ap):
        assert set(ap) == {"ap50", "ap60", "ap70", "ap80", "ap"} and all(0.0 <= v <= 1.0 for v in ap.values())


def test_resolved_config_loads_again(finished_run):
    cfg, _, tmp, _ = finished_run
    again = load_job_config(tmp / "out" / "config.resolved.yaml")
    assert again == cfg
    first = (tmp / "out" / "config.resolved.yaml").read_text().splitlines()[0]
    assert first.startswith("# synthloop ") and "git commit" in first and "seed 3" in first


def test_synthetic_coco_loads_with_pycocotools_and_replays(finished_run):
    from pycocotools.coco import COCO

    from synthloop.loops.terse_detection import replay_scene

    _, result, tmp, _ = finished_run
    syn = tmp / "out" / "synthetic"
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(syn / "annotations.json"))
    assert len(coco.getImgIds()) == result.synthetic_images
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"square", "disc"}
    first = coco.loadImgs(coco.getImgIds()[0])[0]
    assert Image.open(syn / first["file_name"]).size == (SIZE, SIZE)
    params = first["attributes"]["params"]
    assert params["meta"]["cycle"] == 1 and len(params["objects"]) == TINY_LOOP["num_objects"] and params["version"] == 2
    # per-image params replay the written image (8-bit PNG of the same pixels)
    data = load_job_data(load_job_config(tmp / "out" / "config.resolved.yaml"))
    scene = replay_scene(params, data.foregrounds, data.backgrounds, data.label_map)
    written = torch.from_numpy(np.array(Image.open(syn / first["file_name"]).convert("RGB"))).permute(2, 0, 1).float() / 255
    assert torch.allclose(scene.image, written, atol=1 / 255 + 1e-6)


def test_report_has_the_ap_table_and_images(finished_run):
    _, result, tmp, _ = finished_run
    page = (tmp / "out" / "report.html").read_text()
    for text in ("AP50", "AP80", "AP[.5:.95]", "baseline", "fine-tuned", "Hardness", "Cycle 1", "green = detected", "Losses"):
        assert text in page, text
    assert page.count('<img alt="') >= 4  # histogram, cycle grid, evaluation grid, loss curves
    assert f"{100 * result.final_ap['ap50']:.2f}" in page
    assert 'src="http' not in page and "<link" not in page  # self-contained
    evaluated = json.loads((tmp / "out" / "metrics.json").read_text())["eval_images"]
    assert evaluated > 0 and f"({evaluated} images)" in page  # the report says how many images were scored
    assert "<th>eval set</th>" not in page and 'alt="hardness vs plausibility"' not in page  # one set: the plain table; no teacher: no plausibility


def test_metrics_without_eval_set_or_teacher(finished_run):
    """No eval set: the real set is the one named set; no teacher: plausibility is not measured by default."""
    _, result, tmp, _ = finished_run
    metrics = json.loads((tmp / "out" / "metrics.json").read_text())
    assert list(metrics["eval_sets"]) == ["real"] and metrics["eval_sets"]["real"]["finetuned"] == metrics["final_ap"] == result.final_ap
    assert metrics["eval_sets"]["real"]["baseline"] == metrics["baseline"]["ap"] and "plausibility" not in metrics


def test_a_limit_that_cuts_a_users_set_is_announced(tmp_path):
    from synthloop.jobs.terse_detection_config import DatasetSource
    from synthloop.jobs.terse_detection_setup import _read_source

    ann = make_tiny_coco(tmp_path / "data", n=4)
    with pytest.warns(UserWarning, match=r"eval\.limit keeps 2 of the 4 images"):
        ds, _ = _read_source(DatasetSource(annotations=ann, limit=2), "eval")
    assert len(ds.images) == 2


def test_model_rebuilds_from_its_json(finished_run):
    _, _, tmp, _ = finished_run
    target = load_detector(tmp / "out")
    spec = json.loads((tmp / "out" / "model.json").read_text())
    assert spec["num_classes"] == 3 and spec["category_names"] == ["square", "disc"]
    saved = torch.load(tmp / "out" / "model.pt", weights_only=True)["model"]
    for k, v in target.model.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_non_empty_output_needs_resume(finished_run):
    cfg, _, tmp, _ = finished_run
    with pytest.raises(InputError, match="--resume"):
        run_terse_detection_job(cfg, tmp / "out")


def test_resume_with_another_config_names_the_key(finished_run):
    cfg, _, tmp, _ = finished_run
    other = cfg.model_copy(update={"baseline": cfg.baseline.model_copy(update={"lr": 0.5})})
    with pytest.raises(InputError, match="baseline.lr"):
        run_terse_detection_job(other, tmp / "out", resume=True)


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    cfg = job_config(tmp_path, loop__cycles=2)

    class Stop(Exception):
        pass

    def stop_in_cycle_2(task, done, total):
        if task.startswith("cycle 2"):
            raise Stop

    with pytest.raises(Stop):
        run_terse_detection_job(cfg, tmp_path / "a", progress=stop_in_cycle_2)
    assert (tmp_path / "a" / "loop" / "checkpoint.pt").is_file() and not (tmp_path / "a" / "report.html").exists()
    resumed = run_terse_detection_job(cfg, tmp_path / "a", resume=True)
    straight = run_terse_detection_job(cfg, tmp_path / "b")
    assert len(resumed.history) == 2
    assert resumed.final_ap == straight.final_ap and resumed.baseline_ap == straight.baseline_ap
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert len(run["resumed"]) == 1


# -------------------------------------------------------------------------------------------- bad input


def _edit_json(path: Path, fn) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def test_image_without_objects_is_a_negative(tmp_path):
    data = load_job_data(job_config(tmp_path))
    assert data.real.targets[7]["boxes"].shape == (0, 4) and data.real.targets[7]["labels"].numel() == 0
    assert data.real.images.shape == (8, 3, SIZE, SIZE)


def test_box_slightly_outside_is_clipped(tmp_path):
    cfg = job_config(tmp_path)
    ann = tmp_path / "data" / "annotations.json"

    def stretch(doc):
        doc["annotations"][0]["bbox"] = [-0.5, -0.5, 20.0, 20.0]

    _edit_json(ann, stretch)
    boxes = load_job_data(cfg).real.targets[0]["boxes"]
    assert float(boxes.min()) == 0.0 and torch.allclose(boxes[0], torch.tensor([0.0, 0.0, 19.5, 19.5]))


def test_box_outside_the_image_is_rejected_naming_it(tmp_path):
    cfg = job_config(tmp_path)
    ann = tmp_path / "data" / "annotations.json"
    _edit_json(ann, lambda doc: doc["annotations"][2].update(bbox=[50.0, 50.0, 30.0, 30.0]))
    with pytest.raises(InputError, match=r"annotations\[2\]\.bbox") as e:
        load_job_data(cfg)
    assert str(ann) in str(e.value) and "outside" in str(e.value)


def test_box_too_small_after_resizing_is_rejected(tmp_path):
    cfg = job_config(tmp_path, image_size=16)
    ann = tmp_path / "data" / "annotations.json"
    _edit_json(ann, lambda doc: doc["annotations"][1].update(bbox=[10.0, 10.0, 2.0, 2.0]))
    with pytest.raises(InputError, match=r"annotation id \d+ .*less than 1 px") as e:
        load_job_data(cfg)
    assert e.value.file == str(ann)


def test_foreground_category_missing_from_the_dataset(tmp_path):
    folder = tmp_path / "cutouts"
    for name in ("square", "triangle"):
        rgba = np.zeros((20, 20, 4), np.uint8)
        rgba[2:18, 2:18] = 200
        atomic_write_bytes(folder / name / "a.png", encode_png(rgba))
    cfg = job_config(tmp_path, foregrounds={"source": "rgba_folder", "folder": str(folder)})
    with pytest.raises(InputError, match="'triangle'") as e:
        load_job_data(cfg)
    assert e.value.field == "foregrounds.categories" and str(folder) in str(e.value)


def test_foreground_coco_with_an_unknown_category_id(tmp_path):
    other = tmp_path / "other"
    make_tiny_coco(other, n=2, empty=())
    _edit_json(
        other / "annotations.json",
        lambda doc: [doc["categories"][1].update(id=9), *(a.update(category_id=9) for a in doc["annotations"] if a["category_id"] == 2)],
    )
    cfg = job_config(tmp_path, foregrounds={"source": "coco", "coco": {"json": str(other / "annotations.json")}})
    with pytest.raises(InputError, match=r"'disc' \(id 9\)"):
        load_job_data(cfg)


def test_num_classes_mismatch(tmp_path):
    cfg = job_config(tmp_path, model={**TINY_MODEL, "num_classes": 5})
    with pytest.raises(InputError, match="num_classes 5 .* 2 categories") as e:
        run_terse_detection_job(cfg, tmp_path / "out")
    assert e.value.field == "model.num_classes"
    assert not (tmp_path / "out").exists()  # nothing written


def test_checkpoint_of_another_model_is_named(tmp_path):
    from synthloop.models.detection import SmallDetector

    ckpt = tmp_path / "other.pt"
    torch.save(SmallDetector(num_classes=5, image_size=SIZE, width=4, fpn_channels=32, head_convs=1).state_dict(), ckpt)
    cfg = job_config(tmp_path, model={**TINY_MODEL, "checkpoint": str(ckpt)})
    with pytest.raises(InputError, match="do not fit the model") as e:
        run_terse_detection_job(cfg, tmp_path / "out")
    assert e.value.file == str(ckpt) and e.value.field == "model.checkpoint"


def test_missing_and_corrupt_annotations(tmp_path):
    missing = tmp_path / "nope" / "annotations.json"
    with pytest.raises(InputError, match="not found") as e:
        load_job_data(job_config(tmp_path, real={"annotations": str(missing)}))
    assert str(missing.parent) in str(e.value)
    ann = tmp_path / "data" / "annotations.json"
    ann.write_text('{"images": [')
    with pytest.raises(InputError, match="invalid JSON") as e:
        load_job_data(job_config(tmp_path))
    assert e.value.file == str(ann)


def test_config_typos_name_the_file_and_key(tmp_path):
    make_tiny_coco(tmp_path / "data")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"real": {"annotations": "data/annotations.json"}, "loop": {"cyclez": 2}}))
    with pytest.raises(ConfigError, match=r"loop\.cyclez: unknown key") as e:
        load_job_config(path)
    assert str(path) in str(e.value) and "cycles" in str(e.value)
    path.write_text(yaml.safe_dump({"real": {"annotations": "data/annotations.json"}, "foregrund": {}}))
    with pytest.raises(ConfigError, match="foregrund") as e:
        load_job_config(path)
    assert str(path) in str(e.value)
    path.write_text(yaml.safe_dump({"real": {"annotations": "data/annotations.json"}}))
    with pytest.raises(ConfigError, match=r"baseline\.epochz"):
        load_job_config(path, ["baseline.epochz=3"])
    # relative paths are relative to the config file, and the loop's seed follows the job's
    cfg = load_job_config(path, ["seed=7"])
    assert cfg.real.annotations == (tmp_path / "data" / "annotations.json").resolve() and cfg.loop.seed == 7


def test_ap_is_measured_in_each_images_own_pixels(tmp_path):
    """At image_size 32 (half the data's 64 px), detections on the resized images are scaled back:
    an oracle that returns the resized ground truth scores AP 1; one shifted by 4 resized px
    (8 original px) loses AP at the strict thresholds."""
    from synthloop.jobs.terse_detection_setup import evaluate

    data = load_job_data(job_config(tmp_path, image_size=32))
    loaded = data.real
    assert loaded.scales[0] == (0.5, 0.5) and loaded.images.shape[-1] == 32

    class Oracle:
        model = torch.nn.Linear(1, 1)
        label_map = data.label_map

        def __init__(self, shift: float):
            self.shift = shift
            self.calls = 0

        def predict(self, images):
            out = []
            for _ in range(images.shape[0]):
                t = loaded.targets[self.calls]
                self.calls += 1
                out.append({"boxes": t["boxes"] + self.shift, "labels": t["labels"], "scores": torch.ones(t["labels"].shape[0])})
            return out

    exact = evaluate(Oracle(0.0), loaded, batch_size=3)
    assert exact["ap50"] == pytest.approx(1.0) and exact["ap"] == pytest.approx(1.0)
    shifted = evaluate(Oracle(4.0), loaded, batch_size=3)
    assert shifted["ap80"] < 0.5 and shifted["ap"] < exact["ap"]


def test_eval_set_may_lack_a_category_but_not_add_one(tmp_path):
    from synthloop.jobs.terse_detection_setup import evaluate

    other = tmp_path / "eval"
    make_tiny_coco(other, n=3, empty=())

    def only_squares(doc):
        doc["categories"] = [c for c in doc["categories"] if c["id"] == 1]
        doc["annotations"] = [a for a in doc["annotations"] if a["category_id"] == 1]

    _edit_json(other / "annotations.json", only_squares)
    cfg = job_config(tmp_path, eval={"annotations": str(other / "annotations.json")})
    data = load_job_data(cfg)
    assert [c.name for c in data.eval.dataset.categories] == ["square", "disc"]

    class DiscsEverywhere:  # detections of a category the eval set does not have are no error
        model = torch.nn.Linear(1, 1)
        label_map = data.label_map

        def predict(self, images):
            return [{"boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0]]), "labels": torch.tensor([2]), "scores": torch.tensor([0.9])} for _ in images]

    assert evaluate(DiscsEverywhere(), data.eval)["ap"] == 0.0
    _edit_json(other / "annotations.json", lambda doc: doc["categories"].append({"id": 5, "name": "star"}))
    with pytest.raises(InputError, match="'star'") as e:
        load_job_data(cfg)
    assert e.value.file == str(other / "annotations.json")


def test_model_by_torchvision_name_and_bad_model_specs(tmp_path):
    from torchvision.models.detection.ssd import SSD

    from synthloop.models.build import build_detector as build_model

    model = build_model({"name": "ssdlite320_mobilenet_v3_large", "args": {"detections_per_img": 20}}, 3, (64, 64))
    assert isinstance(model, SSD) and model.detections_per_img == 20 and model.transform.fixed_size == (64, 64)
    with pytest.raises(InputError, match="unknown torchvision detection model 'yolo9'"):
        build_model({"name": "yolo9"}, 3, (64, 64))
    with pytest.raises(InputError, match="widht") as e:
        build_model({"name": "small_fcos", "args": {"widht": 8}}, 3, (64, 64))
    assert e.value.field == "model.args.widht" and "width" in str(e.value)
    with pytest.raises(InputError, match="'score_tresh'"):  # torchvision would ignore it silently
        build_model({"name": "ssdlite320_mobilenet_v3_large", "args": {"score_tresh": 0.1}}, 3, (64, 64))


def test_start_from_a_previous_runs_model(finished_run):
    """model.checkpoint = a finished run's model.pt: the new job's model starts from those weights
    (a plain torch.save d state dict works too)."""
    from synthloop.jobs.terse_detection_setup import build_target as _build_target

    _, _, tmp, _ = finished_run
    saved = torch.load(tmp / "out" / "model.pt", weights_only=True)["model"]
    torch.save(saved, tmp / "plain.pt")
    for ckpt in (tmp / "out" / "model.pt", tmp / "plain.pt"):
        cfg = job_config(tmp, model={**TINY_MODEL, "checkpoint": str(ckpt)}, baseline={"epochs": 0})
        target = _build_target(cfg, load_job_data(cfg).label_map, "job.yaml")
        assert all(torch.equal(v, saved[k]) for k, v in target.model.state_dict().items())


def test_plausibility_options_from_the_command_line(tmp_path):
    make_tiny_coco(tmp_path / "data")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"real": {"annotations": "data/annotations.json"}}))
    cfg = load_job_config(
        path,
        [
            "loop.objective=teacher",
            "loop.teacher=ema",
            "loop.constraints=true",
            "loop.s_noise_dim=8",
            "loop.s_replay=2",
            "loop.mix_random=0.25",
            "loop.worst_of_k=3",
        ],
    )
    loop = cfg.loop
    assert (loop.objective, loop.teacher, loop.constraints, loop.s_noise_dim, loop.s_replay, loop.mix_random, loop.worst_of_k) == (
        "teacher",
        "ema",
        True,
        8,
        2,
        0.25,
        3,
    )
    with pytest.raises(ConfigError, match=r"loop\.objective"):
        load_job_config(path, ["loop.objective=teachr"])
    with pytest.raises(ConfigError, match=r"loop\.mix_random"):
        load_job_config(path, ["loop.mix_random=1.5"])
