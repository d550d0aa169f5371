"""Detection metrics: COCO average precision at several IoU thresholds, per-object hardness, and the
fraction of hard positives (TERSE Table 4, section 4.2 and Figure 8).

AP comes from pycocotools' ``COCOeval`` (bbox, the standard 10 IoU thresholds 0.50:0.05:0.95,
101 recall points, up to 100 detections per image). ``COCOeval.accumulate`` fills
``eval["precision"]``, an array ``[T, R, K, A, M]``: IoU threshold ``T`` (``params.iouThrs``),
recall point ``R`` (``params.recThrs``), category ``K``, area range ``A`` (``params.areaRng``;
index 0 is "all") and max-detections setting ``M`` (``params.maxDets`` = 1, 10, 100). Entries are
-1 where a category has no ground truth. AP at one IoU threshold is the mean of
``precision[t, :, :, 0, -1]`` over the entries > -1, with ``t`` the index of that threshold in
``iouThrs``; AP[.5:.95] is the same mean over all thresholds. This is exactly what
``COCOeval.summarize`` prints as "AP @[ IoU=0.50 | area=all | maxDets=100 ]" and friends.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from synthloop.data.coco import coco_json
from synthloop.data.dataset import Dataset
from synthloop.data.tensors import load_images
from synthloop.errors import InputError
from synthloop.metrics.classification import model_device
from synthloop.models.detection import DetectionTarget
from synthloop.models.targets import freeze

AP_THRESHOLDS: dict[str, float] = {"ap50": 0.5, "ap60": 0.6, "ap70": 0.7, "ap80": 0.8}
"""Result key -> IoU threshold of the single-threshold APs :func:`coco_ap` reports."""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(float(v))


def _ground_truth(gt: Dataset | str | Path) -> tuple[dict[str, Any], str | None]:
    """The COCO document of ``gt`` and the file it came from (``None`` for an in-memory data set)."""
    if isinstance(gt, Dataset):
        return coco_json(gt.images, gt.categories), None
    path = Path(gt)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        raise InputError("ground-truth annotation file not found", file=path) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the ground truth as JSON: {exc}", file=path) from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
            raise InputError(f"a COCO instances file needs a list {key!r}", file=path, field=key)
    for i, ann in enumerate(doc["annotations"]):
        if isinstance(ann, dict) and "area" not in ann and isinstance(ann.get("bbox"), list) and len(ann["bbox"]) == 4:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])  # COCOeval's area ranges need it
        if isinstance(ann, dict):
            ann.setdefault("iscrowd", 0)
    return doc, str(path)


def _check_detections(detections: Sequence[Mapping[str, Any]], image_ids: set[int], category_ids: set[int]) -> list[dict[str, Any]]:
    out = []
    for i, d in enumerate(detections):
        where = f"detections[{i}]"
        if not isinstance(d, Mapping):
            raise InputError(f"expected a dict, got {type(d).__name__}", field=where)
        for key in ("image_id", "category_id", "bbox", "score"):
            if key not in d:
                raise InputError(f"missing {key!r}", field=f"{where}.{key}")
        if int(d["image_id"]) not in image_ids:
            raise InputError(f"image_id {d['image_id']} is not an image of the ground truth", field=f"{where}.image_id")
        if int(d["category_id"]) not in category_ids:
            raise InputError(f"category_id {d['category_id']} is not a category of the ground truth", field=f"{where}.category_id")
        box = list(d["bbox"])
        if len(box) != 4 or not all(_is_number(v) for v in box) or box[2] < 0 or box[3] < 0:
            raise InputError(f"bbox must be [x, y, w >= 0, h >= 0] (COCO xywh), got {d['bbox']!r}", field=f"{where}.bbox")
        if not _is_number(d["score"]):
            raise InputError(f"score must be a finite number, got {d['score']!r}", field=f"{where}.score")
        out.append({"image_id": int(d["image_id"]), "category_id": int(d["category_id"]), "bbox": [float(v) for v in box], "score": float(d["score"])})
    return out


def coco_ap(gt: Dataset | str | Path, detections: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """COCO box AP of ``detections`` against ``gt``.

    Args:
        gt: a :class:`Dataset` or the path of a COCO instances JSON file.
        detections: COCO result records ``{"image_id", "category_id", "bbox": [x, y, w, h],
            "score"}`` (e.g. from :meth:`LabelMap.to_coco` or :func:`detect`).

    Returns:
        ``{"ap50", "ap60", "ap70", "ap80", "ap"}``: AP at IoU 0.5, 0.6, 0.7, 0.8 and averaged over
        0.50:0.05:0.95, as fractions in [0, 1] (area "all", 100 detections per image), averaged
        over the categories that have ground truth. No detections at all gives 0.

    Raises:
        InputError: a detection names an unknown image or category, or has a malformed box or
            score; the ground truth has no (non-crowd) object to detect.
    """
    doc, file = _ground_truth(gt)
    image_ids = {int(im["id"]) for im in doc["images"]}
    category_ids = {int(c["id"]) for c in doc["categories"]}
    if not any(not a.get("iscrowd", 0) for a in doc["annotations"]):
        raise InputError("the ground truth has no objects, so AP is undefined", file=file, field="annotations")
    dets = _check_detections(detections, image_ids, category_ids)
    if not dets:
        return {**{k: 0.0 for k in AP_THRESHOLDS}, "ap": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = doc
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    area_all = ev.params.areaRngLbl.index("all")
    max_dets = len(ev.params.maxDets) - 1  # 100

    def mean_ap(t: slice | int) -> float:
        p = precision[t, :, :, area_all, max_dets]
        p = p[p > -1]
        return float(p.mean()) if p.size else 0.0

    thresholds = np.asarray(ev.params.iouThrs)
    out = {}
    for key, thr in AP_THRESHOLDS.items():
        (hits,) = np.nonzero(np.isclose(thresholds, thr))
        out[key] = mean_ap(int(hits[0]))
    out["ap"] = mean_ap(slice(None))
    return out


def detect(target: DetectionTarget, dataset: Dataset, *, batch_size: int = 32) -> list[dict[str, Any]]:
    """COCO result records of ``target``'s detections on every image of ``dataset``.

    The model runs frozen (inference behaviour, no gradients; its state is restored afterwards)
    on its own device, in batches. Category ids come from ``target.label_map``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = model_device(target.model)
    out: list[dict[str, Any]] = []
    with freeze(target.model), torch.no_grad():
        for start in range(0, len(dataset.images), batch_size):
            entries = dataset.images[start : start + batch_size]
            images = load_images(dataset, entries).to(device)
            for entry, det in zip(entries, target.predict(images)):
                out.append(target.label_map.to_coco(entry.id, det))
    return [d for per_image in out for d in per_image]


