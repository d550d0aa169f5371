from collections import OrderedDict
from functools import partial

import pytest
import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.ssd import SSD, SSDHead
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.ops import MultiScaleRoIAlign

from synthloop.data.dataset import Annotation, Category
from synthloop.errors import InputError
from synthloop.models import Target, create_model, freeze
from synthloop.models.detection import (
    DetectionTarget,
    LabelMap,
    SmallDetector,
    count_parameters,
    detection_mode,
    fit_transform,
    model_num_classes,
    torchvision_detector,
)

SIZE = 64
NUM_CLASSES = 4  # three categories + background
C = 32  # FCOS's head uses GroupNorm(32, C)


class TinyBackbone(nn.Module):
    """Two feature maps (stride 8 and 16) with BatchNorm, so frozen/unfrozen behaviour is visible."""

    def __init__(self, channels: int = C):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, channels, 3, 2, 1), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 2, 1), nn.ReLU(),
        )  # fmt: skip
        self.down = nn.Conv2d(channels, channels, 3, 2, 1)
        self.out_channels = channels

    def forward(self, x):
        f = self.body(x)
        return OrderedDict([("0", f), ("1", torch.relu(self.down(f)))])


def _faster_rcnn():
    return FasterRCNN(
        TinyBackbone(),
        num_classes=None,  # given by the box predictor
        rpn_anchor_generator=AnchorGenerator(((16,), (32,)), ((0.5, 1.0, 2.0),) * 2),
        box_roi_pool=MultiScaleRoIAlign(["0", "1"], 7, 2),
        box_head=TwoMLPHead(C * 49, 64),
        box_predictor=FastRCNNPredictor(64, NUM_CLASSES),
        rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
        box_batch_size_per_image=32,
    )  # fmt: skip


def _retinanet():
    return RetinaNet(TinyBackbone(), NUM_CLASSES, anchor_generator=AnchorGenerator(((16,), (32,)), ((0.5, 1.0, 2.0),) * 2))


def _fcos():
    anchors = AnchorGenerator(((8,), (16,)), ((1.0,),) * 2)
    return FCOS(TinyBackbone(), NUM_CLASSES, anchor_generator=anchors, head=FCOSHead(C, 1, NUM_CLASSES, num_convs=1))


def _ssd():
    anchors = DefaultBoxGenerator([[2], [2]])
    return SSD(TinyBackbone(), anchors, (300, 300), NUM_CLASSES, head=SSDHead([C, C], anchors.num_anchors_per_location(), NUM_CLASSES))


def _ssdlite():
    anchors = DefaultBoxGenerator([[2, 3], [2, 3]], min_ratio=0.2, max_ratio=0.95)
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    head = SSDLiteHead([C, C], anchors.num_anchors_per_location(), NUM_CLASSES, norm)
    return SSD(TinyBackbone(), anchors, (320, 320), NUM_CLASSES, head=head, image_mean=[0.5] * 3, image_std=[0.5] * 3)


ARCHITECTURES = {
    "faster_rcnn": (_faster_rcnn, {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}),
    "retinanet": (_retinanet, {"classification", "bbox_regression"}),
    "fcos": (_fcos, {"classification", "bbox_regression", "bbox_ctrness"}),
    "ssd": (_ssd, {"classification", "bbox_regression"}),
    "ssdlite": (_ssdlite, {"classification", "bbox_regression"}),
}


def _build(arch):
    torch.manual_seed(0)
    return ARCHITECTURES[arch][0]()


def _data(batch=2):
    g = torch.Generator().manual_seed(1)
    images = torch.rand(batch, 3, SIZE, SIZE, generator=g)
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [34.0, 30.0, 60.0, 62.0]]), "labels": torch.tensor([1, 3])},
        {"boxes": torch.tensor([[10.0, 10.0, 50.0, 36.0]]), "labels": torch.tensor([2])},
    ][:batch]
    return images, targets


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_loss_hardness_and_gradient_to_the_images(arch):
    model = _build(arch)
    target = DetectionTarget(model, NUM_CLASSES - 1, image_size=SIZE)
    images, targets = _data()
    images.requires_grad_(True)
    total, terms = target.loss_terms(images, targets, generator=torch.Generator().manual_seed(0))
    assert set(terms) == ARCHITECTURES[arch][1]
    assert torch.isfinite(total) and torch.allclose(total, sum(terms.values()))
    total.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    hardness = target.hardness(images.detach(), targets)
    assert [h.shape for h in hardness] == [(2,), (1,)]
    assert all(((h >= 0) & (h <= 1)).all() for h in hardness)
    hard = target.is_hard(images.detach(), targets)
    assert hard.dtype == torch.bool and hard.shape == (2,)
    # an untrained detector finds nothing confidently: every object is hard
    assert hard.all()


