import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from synthloop.data.coco import write_coco_json
from synthloop.data.dataset import Annotation, Category, Dataset, ImageEntry
from synthloop.data.images import encode_png
from synthloop.errors import InputError
from synthloop.metrics.detection import coco_ap, detect, hard_positive_fraction, object_hardness
from synthloop.models.detection import DetectionTarget, LabelMap, SmallDetector

CATEGORIES = [Category(1, "a"), Category(5, "b"), Category(9, "unused")]
BOXES = {  # image id -> [(category, xywh)]
    1: [(1, (10.0, 10.0, 20.0, 20.0)), (5, (50.0, 40.0, 20.0, 20.0))],
    2: [(1, (30.0, 60.0, 20.0, 20.0))],
}


def _dataset(root="."):
    images = [
        ImageEntry(id=i, file_name=f"{i}.png", width=128, height=128, annotations=[Annotation(c, b) for c, b in anns])
        for i, anns in BOXES.items()
    ]
    return Dataset(root=root, categories=list(CATEGORIES), images=images)


def _detections(shift=0.0, score=0.9):
    return [
        {"image_id": i, "category_id": c, "bbox": [b[0] + shift, b[1], b[2], b[3]], "score": score}
        for i, anns in BOXES.items()
        for c, b in anns
    ]


def test_perfect_detections_score_one():
    result = coco_ap(_dataset(), _detections())
    assert result == pytest.approx({"ap50": 1.0, "ap60": 1.0, "ap70": 1.0, "ap80": 1.0, "ap": 1.0})


def test_shifted_boxes_pass_the_low_thresholds_only():
    # a 20 px box shifted 4 px sideways has IoU 16/24 = 0.667: it counts at 0.5, 0.55, 0.6 and
    # 0.65, and misses from 0.7 up, so AP[.5:.95] is 4 of the 10 thresholds
    result = coco_ap(_dataset(), _detections(shift=4.0))
    assert result == pytest.approx({"ap50": 1.0, "ap60": 1.0, "ap70": 0.0, "ap80": 0.0, "ap": 0.4})
    # a 2 px shift (IoU 0.818) survives up to 0.8
    result = coco_ap(_dataset(), _detections(shift=2.0))
    assert result == pytest.approx({"ap50": 1.0, "ap60": 1.0, "ap70": 1.0, "ap80": 1.0, "ap": 0.7})


def test_ap_drops_monotonically_with_the_threshold_for_mixed_shifts():
    dets = _detections()
    dets[0]["bbox"][0] += 7.0  # IoU 0.48: a miss everywhere (and a false positive)
    dets[0]["score"] = 0.3
    dets[1]["bbox"][0] += 3.0  # IoU 0.74
    dets[2]["bbox"][0] += 1.0  # IoU 0.905
    r = coco_ap(_dataset(), dets)
    assert r["ap50"] >= r["ap60"] >= r["ap70"] >= r["ap80"]
    # category a: its best detection is right, so precision 1 up to recall 0.5, i.e. on 51 of the
    # 101 recall points; category b: perfect up to IoU 0.74
    half = 51 / 101
    assert r["ap50"] == pytest.approx((half + 1.0) / 2)
    assert r["ap70"] == pytest.approx((half + 1.0) / 2)
    assert r["ap80"] == pytest.approx(half / 2)


