"""Instance switching (PSIS; Wang et al. 2019, survey §5.3): swap instances of the same class
between real training images, matched by scale and aspect ratio, so the context stays right.

:class:`DatasetScenes` turns a segmented :class:`~synthloop.data.dataset.Dataset` into both an
instance source (each mask is a cut-out cropped to its mask box) and a background source (the
dataset's own images, decoded by the caller's ``read_image``). :func:`sample_psis` picks an image,
re-pastes its own objects in place (pixel-identical, so occlusion bookkeeping covers them) and
replaces some of them by a cut-out of the same class from another image, scaled onto the
replaced object's mask box. The replaced object stays underneath as an unlabelled layer (PSIS
does not in-paint).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from synthloop.compose.config import SceneConfig
from synthloop.compose.params import ArtefactParams, BlendSpec, ObjectParams, SceneParams
from synthloop.compose.sampler import choice, instance_geometry, randint, sample_affine, sample_blend, uniform
from synthloop.data.dataset import Dataset
from synthloop.errors import InputError


class DatasetScenes:
    """A segmented dataset as instance source + background source.

    ``read_image(path)`` decodes an image file to ``uint8 (H, W, 3)`` RGB (e.g.
    :func:`synthloop.data.images.load_image`); each image is decoded once, when first needed.
    """

    def __init__(self, dataset: Dataset, read_image: Callable[[Path], np.ndarray]):
        self.dataset = dataset
        self.read_image = read_image
        self._images: dict[int, np.ndarray] = {}
        self.items: list[tuple[int, int, tuple[int, int, int, int]]] = []  # (image index, ann index, mask box)
        self.by_image: dict[int, list[int]] = {}
        for ii, im in enumerate(dataset.images):
            for ai, ann in enumerate(im.annotations):
                if ann.mask is None or ann.iscrowd:
                    continue
                m = ann.mask
                rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
                if rows.size == 0:
                    continue
                box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
                self.by_image.setdefault(ii, []).append(len(self.items))
                self.items.append((ii, ai, box))
        if not self.items:
            raise InputError("instance switching needs segmentation masks; the dataset has none", field="annotations.segmentation")
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- instance source -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def image(self, image_index: int) -> np.ndarray:
        hit = self._images.get(image_index)
        if hit is None:
            entry = self.dataset.images[image_index]
            hit = self.read_image(self.dataset.image_path(entry)).astype(np.float32) / 255.0
            if hit.shape[:2] != (entry.height, entry.width):
                raise InputError(f"image is {hit.shape[1]}x{hit.shape[0]} but the annotation says {entry.width}x{entry.height}", file=self.dataset.image_path(entry), field="width/height")
            self._images[image_index] = hit
        return hit

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        hit = self._arrays.get(index)
        if hit is None:
            ii, ai, (x0, y0, x1, y1) = self.items[index]
            img = self.image(ii)
            mask = self.dataset.images[ii].annotations[ai].mask
            hit = (np.ascontiguousarray(img[y0:y1, x0:x1]), np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=np.float32))
            self._arrays[index] = hit
        return hit

    def tensor(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, alpha = self.arrays(index)
        return torch.from_numpy(rgb).permute(2, 0, 1), torch.from_numpy(alpha)[None]

    def category_of(self, index: int) -> int:
        ii, ai, _ = self.items[index]
        return int(self.dataset.images[ii].annotations[ai].category_id)

    # -- background source -----------------------------------------------------------------
    def sample_one(self, size: tuple[int, int], generator: torch.Generator) -> dict[str, Any]:
        return {"kind": "dataset_image", "index": randint(generator, 0, len(self.dataset.images) - 1)}

    def render_one(self, params: dict[str, Any], size: tuple[int, int]) -> np.ndarray:
        img = self.image(int(params["index"]))
        if img.shape[:2] != tuple(size):
            img = cv2.resize(img, (int(size[1]), int(size[0])), interpolation=cv2.INTER_AREA)
        return img


def _in_place(scenes: DatasetScenes, item: int, canvas: tuple[int, int]) -> list[float]:
    """Affine that puts a cut-out back exactly where it was cut from."""
    _, _, (x0, y0, x1, y1) = scenes.items[item]
    H, W = canvas
    return [0.0, x0 + (x1 - x0) / 2 - W / 2, y0 + (y1 - y0) / 2 - H / 2, 0.0, 1.0, 1.0]


def _onto(scenes: DatasetScenes, new: int, old: int, canvas: tuple[int, int]) -> list[float]:
    """Affine that maps cut-out ``new`` onto the mask box of ``old``."""
    _, _, (ax0, ay0, ax1, ay1) = scenes.items[old]
    _, _, (bx0, by0, bx1, by1) = scenes.items[new]
    H, W = canvas
    return [0.0, (ax0 + ax1) / 2 - W / 2, (ay0 + ay1) / 2 - H / 2, 0.0, (ax1 - ax0) / (bx1 - bx0), (ay1 - ay0) / (by1 - by0)]


def switch_candidates(scenes: DatasetScenes, item: int, scale_tol: float, aspect_tol: float) -> list[int]:
    """Same-class cut-outs from other images whose mask-box area and aspect ratio are within
    the tolerances (ratios in [1/tol, tol])."""
    ii, _, (x0, y0, x1, y1) = scenes.items[item]
    cat = scenes.category_of(item)
    area, aspect = (x1 - x0) * (y1 - y0), (x1 - x0) / (y1 - y0)
    out = []
    for j, (jj, _, (u0, v0, u1, v1)) in enumerate(scenes.items):
        if jj == ii or scenes.category_of(j) != cat:
            continue
        ra = (u1 - u0) * (v1 - v0) / area
        rr = ((u1 - u0) / (v1 - v0)) / aspect
        if 1 / scale_tol <= ra <= scale_tol and 1 / aspect_tol <= rr <= aspect_tol:
            out.append(j)
    return out


def sample_psis(cfg: SceneConfig, scenes: DatasetScenes, generator: torch.Generator, *, image_index: int | None = None, seed: int | None = None) -> SceneParams:
    """One instance-switched version of a dataset image (random image unless ``image_index``)."""
    g = generator
    pc = cfg.placement
    candidates_images = sorted(scenes.by_image)
    ii = image_index if image_index is not None else choice(g, candidates_images)
    entry = scenes.dataset.images[ii]
    canvas = (entry.height, entry.width)
    image_blend = sample_blend(cfg.blend, g)
    objects: list[ObjectParams] = []
    for item in scenes.by_image.get(ii, []):
        keep = ObjectParams(instance=item, category_id=scenes.category_of(item), affine=_in_place(scenes, item, canvas), blend=BlendSpec("none"))
        cands = switch_candidates(scenes, item, pc.psis_scale_tolerance, pc.psis_aspect_tolerance)
        if cands and uniform(g, 0.0, 1.0) < pc.psis_switch_prob:
            new = choice(g, cands)
            keep.distractor = True  # the switched-out object stays underneath, unlabelled
            objects.append(keep)
            objects.append(ObjectParams(instance=new, category_id=scenes.category_of(new), affine=_onto(scenes, new, item, canvas), blend=image_blend if cfg.blend.per == "image" else sample_blend(cfg.blend, g), cleanup=cfg.mask_cleanup))
        else:
            objects.append(keep)
    artefacts: list[ArtefactParams] = []
    art_bg = None
    if cfg.artefacts.enabled:
        n = randint(g, *cfg.artefacts.count)
        if n:
            others = [j for j in range(len(scenes.dataset.images)) if j != ii] or [ii]
            art_bg = {"kind": "dataset_image", "index": choice(g, others)}
        for _ in range(n):
            idx = randint(g, 0, len(scenes) - 1)
            aff = sample_affine(cfg, instance_geometry(scenes, idx), canvas, g)
            artefacts.append(ArtefactParams(instance=idx, affine=aff, blend=image_blend))
    return SceneParams(canvas=canvas, background={"kind": "dataset_image", "index": ii}, objects=objects, artefacts=artefacts, artefact_background=art_bg, seed=seed)