def object_hardness(
    target: DetectionTarget, images: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]], *, batch_size: int = 64
) -> torch.Tensor:
    """Per-object hardness ``1 - confidence`` (TERSE section 4.2) of every object, image by image.

    Args:
        target: the detector adapter (run frozen, no gradients, on its device, in batches).
        images: ``Tensor[N, 3, H, W]`` in [0, 1].
        targets: ``N`` dicts with ``boxes`` (xyxy) and ``labels`` (``1..C``).

    Returns:
        ``Tensor[M]`` float32 in [0, 1], ``M`` = the number of objects, in image order then object
        order (an image without objects adds nothing).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(targets) != images.shape[0]:
        raise InputError(f"got {len(targets)} targets for {images.shape[0]} images", field="targets")
    device = model_device(target.model)
    out = []
    with freeze(target.model), torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start : start + batch_size].to(device)
            tg = [{k: torch.as_tensor(v).to(device) for k, v in t.items()} for t in targets[start : start + batch_size]]
            out.extend(h.float().cpu() for h in target.hardness(chunk, tg))
    return torch.cat(out) if out else torch.empty(0)


def hard_positive_fraction(confidences: torch.Tensor | Sequence[float], threshold: float = 0.5) -> float:
    """Fraction of positives (objects) the detector finds with confidence below ``threshold``.

    TERSE Figure 8 compares generators by this fraction: a composite whose object the baseline
    already detects confidently teaches it little. ``confidences`` are per-object values in [0, 1]
    (``1 - object_hardness``).

    Raises:
        InputError: no confidences, or values outside [0, 1].
    """
    c = torch.as_tensor(confidences, dtype=torch.float64).flatten()
    if c.numel() == 0:
        raise InputError("no confidences: there are no positives to count", field="confidences")
    if not bool(((c >= 0) & (c <= 1)).all()):
        raise InputError("confidences must lie in [0, 1]", field="confidences")
    return float((c < threshold).double().mean())


def predicted_confidence(target: DetectionTarget, images: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]], *, batch_size: int = 16) -> list[torch.Tensor]:
    """Per image, ``target``'s confidence on each labelled object (see
    :meth:`~synthloop.models.detection.DetectionTarget.confidence`), no gradient."""
    device = model_device(target.model)
    out: list[torch.Tensor] = []
    with freeze(target.model), torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start : start + batch_size].to(device)
            tg = [{k: torch.as_tensor(v).to(device) for k, v in t.items()} for t in targets[start : start + batch_size]]
            out += [c.float().cpu() for c in target.confidence(chunk, tg)]
    return out