def test_matches_cocoeval_summarize_on_noisy_detections(tmp_path):
    rng = np.random.default_rng(0)
    dets = []
    for d in _detections():
        for _ in range(3):
            jitter = rng.uniform(-4, 4, size=4)
            dets.append({**d, "bbox": list(np.maximum(np.array(d["bbox"]) + jitter, 1.0)), "score": float(rng.uniform())})
    dets.append({"image_id": 2, "category_id": 5, "bbox": [0.0, 0.0, 30.0, 30.0], "score": 0.95})  # false positive
    path = tmp_path / "gt.json"
    write_coco_json(path, _dataset().images, CATEGORIES)
    ours = coco_ap(path, dets)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        ev = COCOeval(gt, gt.loadRes(dets), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ours["ap"] == pytest.approx(ev.stats[0])
    assert ours["ap50"] == pytest.approx(ev.stats[1])
    assert ours == coco_ap(_dataset(), dets)  # a Dataset and its JSON file agree
    assert 0.0 < ours["ap"] < ours["ap50"] < 1.0


def test_a_category_without_ground_truth_does_not_dilute_ap():
    assert coco_ap(_dataset(), _detections())["ap50"] == 1.0  # "unused" (id 9) has no objects


def test_a_confident_false_positive_lowers_ap():
    dets = _detections() + [{"image_id": 1, "category_id": 1, "bbox": [90.0, 90.0, 20.0, 20.0], "score": 0.99}]
    assert coco_ap(_dataset(), dets)["ap50"] < 1.0


def test_no_detections_scores_zero():
    assert coco_ap(_dataset(), []) == {"ap50": 0.0, "ap60": 0.0, "ap70": 0.0, "ap80": 0.0, "ap": 0.0}


@pytest.mark.parametrize(
    "change,field",
    [
        ({"category_id": 2}, "detections[0].category_id"),
        ({"image_id": 3}, "detections[0].image_id"),
        ({"bbox": [1.0, 2.0, -3.0, 4.0]}, "detections[0].bbox"),
        ({"bbox": [1.0, 2.0, 3.0]}, "detections[0].bbox"),
        ({"score": float("nan")}, "detections[0].score"),
    ],
)
def test_bad_detections_name_the_field(change, field):
    dets = _detections()
    dets[0] = {**dets[0], **change}
    with pytest.raises(InputError) as exc:
        coco_ap(_dataset(), dets)
    assert exc.value.field == field


def test_ground_truth_without_objects_or_file_is_an_error(tmp_path):
    empty = Dataset(root=".", categories=list(CATEGORIES), images=[ImageEntry(1, "1.png", 128, 128)])
    with pytest.raises(InputError, match="no objects"):
        coco_ap(empty, [])
    with pytest.raises(InputError, match="not found"):
        coco_ap(tmp_path / "missing.json", [])


def test_hard_positive_fraction():
    assert hard_positive_fraction(torch.tensor([0.1, 0.6, 0.4, 0.9])) == 0.5
    assert hard_positive_fraction([0.1, 0.6, 0.4, 0.9], threshold=0.95) == 1.0
    assert hard_positive_fraction([0.5]) == 0.0  # "below 0.5" is strict
    with pytest.raises(InputError, match="no confidences"):
        hard_positive_fraction([])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        hard_positive_fraction([1.5])


class _FixedDetections(DetectionTarget):
    """A real adapter whose model's detections are replaced by given ones, per image id order."""

    def __init__(self, detections):
        super().__init__(SmallDetector(num_classes=3, image_size=32), LabelMap.from_categories(CATEGORIES[:2]))
        self.detections = detections

    def predict(self, images):
        out, self.detections = self.detections[: images.shape[0]], self.detections[images.shape[0] :]
        return out


def test_object_hardness_is_flat_in_image_then_object_order():
    det = {"boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.8])}
    none = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0], [0.0, 0.0, 8.0, 8.0]]), "labels": torch.tensor([1, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
        {"boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0]]), "labels": torch.tensor([2])},
    ]
    images = torch.zeros(3, 3, 32, 32)
    target = _FixedDetections([det, none, det])
    h = object_hardness(target, images, targets, batch_size=2)
    assert torch.allclose(h, torch.tensor([0.2, 1.0, 1.0]))  # matched; no detection; wrong class
    assert 1.0 - h[0] == pytest.approx(0.8)
    assert hard_positive_fraction(1.0 - h) == pytest.approx(2 / 3)


def test_object_hardness_of_a_real_model_restores_its_mode():
    torch.manual_seed(0)
    model = SmallDetector(num_classes=3, image_size=64).train()
    target = DetectionTarget(model, 2)
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])}] * 3
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    a = object_hardness(target, images, targets, batch_size=1)
    b = object_hardness(target, images, targets, batch_size=8)
    assert a.shape == (3,) and torch.equal(a, b) and ((a >= 0) & (a <= 1)).all()
    assert model.training and all(p.requires_grad for p in model.parameters())
    with pytest.raises(InputError, match="2 targets for 3 images"):
        object_hardness(target, images, targets[:2])


def test_detect_maps_labels_back_to_category_ids(tmp_path):
    for i in BOXES:
        (tmp_path / f"{i}.png").write_bytes(encode_png(np.zeros((128, 128, 3), np.uint8)))
    dataset = _dataset(tmp_path)
    det = {"boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0]]), "labels": torch.tensor([2]), "scores": torch.tensor([0.7])}
    records = detect(_FixedDetections([det, det]), dataset, batch_size=1)
    assert records == [
        {"image_id": 1, "category_id": 5, "bbox": [1.0, 2.0, 10.0, 20.0], "score": pytest.approx(0.7)},
        {"image_id": 2, "category_id": 5, "bbox": [1.0, 2.0, 10.0, 20.0], "score": pytest.approx(0.7)},
    ]
