"""Object detectors as TERSE targets: an adapter for torchvision detection models, and a small detector.

:class:`DetectionTarget` gives any torchvision detection model (Faster R-CNN and the other
``GeneralizedRCNN`` models, SSD, SSDlite, RetinaNet, FCOS) the interface a TERSE loop needs:

- :meth:`~DetectionTarget.loss`: the model's training loss dict summed (TERSE eq. 1: a
  classification term over every anchor/proposal plus a localisation term over the positive
  ones), differentiable with respect to the input images, so the gradient reaches a synthesizer
  that made them. :meth:`~DetectionTarget.loss_terms` returns the dict as well.
- :meth:`~DetectionTarget.hardness`: per object, ``1 - c`` where the confidence ``c`` is the highest
  score among the model's detections *of the object's class* with IoU >= 0.5 to the object's box
  (``c = 0`` when there is none). This is TERSE section 4.2's ``1 - p(person)`` generalised to
  several objects and classes.
- :meth:`~DetectionTarget.is_hard`: TERSE A.2's hard-example rule, "keep composites whose target
  probability for the pasted object is below 0.5".

Inputs everywhere: ``images`` ``Tensor[B, 3, H, W]`` float in [0, 1] and ``targets``, a list of
``B`` dicts with ``"boxes"`` ``Tensor[N_i, 4]`` (xyxy, pixels, float) and ``"labels"``
``Tensor[N_i]`` (int64, ``1..C``). Label 0 is the background in torchvision, so a model for ``C``
categories has ``num_classes = C + 1``.

Label mapping (:class:`LabelMap`): the categories of a data set, sorted by COCO category id, get
labels ``1..C`` in that order; ``label(category_id)`` and ``category_id(label)`` convert. COCO's 80
categories (ids 1..90 with gaps) therefore map to labels 1..80 (``num_classes = 81``, not the 91 of
torchvision's COCO-pretrained models, which use the raw ids). The digit-scene categories (ids
1..10, names "0".."9") map to labels 1..10 unchanged.

Boxes partly outside the image are clipped to it (an object cut by the image border is a normal
object); a box with less than 1 px of width or height left after clipping (entirely outside the
image, degenerate, or in normalised rather than pixel coordinates) is an :class:`InputError`.

Train-time and test-time behaviour: torchvision detection models return losses when
``model.training`` is set and detections otherwise, and the same flag also switches BatchNorm and
dropout. A frozen target (see :func:`synthloop.models.freeze`) is in ``eval()`` mode, yet S needs
its *loss*. The adapter therefore switches only the detection logic (the model class itself, its
``transform``, RPN and RoI heads) to training behaviour for :meth:`~DetectionTarget.loss` and to
inference behaviour for :meth:`~DetectionTarget.predict`, and leaves every other submodule in the
mode it was in: a frozen target's BatchNorm keeps its running statistics while it computes a loss.

Resizing: torchvision's ``GeneralizedRCNNTransform`` normalises and resizes every image (to 800 px
for R-CNNs, 300/320 for SSD). :func:`fit_transform` sets its sizes to the data size so nothing is
resized (SSD's fixed size included); the normalisation and the zero-padding to a multiple of 32
are plain differentiable tensor ops, so gradients reach the images either way.

No weights are ever downloaded: :func:`torchvision_detector` builds torchvision's models with
``weights=None, weights_backbone=None``.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOS, FCOSHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, box_iou

from synthloop.data.dataset import Annotation, Category, Dataset
from synthloop.errors import InputError

DETECTION_MODEL_TYPES: tuple[type[nn.Module], ...] = (GeneralizedRCNN, SSD, RetinaNet, FCOS)
"""torchvision detection model classes the adapter accepts (SSDlite is an :class:`SSD`)."""

# modules whose forward branches on ``self.training`` for detection logic (losses vs detections,
# proposal sampling, random resize); everything else keeps its own train/eval mode
_DETECTION_LOGIC: tuple[type[nn.Module], ...] = DETECTION_MODEL_TYPES + (GeneralizedRCNNTransform, RegionProposalNetwork, RoIHeads)

MIN_BOX_SIZE = 1.0
"""Smallest width/height in pixels a target box may have after clipping to the image."""

Size = tuple[int, int]


# --------------------------------------------------------------------------------------------
# labels


@dataclass(frozen=True)
class LabelMap:
    """COCO category ids <-> torchvision labels ``1..C`` (0 is the background).

    ``category_ids[k - 1]`` is the category of label ``k``; build it with :meth:`from_categories`
    (sorted by id) so every data set with the same categories gets the same labels.
    """

    category_ids: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.category_ids:
            raise InputError("a label map needs at least one category", field="categories")
        if len(self.names) != len(self.category_ids):
            raise InputError(f"{len(self.category_ids)} category ids but {len(self.names)} names", field="categories")
        if len(set(self.category_ids)) != len(self.category_ids):
            raise InputError(f"duplicate category ids in {list(self.category_ids)}", field="categories")

    @classmethod
    def from_categories(cls, categories: Sequence[Category]) -> LabelMap:
        """Labels ``1..C`` for ``categories`` in order of their COCO id."""
        cats = sorted(categories, key=lambda c: int(c.id))
        return cls(tuple(int(c.id) for c in cats), tuple(str(c.name) for c in cats))

    @property
    def num_categories(self) -> int:
        return len(self.category_ids)

    @property
    def num_classes(self) -> int:
        """torchvision's ``num_classes``: the categories plus the background."""
        return len(self.category_ids) + 1

    @property
    def categories(self) -> list[Category]:
        return [Category(id=i, name=n) for i, n in zip(self.category_ids, self.names)]

    def label(self, category_id: int, *, field: str = "category_id") -> int:
        """The label ``1..C`` of a COCO category id (``InputError`` naming ``field`` if unknown)."""
        try:
            return self.category_ids.index(int(category_id)) + 1
        except ValueError:
            raise InputError(
                f"category id {category_id} is not in the label map (known ids: {list(self.category_ids)})", field=field
            ) from None

    def category_id(self, label: int) -> int:
        """The COCO category id of a label ``1..C``."""
        if not 1 <= int(label) <= len(self.category_ids):
            raise InputError(f"label {label} is outside 1..{len(self.category_ids)}", field="labels")
        return self.category_ids[int(label) - 1]

    def target(self, annotations: Sequence[Annotation], *, where: str = "annotations") -> dict[str, torch.Tensor]:
        """A torchvision target dict from COCO annotations (``xywh`` -> ``xyxy``, category -> label).

        Crowd annotations are left out (COCO evaluation ignores them too).
        """
        boxes, labels = [], []
        for j, ann in enumerate(annotations):
            if ann.iscrowd:
                continue
            x, y, w, h = (float(v) for v in ann.bbox)
            boxes.append([x, y, x + w, y + h])
            labels.append(self.label(ann.category_id, field=f"{where}[{j}].category_id"))
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
        }

    def to_coco(self, image_id: int, detections: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
        """COCO result records (``image_id, category_id, bbox`` xywh, ``score``) of one image's
        torchvision detections (``boxes`` xyxy, ``labels``, ``scores``).

        Detections of label 0 or of labels beyond the map cannot come from a model whose
        ``num_classes`` matches the map and raise :class:`InputError`.
        """
        boxes = detections["boxes"].detach().cpu().double().reshape(-1, 4)
        out = []
        for (x0, y0, x1, y1), label, score in zip(boxes.tolist(), detections["labels"].tolist(), detections["scores"].tolist()):
            out.append({"image_id": int(image_id), "category_id": self.category_id(label), "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})
        return out


# --------------------------------------------------------------------------------------------
# model plumbing


def model_num_classes(model: nn.Module) -> int:
    """torchvision ``num_classes`` (background included) a detection model predicts.

    Raises:
        InputError: ``model`` is not one of :data:`DETECTION_MODEL_TYPES`, or its class predictor
            is not a torchvision one.
    """
    if isinstance(model, GeneralizedRCNN):
        cls_score = getattr(getattr(model.roi_heads, "box_predictor", None), "cls_score", None)
        if isinstance(cls_score, nn.Linear):
            return int(cls_score.out_features)
    elif isinstance(model, (RetinaNet, FCOS)):
        n = getattr(model.head.classification_head, "num_classes", None)
        if n is not None:
            return int(n)
    elif isinstance(model, SSD):
        n = getattr(model.head.classification_head, "num_columns", None)
        if n is not None:
            return int(n)
    else:
        kinds = ", ".join(t.__name__ for t in DETECTION_MODEL_TYPES)
        raise InputError(f"{type(model).__name__} is not a torchvision detection model ({kinds})", field="model")
    raise InputError(f"cannot read the number of classes of {type(model).__name__}'s class predictor", field="model")


def _as_size(image_size: int | Sequence[int]) -> Size:
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    h, w = (int(s) for s in image_size)
    if h < 1 or w < 1:
        raise ValueError(f"image_size must be positive, got {tuple(image_size)}")
    return h, w


def fit_transform(model: nn.Module, image_size: int | Sequence[int]) -> nn.Module:
    """Configure ``model.transform`` so images of ``image_size`` (``(H, W)`` or a side) are not resized.

    Sets ``min_size = (min(H, W),)`` and ``max_size = max(H, W)`` (scale factor exactly 1) and, for
    SSD-style transforms with a fixed size, ``fixed_size`` to the data size (torchvision stores
    it as ``(W, H)``). Returns ``model``.
    """
    h, w = _as_size(image_size)
    t = getattr(model, "transform", None)
    if not isinstance(t, GeneralizedRCNNTransform):
        raise InputError(f"{type(model).__name__} has no torchvision GeneralizedRCNNTransform to configure", field="model")
    t.min_size = (min(h, w),)
    t.max_size = max(h, w)
    if t.fixed_size is not None:
        t.fixed_size = (w, h)
    return model


@contextlib.contextmanager
def detection_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Within the block, the detection logic of ``model`` returns losses (``training=True``) or
    detections (``False``); BatchNorm, dropout and every other submodule keep their mode."""
    saved = [(m, m.training) for m in model.modules() if isinstance(m, _DETECTION_LOGIC)]
    try:
        for m, _ in saved:
            m.training = training
        yield model
    finally:
        for m, flag in saved:
            m.training = flag


@contextlib.contextmanager
def _random_from(generator: torch.Generator | None, device: torch.device) -> Iterator[None]:
    """Make torchvision's internal draws (Faster R-CNN's proposal sampler, the transform's size
    choice) come from ``generator``: they use torch's global generator and take no generator
    argument, so the global state is forked, seeded from ``generator`` and restored afterwards."""
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()].manual_seed(seed)
        yield


# --------------------------------------------------------------------------------------------
# the adapter


class DetectionTarget:
    """Adapter making a torchvision detection ``model`` a TERSE target (see the module docstring).

    Args:
        model: a torchvision detection model (:data:`DETECTION_MODEL_TYPES`).
        label_map: the data's categories (or an ``int``: the number of categories ``C``, labels
            ``1..C``). The model's ``num_classes`` must be ``C + 1``.
        image_size: when given, :func:`fit_transform` configures the model for this data size.
        iou_threshold: IoU a detection needs with an object to count for its hardness.
        hard_threshold: an object is hard when its confidence is below this (TERSE A.2: 0.5).
        name: prefix of the ``field`` in error messages.

    Raises:
        InputError: ``model`` is not a torchvision detection model, or its ``num_classes`` does not
            match the label map (``field`` ``"<name>.num_classes"``).
    """

    def __init__(
        self,
        model: nn.Module,
        label_map: LabelMap | int,
        *,
        image_size: int | Sequence[int] | None = None,
        iou_threshold: float = 0.5,
        hard_threshold: float = 0.5,
        name: str = "target",
    ):
        if isinstance(label_map, int):
            label_map = LabelMap(tuple(range(1, label_map + 1)), tuple(str(i) for i in range(1, label_map + 1)))
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must lie in (0, 1], got {iou_threshold}")
        self.model = model
        self.label_map = label_map
        self.name = name
        self.iou_threshold = float(iou_threshold)
        self.hard_threshold = float(hard_threshold)
        n = model_num_classes(model)
        if n != label_map.num_classes:
            raise InputError(
                f"the model predicts num_classes={n} (background included) but the label map has "
                f"{label_map.num_categories} categories, which needs num_classes={label_map.num_classes}",
                field=f"{name}.num_classes",
            )
        if image_size is not None:
            fit_transform(model, image_size)

    @property
    def num_classes(self) -> int:
        return self.label_map.num_classes

    # ---------------------------------------------------------------- validation

    def _check_images(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise InputError(f"images must be a Tensor[B, 3, H, W], got {shape}", field=f"{self.name}.images")
        if not images.is_floating_point():
            raise InputError(f"images must be floats in [0, 1], got dtype {images.dtype}", field=f"{self.name}.images")

    def check_targets(self, images: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        """Validated copies of ``targets`` on the images' device: boxes float32 ``(N, 4)`` clipped to
        the image, labels int64 ``(N,)`` in ``1..C``.

        Raises:
            InputError: wrong number of targets, missing keys, bad shapes or dtypes, a label outside
                ``1..C``, or a box with under :data:`MIN_BOX_SIZE` px of width or height inside the image.
        """
        self._check_images(images)
        B, _, H, W = images.shape
        if len(targets) != B:
            raise InputError(f"got {len(targets)} targets for {B} images", field=f"{self.name}.targets")
        out = []
        for i, t in enumerate(targets):
            where = f"{self.name}.targets[{i}]"
            if not isinstance(t, Mapping) or "boxes" not in t or "labels" not in t:
                raise InputError("each target must be a dict with 'boxes' and 'labels'", field=where)
            boxes, labels = torch.as_tensor(t["boxes"]), torch.as_tensor(t["labels"])
            if boxes.numel() == 0:
                boxes = boxes.reshape(0, 4)
            if boxes.ndim != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
                raise InputError(f"boxes must be a float Tensor[N, 4] (xyxy), got {boxes.dtype} {tuple(boxes.shape)}", field=f"{where}.boxes")
            if labels.shape != (boxes.shape[0],) or labels.is_floating_point() or labels.dtype == torch.bool:
                raise InputError(f"labels must be an integer Tensor[{boxes.shape[0]}], got {labels.dtype} {tuple(labels.shape)}", field=f"{where}.labels")
            if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) >= self.num_classes):
                raise InputError(
                    f"labels must lie in 1..{self.num_classes - 1} (0 is the background), got {labels.tolist()}",
                    field=f"{where}.labels",
                )
            if not bool(torch.isfinite(boxes).all()):
                raise InputError("boxes must be finite", field=f"{where}.boxes")
            clipped = torch.stack([boxes[:, 0].clamp(0, W), boxes[:, 1].clamp(0, H), boxes[:, 2].clamp(0, W), boxes[:, 3].clamp(0, H)], 1)
            small = ((clipped[:, 2] - clipped[:, 0]) < MIN_BOX_SIZE) | ((clipped[:, 3] - clipped[:, 1]) < MIN_BOX_SIZE)
            if bool(small.any()):
                k = int(small.nonzero()[0])
                raise InputError(
                    f"box {k} {boxes[k].tolist()} keeps less than {MIN_BOX_SIZE:g} px of width or height inside the "
                    f"{W}x{H} image; boxes must be xyxy in pixels",
                    field=f"{where}.boxes",
                )
            out.append({"boxes": clipped.to(device=images.device, dtype=torch.float32), "labels": labels.to(device=images.device, dtype=torch.int64)})
        return out

    # ---------------------------------------------------------------- the target interface

    def loss_terms(
        self, images: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]], *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """TERSE eq. 1: ``(sum of the model's loss dict, the dict)``.

        Differentiable with respect to ``images`` (and the model's trainable parameters). Keys are
        the model's own (e.g. ``classification``/``bbox_regression`` for SSD and RetinaNet, plus
        ``bbox_ctrness`` for FCOS, ``loss_classifier``/``loss_box_reg``/``loss_objectness``/
        ``loss_rpn_box_reg`` for Faster R-CNN). ``generator`` makes Faster R-CNN's random proposal
        sampling replayable (other models draw nothing).
        """
        checked = self.check_targets(images, targets)
        with detection_mode(self.model, True), _random_from(generator, images.device):
            terms = self.model(list(images.unbind(0)), checked)
        total = torch.stack([v for v in terms.values()]).sum()
        return total, dict(terms)

    def loss(self, images: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]], *, generator: torch.Generator | None = None) -> torch.Tensor:
        """TERSE eq. 1 as a scalar (see :meth:`loss_terms`)."""
        return self.loss_terms(images, targets, generator=generator)[0]

    def predict(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """The model's detections, one dict per image: ``boxes`` ``Tensor[K, 4]`` (xyxy, pixels of
        the input), ``labels`` ``Tensor[K]`` (``1..C``), ``scores`` ``Tensor[K]``. Detections of
        label 0 (the background class) are dropped."""
        self._check_images(images)
        with detection_mode(self.model, False):
            dets = self.model(list(images.unbind(0)))
        # FCOS and RetinaNet score every class channel with a sigmoid, channel 0 (the background)
        # included, so an untrained or unsure model can return "background" detections; they are
        # no object of any category and are dropped here.
        return [{k: v[d["labels"] > 0] for k, v in d.items()} if bool((d["labels"] == 0).any()) else d for d in dets]

    def confidence(self, images: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]]) -> list[torch.Tensor]:
        """Per object, the highest score among detections of its class with IoU >= ``iou_threshold``
        to its box, 0 when there is none: one ``Tensor[N_i]`` in [0, 1] per image.

        Scores are the model's own: softmax class probabilities for Faster R-CNN and SSD, sigmoid
        scores for RetinaNet, ``sqrt(sigmoid(class) * sigmoid(centerness))`` for FCOS. Detections
        below the model's score threshold (``score_thresh``/``box_score_thresh``) or beyond its
        ``detections_per_img`` are not returned by torchvision and so count as 0. Differentiable
        with respect to ``images`` where the score is above 0 (wrap in ``torch.no_grad()`` for
        the numbers only).
        """
        checked = self.check_targets(images, targets)
        out = []
        for det, tgt in zip(self.predict(images), checked):
            n = tgt["boxes"].shape[0]
            if n == 0 or det["boxes"].shape[0] == 0:
                out.append(det["scores"].new_zeros(n))
                continue
            match = (box_iou(tgt["boxes"], det["boxes"]) >= self.iou_threshold) & (tgt["labels"][:, None] == det["labels"][None, :])
            scores = torch.where(match, det["scores"][None, :], torch.zeros((), dtype=det["scores"].dtype, device=det["scores"].device))
            out.append(scores.amax(1).clamp(0.0, 1.0))
        return out

    def hardness(self, images: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]]) -> list[torch.Tensor]:
        """Per-object hardness ``1 - confidence`` (TERSE section 4.2): one ``Tensor[N_i]`` in [0, 1] per image."""
        return [1.0 - c for c in self.confidence(images, targets)]

    def is_hard(self, images: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]], threshold: float | None = None) -> torch.Tensor:
        """TERSE A.2: ``Tensor[B]`` bool, True when some object of the image has confidence below
        ``threshold`` (default ``hard_threshold``, 0.5). Pass only the pasted objects as targets to
        judge a composite by them; an image without objects is never hard. No gradient."""
        th = self.hard_threshold if threshold is None else float(threshold)
        with torch.no_grad():
            conf = self.confidence(images, targets)
        return torch.tensor([is_hard_from_confidence(c, th) for c in conf], dtype=torch.bool, device=images.device)


def is_hard_from_confidence(confidence: torch.Tensor, threshold: float = 0.5) -> bool:
    """TERSE A.2's hard rule on one image's per-object confidences ``Tensor[N]``: some object below
    ``threshold`` (an image without objects is never hard)."""
    return bool((confidence < threshold).any())


# --------------------------------------------------------------------------------------------
# building models


def torchvision_detector(name: str, num_classes: int, image_size: int | Sequence[int] | None = None, **kwargs: Any) -> nn.Module:
    """A torchvision detection model by builder name (e.g. ``"fasterrcnn_mobilenet_v3_large_fpn"``,
    ``"ssdlite320_mobilenet_v3_large"``, ``"retinanet_resnet50_fpn"``, ``"fcos_resnet50_fpn"``),
    randomly initialised: ``weights=None, weights_backbone=None`` always, so nothing is downloaded.

    ``num_classes`` counts the background (``LabelMap.num_classes``); ``image_size`` configures
    the transform with :func:`fit_transform`; ``kwargs`` go to the builder.

    Raises:
        InputError: an unknown builder name, or ``kwargs`` asking for weights.
    """
    for key in ("weights", "weights_backbone"):
        if kwargs.get(key) is not None:
            raise InputError("pretrained weights are never downloaded; build with weights=None", field=key)
        kwargs.pop(key, None)
    builders = set(torchvision.models.list_models(module=torchvision.models.detection))
    if name not in builders:
        raise InputError(f"unknown torchvision detection model {name!r}; available: {', '.join(sorted(builders))}", field="model")
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    if image_size is not None:
        fit_transform(model, image_size)
    return model


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CompactBackbone(nn.Module):
    """Four stride-2 stages of two 3x3 conv-BN-ReLU layers each, and a two-level feature pyramid.

    Stage widths ``(w, 2w, 4w, 4w)`` at strides 2, 4, 8, 16; torchvision's
    :class:`~torchvision.ops.FeaturePyramidNetwork` merges the stride-8 and stride-16 stages
    top-down into ``out_channels`` maps.

    Shapes: ``Tensor[B, 3, H, W]`` -> ``OrderedDict`` ``{"p3": Tensor[B, out_channels, H/8, W/8],
    "p4": Tensor[B, out_channels, H/16, W/16]}``.
    """

    def __init__(self, width: int = 32, out_channels: int = 64):
        super().__init__()
        c1, c2, c3, c4 = width, 2 * width, 4 * width, 4 * width
        self.stage1 = nn.Sequential(_conv_bn(3, c1, 2), _conv_bn(c1, c1))
        self.stage2 = nn.Sequential(_conv_bn(c1, c2, 2), _conv_bn(c2, c2))
        self.stage3 = nn.Sequential(_conv_bn(c2, c3, 2), _conv_bn(c3, c3))
        self.stage4 = nn.Sequential(_conv_bn(c3, c4, 2), _conv_bn(c4, c4))
        self.fpn = FeaturePyramidNetwork([c3, c4], out_channels)
        self.out_channels = out_channels
        for stage in (self.stage1, self.stage2, self.stage3, self.stage4):
            for m in stage.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        c3 = self.stage3(self.stage2(self.stage1(x)))
        c4 = self.stage4(c3)
        return self.fpn(OrderedDict([("p3", c3), ("p4", c4)]))


class SmallDetector(FCOS):
    """A small FCOS detector that trains from scratch on a CPU in minutes (128x128 digit scenes).

    torchvision's :class:`~torchvision.models.detection.FCOS` with a :class:`CompactBackbone`
    (``width=32``: stages of 32-64-128-128 channels, a 64-channel feature pyramid at strides 8
    and 16) and a two-conv FCOS head (GroupNorm, as in FCOS). FCOS is anchor-free: every
    feature-map location is a point; an object is assigned to the points inside its box and
    within ``center_sampling_radius`` (1.5) point sizes of its centre, on the level whose range
    ``[4 * size, 8 * size]`` holds the point's largest distance to the box's edges (the first
    level's range starts at 0, the last one's has no end). Point sizes ``(8, 16)`` give the
    stride-8 level every distance up to 64 px, which covers objects of 10-60 px, and the
    stride-16 level larger ones; a stride of 8 puts a point inside boxes down to 8 px wide (99 %
    of the digit-scene boxes; MNIST "1"s are the narrow ones).

    Size and speed (defaults, 128x128 input, measured on this project's 2-core CPU machine with
    torch 2.14): 830,704 parameters; one epoch over 300 images in batches of 8 (38 AdamW steps)
    takes 4.3-4.5 s when the two cores are free (about 14 ms per image for forward, backward and
    update; it slowed to 40-110 s per epoch while other jobs loaded the machine). Trained from
    scratch on 300 digit-scene training images (AdamW, one-cycle learning rate peaking at 3e-3,
    weight decay 1e-4, batch 8, 16 epochs, about 70 s), it reaches AP50 0.62 / AP 0.42 on 200
    validation images (24 epochs with random colour-channel permutations: AP50 0.64).

    Args:
        num_classes: torchvision classes, background included (11 for the ten digits).
        image_size: ``(H, W)`` or a side; the transform is set not to resize it.
        width: backbone width (channels of the first stage).
        fpn_channels: feature-pyramid and head channels (a multiple of 32: the head uses
            ``GroupNorm(32, .)``).
        head_convs: conv layers in each FCOS head branch.
        point_sizes: the point size of each pyramid level (stride 8, stride 16).
        kwargs: passed to :class:`~torchvision.models.detection.FCOS` (``score_thresh`` (default
            here 0.05), ``nms_thresh``, ``detections_per_img``, ``center_sampling_radius`` ...).

    Shapes: training ``(list of Tensor[3, H, W], targets) -> loss dict``; inference
    ``list of Tensor[3, H, W] -> list of {boxes Tensor[K, 4], labels Tensor[K], scores Tensor[K]}``.
    """

    def __init__(
        self,
        num_classes: int = 11,
        image_size: int | Sequence[int] = 128,
        width: int = 32,
        fpn_channels: int = 64,
        head_convs: int = 2,
        point_sizes: Sequence[int] = (8, 16),
        **kwargs: Any,
    ):
        if fpn_channels % 32:
            raise ValueError(f"fpn_channels must be a multiple of 32 (GroupNorm(32, .) in the head), got {fpn_channels}")
        if len(point_sizes) != 2:
            raise ValueError(f"point_sizes needs one size per pyramid level (2), got {tuple(point_sizes)}")
        h, w = _as_size(image_size)
        backbone = CompactBackbone(width, fpn_channels)
        anchors = AnchorGenerator(sizes=tuple((int(s),) for s in point_sizes), aspect_ratios=((1.0,),) * len(point_sizes))
        head = FCOSHead(fpn_channels, anchors.num_anchors_per_location()[0], num_classes, num_convs=head_convs)
        kwargs.setdefault("score_thresh", 0.05)
        super().__init__(backbone, num_classes, min_size=min(h, w), max_size=max(h, w), anchor_generator=anchors, head=head, **kwargs)
        self.image_size = (h, w)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def dataset_targets(dataset: Dataset, label_map: LabelMap) -> list[dict[str, torch.Tensor]]:
    """One torchvision target dict per image of ``dataset`` (see :meth:`LabelMap.target`)."""
    return [label_map.target(im.annotations, where=f"images[{i}].annotations") for i, im in enumerate(dataset.images)]