@pytest.mark.parametrize("arch", ["faster_rcnn", "ssd"])
def test_fitted_transform_does_not_resize(arch):
    model = _build(arch)
    fit_transform(model, SIZE)
    images, _ = _data()
    mean = torch.tensor(model.transform.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.transform.image_std).view(1, 3, 1, 1)
    for training in (True, False):
        with detection_mode(model, training):
            batched, _ = model.transform(list(images.unbind(0)))
        assert batched.tensors.shape == images.shape
        assert torch.allclose(batched.tensors, (images - mean) / std, atol=1e-6)
        assert batched.image_sizes == [(SIZE, SIZE)] * 2


def test_frozen_target_gives_a_loss_keeps_batchnorm_and_passes_gradient_to_images():
    model = _build("retinanet")
    target = DetectionTarget(model, NUM_CLASSES - 1, image_size=SIZE)
    bn = model.backbone.body[1]
    before = bn.running_mean.clone()
    images, targets = _data()
    images.requires_grad_(True)
    with freeze(model):
        loss_a = target.loss(images, targets)
        loss_a.backward()
        loss_b = target.loss(images, targets)
        assert not model.training and not bn.training and not model.transform.training
    assert torch.equal(bn.running_mean, before)  # eval-mode BatchNorm: statistics untouched
    assert torch.equal(loss_a, loss_b)  # and so the loss is a deterministic function of the images
    assert images.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    assert model.training  # restored by freeze's exit


def test_training_mode_updates_batchnorm_and_predict_leaves_modes_alone():
    model = _build("fcos").train()
    target = DetectionTarget(model, NUM_CLASSES - 1, image_size=SIZE)
    bn = model.backbone.body[1]
    before = bn.running_mean.clone()
    images, targets = _data()
    target.loss(images, targets).backward()
    assert not torch.equal(bn.running_mean, before)
    with torch.no_grad():
        dets = target.predict(images)
    assert model.training and model.transform.training
    assert set(dets[0]) == {"boxes", "labels", "scores"}


