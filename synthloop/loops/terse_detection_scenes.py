"""Scenes of the TERSE scene loop: :class:`SyntheticScene`, their labels, :func:`replay_scene`
and :func:`write_synthetic_coco` (split out of :mod:`synthloop.loops.terse_detection`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthloop.compose.batch import SceneComposite
from synthloop.compose.params import SceneParams
from synthloop.compose.scene_batch import composite_batch, labelled_objects
from synthloop.data.dataset import Annotation, ImageEntry
from synthloop.models.detection import MIN_BOX_SIZE, LabelMap


@dataclass
class SyntheticScene:
    """One composite with its labels: ``image`` ``(3, H, W)`` in [0, 1]; ``target`` ``{"boxes":
    (N, 4) float xyxy px, "labels": (N,) int64 1..C}`` of the labelled (visible) objects;
    ``category_ids`` their COCO ids; ``confidence`` ``(N,)`` T's confidence on each when the scene
    was generated (NaN when unknown); ``params`` enough to replay the image exactly."""

    image: torch.Tensor
    target: dict[str, torch.Tensor]
    category_ids: list[int]
    confidence: torch.Tensor
    params: SceneParams


# --------------------------------------------------------------------------------------------
# labels and replay


def _labels(comp: SceneComposite, i: int, params: SceneParams, label_map: LabelMap) -> tuple[dict[str, torch.Tensor], list[int], list[int]]:
    """Target of composite ``i``: the objects visible enough with a box of at least MIN_BOX_SIZE.
    Returns ``(target, category_ids, object positions k)``."""
    boxes, keep = labelled_objects(comp, i, params, MIN_BOX_SIZE)
    cats = [int(params.objects[k].category_id) for k in keep]
    labels = [label_map.label(c, field=f"objects[{k}].category_id") for c, k in zip(cats, keep)]
    return {"boxes": boxes, "labels": torch.tensor(labels, dtype=torch.int64)}, cats, keep


def replay_scene(params: SceneParams | Mapping[str, Any], foregrounds: Any, backgrounds: Any, label_map: LabelMap) -> SyntheticScene:
    """Composite a scene again from its ``params`` (bit-identical to the kept one: same code, batch
    of 1); a dict is read with :meth:`SceneParams.from_dict` (older versions included).

    ``confidence`` is the one recorded at generation (NaN when the params hold none).

    Raises:
        InputError: params of a newer version or without a frame, or a category missing from ``label_map``.
    """
    if not isinstance(params, SceneParams):
        params = SceneParams.from_dict(dict(params))
    return _composite_scene(params, foregrounds, backgrounds, label_map)


def _composite_scene(params: SceneParams, foregrounds: Any, backgrounds: Any, label_map: LabelMap, canvas: torch.Tensor | None = None) -> SyntheticScene:
    """:func:`replay_scene`; ``canvas`` ``(1, 3, H, W)`` is the scene's background with artefacts when
    already rendered by :func:`~synthloop.compose.scene_batch.canvas_batch` (a deterministic
    function of the params, so reusing it changes no bit)."""
    with torch.no_grad():
        _, comp = composite_batch([params], foregrounds, backgrounds, canvas_in=None if canvas is None else canvas.cpu())
    target, cats, _ = _labels(comp, 0, params, label_map)
    conf = params.meta.get("confidence")
    confidence = torch.tensor(conf, dtype=torch.float32) if conf is not None else torch.full((len(cats),), float("nan"))
    return SyntheticScene(comp.image[0].detach().cpu(), target, cats, confidence, params)


# --------------------------------------------------------------------------------------------
# writing


def write_synthetic_coco(scenes: Sequence[SyntheticScene], out_dir: str | Path, label_map: LabelMap) -> Path:
    """Write ``scenes`` as a COCO data set: ``out_dir/images/000001.png`` ... (8-bit PNG) and
    ``out_dir/annotations.json`` (box-only annotations of the labelled objects with their
    generation confidence in ``attributes``; every image's replay params in its ``attributes``
    under ``"params"``), through :func:`synthloop.data.coco.write_coco_json`. Everything appears
    at once (staged folder). Returns the path of ``annotations.json``."""
    from synthloop.data._io import staged_dir
    from synthloop.data.coco import ANNOTATIONS_FILE, write_coco_json
    from synthloop.data.images import encode_png
    from synthloop.utils.atomic import atomic_write_bytes

    out_dir = Path(out_dir)
    entries = []
    with staged_dir(out_dir) as stage:
        for i, s in enumerate(scenes):
            img = s.image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            name = f"images/{i + 1:06d}.png"
            atomic_write_bytes(stage / name, encode_png(np.ascontiguousarray(img)))
            H, W = img.shape[:2]
            anns = []
            boxes = s.target["boxes"].detach().double().cpu().reshape(-1, 4).tolist()
            conf = s.confidence.detach().cpu().tolist() if s.confidence.numel() == len(boxes) else [float("nan")] * len(boxes)
            for (x0, y0, x1, y1), label, c in zip(boxes, s.target["labels"].tolist(), conf):
                attrs = {"confidence": float(c)} if math.isfinite(c) else {}
                anns.append(Annotation(category_id=label_map.category_id(int(label)), bbox=(x0, y0, x1 - x0, y1 - y0), attributes=attrs))
            entries.append(ImageEntry(id=i + 1, file_name=name, width=W, height=H, annotations=anns, attributes={"params": s.params.to_dict()}))
        write_coco_json(
            stage / ANNOTATIONS_FILE, entries, label_map.categories, info={"description": "TERSE synthetic composites (synthloop.loops.terse_detection)"}
        )
    return out_dir / ANNOTATIONS_FILE


composite_scene = _composite_scene

__all__ = ["SyntheticScene", "composite_scene", "replay_scene", "write_synthetic_coco"]
