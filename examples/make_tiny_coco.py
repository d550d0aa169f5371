"""Write the tiny example COCO dataset used by ``paste_coco.yaml`` (and its test).

Four 96x128 PNG images of shaded discs, squares and triangles on plain backgrounds, with exact
RLE masks. Shapes are shaded (a linear ramp across each shape) so gradient-domain blending
(Poisson) has something to carry over. Usage::

    python examples/make_tiny_coco.py [OUT_DIR]     # default: examples/data/tiny_coco
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from synthloop.data.coco import mask_bbox, write_coco
from synthloop.data.dataset import Annotation, Category, Dataset, ImageEntry
from synthloop.data.images import encode_png
from synthloop.utils.atomic import atomic_write_bytes

CATEGORIES = [Category(1, "disc", "shape"), Category(2, "square", "shape"), Category(3, "triangle", "shape")]
SIZE = (96, 128)  # (H, W)
SCENES = [  # per image: background colour, then (category, centre x, centre y, radius, colour)
    ((40, 60, 90), [(1, 32, 40, 18, (230, 80, 60)), (2, 90, 55, 20, (90, 200, 120))]),
    ((200, 190, 160), [(3, 40, 60, 22, (60, 90, 210)), (1, 96, 30, 16, (240, 200, 40))]),
    ((70, 110, 70), [(2, 30, 30, 16, (220, 220, 230)), (3, 70, 62, 20, (200, 60, 160)), (1, 108, 70, 14, (250, 140, 30))]),
    ((120, 120, 130), [(1, 64, 48, 26, (40, 170, 200)), (2, 20, 78, 12, (240, 100, 100))]),
]


def shape_mask(category: int, cx: int, cy: int, r: int) -> np.ndarray:
    m = np.zeros(SIZE, np.uint8)
    if category == 1:
        cv2.circle(m, (cx, cy), r, 1, -1)
    elif category == 2:
        cv2.rectangle(m, (cx - r, cy - r), (cx + r, cy + r), 1, -1)
    else:
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(m, [pts], 1)
    return m.astype(bool)


def build(out_dir: Path) -> Dataset:
    """Write the images and ``annotations.json`` into ``out_dir``; returns the dataset."""
    H, W = SIZE
    ramp = np.linspace(0.6, 1.0, W, dtype=np.float32)[None, :, None]
    images = []
    for i, (bg, shapes) in enumerate(SCENES):
        img = np.empty((H, W, 3), np.float32)
        img[:] = bg
        anns = []
        for cat, cx, cy, r, color in shapes:
            m = shape_mask(cat, cx, cy, r)
            shaded = np.asarray(color, np.float32) * ramp
            img[m] = np.broadcast_to(shaded, img.shape)[m]
            anns.append(Annotation(cat, mask_bbox(m), mask=m))
        name = f"{i:02d}.png"
        atomic_write_bytes(out_dir / "images" / name, encode_png(np.clip(img + 0.5, 0, 255).astype(np.uint8)))
        images.append(ImageEntry(i + 1, f"images/{name}", W, H, anns))
    ds = Dataset(root=out_dir, categories=CATEGORIES, images=images, info={"description": "synthloop tiny example shapes"})
    write_coco(ds, out_dir, copy_images=False)
    return ds


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "data" / "tiny_coco"
    build(target)
    print(f"wrote {target}")
