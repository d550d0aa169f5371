"""Tiny on-disk datasets of coloured blobs for the data I/O tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from synthloop.data.coco import mask_bbox
from synthloop.data.dataset import Annotation, Category, Dataset, ImageEntry
from synthloop.data.images import encode_jpeg, encode_png

CATEGORIES = [Category(1, "disc", "shape"), Category(3, "blob", "shape"), Category(7, "dot", "mark")]


def blob_mask(rng: np.random.Generator, h: int, w: int, kind: str = "random") -> np.ndarray:
    """A ``bool (h, w)`` mask: union of ellipses, optionally with a hole, touching an edge, or one pixel."""
    m = np.zeros((h, w), np.uint8)
    if kind == "pixel":
        m[rng.integers(0, h), rng.integers(0, w)] = 1
        return m.astype(bool)
    if kind == "edge":
        cv2.ellipse(m, (0, int(rng.integers(0, h))), (int(rng.integers(3, w // 2)), int(rng.integers(3, h // 2))), 0.0, 0, 360, 1, -1)
        m[:, -2:] = 1
        return m.astype(bool)
    for _ in range(int(rng.integers(1, 4))):
        c = (int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 4, 3 * h // 4)))
        ax = (int(rng.integers(4, w // 3)), int(rng.integers(4, h // 3)))
        cv2.ellipse(m, c, ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    if kind == "hole":
        ys, xs = np.nonzero(m)
        cy, cx = int(ys.mean()), int(xs.mean())
        m[max(cy - 1, 0) : cy + 2, max(cx - 1, 0) : cx + 2] = 0
        m[cy - 4 : cy + 5, cx - 4] = 1  # make sure the hole is enclosed
        m[cy - 4 : cy + 5, cx + 4] = 1
        m[cy - 4, cx - 4 : cx + 5] = 1
        m[cy + 4, cx - 4 : cx + 5] = 1
    return m.astype(bool)


def make_blob_dataset(
    root: Path,
    *,
    n_images: int = 3,
    size: tuple[int, int] = (48, 64),
    ext: str = ".png",
    masks: bool = True,
    seed: int = 0,
    subdir: str = "",
) -> Dataset:
    """Write ``n_images`` blob images under ``root`` and return the matching Dataset (boxes from masks)."""
    rng = np.random.default_rng(seed)
    h, w = size
    kinds = ["random", "hole", "edge", "pixel"]
    images = []
    for i in range(n_images):
        img = (rng.uniform(0, 1, (h, w, 3)) * 60).astype(np.uint8)
        anns = []
        for j in range(1 + i % 3):
            kind = kinds[(i + j) % len(kinds)]
            mask = blob_mask(rng, h, w, kind)
            img[mask] = rng.integers(80, 255, 3, dtype=np.uint8)
            cat = CATEGORIES[(i + j) % len(CATEGORIES)].id
            anns.append(Annotation(cat, mask_bbox(mask), mask if masks else None, attributes={"kind": kind}))
        name = f"{subdir}/img{i:02d}{ext}" if subdir else f"img{i:02d}{ext}"
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_png(img) if ext == ".png" else encode_jpeg(img, 95))
        images.append(ImageEntry(i + 1, name, w, h, anns))
    return Dataset(root=root, categories=list(CATEGORIES), images=images, info={"description": "blobs"})