def test_image_without_objects():
    model = _build("faster_rcnn")
    target = DetectionTarget(model, NUM_CLASSES - 1, image_size=SIZE)
    images, targets = _data()
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    images.requires_grad_(True)
    loss = target.loss(images, targets, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    loss.backward()
    assert images.grad[1].abs().sum() > 0  # background-only images still train the classifier
    hardness = target.hardness(images.detach(), targets)
    assert hardness[1].shape == (0,)
    assert not target.is_hard(images.detach(), targets)[1]


def test_faster_rcnn_sampling_replays_from_the_generator_and_leaves_global_rng_alone():
    model = _build("faster_rcnn")
    target = DetectionTarget(model, NUM_CLASSES - 1, image_size=SIZE)
    images, targets = _data()
    state = torch.get_rng_state()
    a = target.loss_terms(images, targets, generator=torch.Generator().manual_seed(5))[1]
    b = target.loss_terms(images, targets, generator=torch.Generator().manual_seed(5))[1]
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_boxes_partly_outside_are_clipped():
    target = DetectionTarget(_build("fcos"), NUM_CLASSES - 1)
    images, _ = _data(1)
    checked = target.check_targets(images, [{"boxes": torch.tensor([[-5.0, 10.0, 20.0, 70.0]]), "labels": torch.tensor([1])}])
    assert checked[0]["boxes"].tolist() == [[0.0, 10.0, 20.0, SIZE]]
    assert checked[0]["labels"].dtype == torch.int64


@pytest.mark.parametrize(
    "boxes",
    [
        [[70.0, 10.0, 90.0, 30.0]],  # entirely right of the image
        [[0.1, 0.1, 0.4, 0.5]],  # normalised coordinates
        [[30.0, 30.0, 20.0, 40.0]],  # x1 < x0 (e.g. xywh passed as xyxy)
    ],
)
def test_boxes_without_area_inside_the_image_are_an_error(boxes):
    target = DetectionTarget(_build("fcos"), NUM_CLASSES - 1)
    images, _ = _data(1)
    with pytest.raises(InputError, match="xyxy in pixels") as exc:
        target.loss(images, [{"boxes": torch.tensor(boxes), "labels": torch.tensor([1])}])
    assert exc.value.field == "target.targets[0].boxes"


@pytest.mark.parametrize("label", [0, NUM_CLASSES])
def test_labels_outside_one_to_c_are_an_error(label):
    target = DetectionTarget(_build("retinanet"), NUM_CLASSES - 1)
    images, targets = _data()
    targets[1] = {"boxes": targets[1]["boxes"], "labels": torch.tensor([label])}
    with pytest.raises(InputError, match="0 is the background") as exc:
        target.hardness(images, targets)
    assert exc.value.field == "target.targets[1].labels"


def test_malformed_targets_are_errors():
    target = DetectionTarget(_build("fcos"), NUM_CLASSES - 1)
    images, targets = _data()
    with pytest.raises(InputError, match="2 images") as exc:
        target.loss(images, targets[:1])
    assert exc.value.field == "target.targets"
    with pytest.raises(InputError, match="'boxes' and 'labels'"):
        target.loss(images, [targets[0], {"boxes": targets[1]["boxes"]}])
    with pytest.raises(InputError, match="integer") as exc:
        target.loss(images, [targets[0], {"boxes": targets[1]["boxes"], "labels": torch.tensor([1.0])}])
    assert exc.value.field == "target.targets[1].labels"
    with pytest.raises(InputError, match=r"Tensor\[B, 3, H, W\]"):
        target.predict(images[:, :1])


def test_num_classes_mismatch_names_the_field():
    model = _build("ssd")
    assert model_num_classes(model) == NUM_CLASSES
    label_map = LabelMap.from_categories([Category(i, str(i)) for i in (1, 2, 3, 4, 5)])
    with pytest.raises(InputError, match=r"num_classes=4 .* 5 categories, which needs num_classes=6") as exc:
        DetectionTarget(model, label_map, name="teacher")
    assert exc.value.field == "teacher.num_classes"
    for arch in ARCHITECTURES:
        assert model_num_classes(_build(arch)) == NUM_CLASSES


def test_a_classifier_is_not_a_detection_model():
    with pytest.raises(InputError, match="not a torchvision detection model") as exc:
        DetectionTarget(nn.Linear(2, 2), 1)
    assert exc.value.field == "model"


class _FixedDetections(DetectionTarget):
    """The adapter with the model's detections replaced by given ones (to test the matching rule)."""

    def __init__(self, detections):
        super().__init__(_build("fcos"), NUM_CLASSES - 1)
        self.detections = detections

    def predict(self, images):
        return self.detections


def test_confidence_is_the_best_matching_detection_of_the_right_class():
    dets = {
        "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 11.0], [20.0, 20.0, 30.0, 30.0], [40.0, 40.0, 50.0, 50.0], [52.0, 40.0, 62.0, 50.0]]),
        "labels": torch.tensor([1, 1, 2, 3, 1]),
        "scores": torch.tensor([0.9, 0.7, 0.8, 0.95, 0.6]),
    }
    targets = [
        {
            "boxes": torch.tensor(
                [
                    [0.0, 0.0, 10.0, 10.0],  # two right-class matches: the best counts
                    [20.0, 20.0, 30.0, 30.0],  # matched box but the wrong class
                    [40.0, 40.0, 44.0, 44.0],  # right class nearby, IoU 0.16 < 0.5
                    [52.0, 40.0, 62.0, 50.0],  # exact match, low score
                ]
            ),
            "labels": torch.tensor([1, 1, 3, 1]),
        }
    ]
    target = _FixedDetections([dets])
    images = torch.zeros(1, 3, SIZE, SIZE)
    conf = target.confidence(images, targets)[0]
    assert torch.allclose(conf, torch.tensor([0.9, 0.0, 0.0, 0.6]))
    assert torch.allclose(target.hardness(images, targets)[0], torch.tensor([0.1, 1.0, 1.0, 0.4]))
    assert target.is_hard(images, targets).tolist() == [True]
    easy = [{"boxes": targets[0]["boxes"][:1], "labels": targets[0]["labels"][:1]}]
    assert target.is_hard(images, easy).tolist() == [False]
    assert target.is_hard(images, easy, threshold=0.95).tolist() == [True]


def test_label_map_sorts_by_category_id_and_names_unknown_categories():
    lm = LabelMap.from_categories([Category(90, "toothbrush"), Category(1, "person"), Category(3, "car")])
    assert lm.category_ids == (1, 3, 90) and lm.num_classes == 4
    assert [lm.label(c) for c in (1, 3, 90)] == [1, 2, 3]
    assert [lm.category_id(k) for k in (1, 2, 3)] == [1, 3, 90]
    anns = [Annotation(3, (10.0, 20.0, 5.0, 8.0)), Annotation(2, (0.0, 0.0, 4.0, 4.0))]
    with pytest.raises(InputError, match="category id 2 is not in the label map") as exc:
        lm.target(anns, where="images[4].annotations")
    assert exc.value.field == "images[4].annotations[1].category_id"
    t = lm.target(anns[:1] + [Annotation(90, (1.0, 1.0, 2.0, 2.0), iscrowd=1)])
    assert t["boxes"].tolist() == [[10.0, 20.0, 15.0, 28.0]] and t["labels"].tolist() == [2]  # crowd left out
    records = lm.to_coco(7, {"boxes": torch.tensor([[10.0, 20.0, 15.0, 28.0]]), "labels": torch.tensor([3]), "scores": torch.tensor([0.5])})
    assert records == [{"image_id": 7, "category_id": 90, "bbox": [10.0, 20.0, 5.0, 8.0], "score": 0.5}]
    with pytest.raises(InputError, match="outside 1..3"):
        lm.category_id(0)
    with pytest.raises(InputError, match="duplicate"):
        LabelMap((1, 1), ("a", "b"))


def test_torchvision_builder_never_downloads_and_is_fitted():
    model = torchvision_detector("fasterrcnn_mobilenet_v3_large_320_fpn", NUM_CLASSES, image_size=(96, 128))
    assert model_num_classes(model) == NUM_CLASSES
    assert model.transform.min_size == (96,) and model.transform.max_size == 128
    with pytest.raises(InputError, match="never downloaded") as exc:
        torchvision_detector("fcos_resnet50_fpn", NUM_CLASSES, weights="DEFAULT")
    assert exc.value.field == "weights"
    with pytest.raises(InputError, match="unknown torchvision detection model"):
        torchvision_detector("resnet18", NUM_CLASSES)


def test_fit_transform_sets_ssd_fixed_size_as_width_height():
    model = fit_transform(_build("ssd"), (48, 64))
    assert model.transform.fixed_size == (64, 48)
    images = torch.rand(1, 3, 48, 64)
    batched, _ = model.transform(list(images))
    assert batched.tensors.shape[-2:] == (48, 64)


def test_small_detector_trains_and_predicts():
    torch.manual_seed(0)
    model = create_model("small_detector")
    assert isinstance(model, SmallDetector)
    assert count_parameters(model) == 830_704
    features = model.backbone(torch.zeros(1, 3, 128, 128))
    assert {k: tuple(v.shape) for k, v in features.items()} == {"p3": (1, 64, 16, 16), "p4": (1, 64, 8, 8)}
    target = DetectionTarget(model.train(), 10)
    assert isinstance(target, Target)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 128, 128, generator=g, requires_grad=True)
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 14.0, 40.0], [60.0, 50.0, 100.0, 100.0]]), "labels": torch.tensor([2, 10])}] * 2
    total, terms = target.loss_terms(images, targets)
    assert set(terms) == {"classification", "bbox_regression", "bbox_ctrness"}
    total.backward()
    assert images.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        out = target.predict(images.detach())
    assert len(out) == 2 and out[0]["boxes"].shape[1] == 4
    with pytest.raises(ValueError, match="multiple of 32"):
        SmallDetector(fpn_channels=48)
    with pytest.raises(ValueError, match="one size per pyramid level"):
        SmallDetector(point_sizes=(4, 8, 16))
