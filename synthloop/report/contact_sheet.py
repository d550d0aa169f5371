"""Contact sheets: a grid of dataset images with their masks, boxes and class names drawn on.

Works on any COCO dataset synthloop writes or reads (RLE or polygon masks, or boxes only).
Drawing uses PIL; masks are blended in NumPy at full resolution before the image is shrunk to
its tile, boxes and names are drawn on the tile so they stay crisp.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from synthloop.data.dataset import Dataset
from synthloop.data.images import encode_png, load_image
from synthloop.errors import InputError
from synthloop.utils.atomic import atomic_write_bytes

# Matplotlib's "tab10" palette: distinct, readable on photos and textures
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip
SHEET_BACKGROUND = (32, 32, 32)
CAPTION_HEIGHT = 16


def category_color(category_id: int, order: dict[int, int]) -> tuple[int, int, int]:
    return PALETTE[order.get(category_id, category_id) % len(PALETTE)]


def load_dataset(path: str | Path, image_root: str | Path | None = None) -> Dataset:
    """A COCO dataset from a JSON file, or from a folder holding ``annotations.json``."""
    from synthloop.data.coco import ANNOTATIONS_FILE, read_coco

    path = Path(path)
    if path.is_dir():
        path = path / ANNOTATIONS_FILE
    if not path.is_file():
        raise InputError("no COCO annotations file here (expected a .json file or a folder with annotations.json)", file=path)
    return read_coco(path, image_root)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def annotated_tile(dataset: Dataset, index: int, tile: int, mask_alpha: float = 0.45) -> Image.Image:
    """Image ``index`` of ``dataset`` with masks, boxes and names, fitted into ``tile`` x ``tile``."""
    entry = dataset.images[index]
    img = load_image(dataset.image_path(entry), mode="RGB").astype(np.float32)
    order = {c.id: i for i, c in enumerate(dataset.categories)}
    names = {c.id: c.name for c in dataset.categories}
    for ann in entry.annotations:
        if not ann.has_mask or ann.mask_shape != img.shape[:2]:
            continue
        m = ann.mask
        img[m] = img[m] * (1.0 - mask_alpha) + np.asarray(category_color(ann.category_id, order), np.float32) * mask_alpha
    h, w = img.shape[:2]
    scale = tile / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    im = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(im)
    font = _font(max(10, tile // 22))
    for ann in entry.annotations:
        x, y, bw, bh = (float(v) * scale for v in ann.bbox)
        color = category_color(ann.category_id, order)
        draw.rectangle([x, y, x + max(bw, 1.0), y + max(bh, 1.0)], outline=color, width=max(1, tile // 160))
        label = names.get(ann.category_id, str(ann.category_id))
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), label, font=font)
        ty = y - (ty1 - ty0) - 3 if y - (ty1 - ty0) - 3 >= 0 else y
        draw.rectangle([x, ty, x + (tx1 - tx0) + 4, ty + (ty1 - ty0) + 3], fill=color)
        draw.text((x + 2 - tx0, ty + 1 - ty0), label, fill=(255, 255, 255), font=font)
    return im


def contact_sheet(dataset: Dataset, *, n: int = 16, tile: int = 256, columns: int | None = None, mask_alpha: float = 0.45) -> np.ndarray:
    """A ``uint8 (H, W, 3)`` grid of the first ``n`` images of ``dataset``, annotated, each in a
    ``tile`` x ``tile`` cell with its file name and object count underneath."""
    if n < 1 or tile < 16:
        raise InputError(f"need n >= 1 and tile >= 16, got n={n}, tile={tile}", field="n/tile")
    if not dataset.images:
        raise InputError("the dataset has no images", file=dataset.root)
    count = min(n, len(dataset.images))
    cols = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    pad = 4
    cell_w, cell_h = tile + pad, tile + CAPTION_HEIGHT + pad
    sheet = Image.new("RGB", (cols * cell_w + pad, rows * cell_h + pad), SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font(11)
    for k in range(count):
        r, c = divmod(k, cols)
        x0, y0 = pad + c * cell_w, pad + r * cell_h
        im = annotated_tile(dataset, k, tile, mask_alpha)
        sheet.paste(im, (x0 + (tile - im.width) // 2, y0 + (tile - im.height) // 2))
        entry = dataset.images[k]
        caption = f"{Path(entry.file_name).name}  ({len(entry.annotations)} obj)"
        draw.text((x0, y0 + tile + 2), caption, fill=(220, 220, 220), font=font)
    return np.asarray(sheet)


def write_contact_sheet(dataset: Dataset | str | Path, out: str | Path, *, n: int = 16, tile: int = 256, columns: int | None = None) -> Path:
    """Draw :func:`contact_sheet` of ``dataset`` (or of the COCO dataset at that path) to the PNG ``out``."""
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    out = Path(out)
    atomic_write_bytes(out, encode_png(contact_sheet(ds, n=n, tile=tile, columns=columns)))
    return out
