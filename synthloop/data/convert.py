"""Read and write datasets by format name; convert between COCO, YOLO and VOC all-or-nothing."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from synthloop.data._io import make_temp_sibling
from synthloop.data.coco import read_coco, write_coco
from synthloop.data.dataset import Dataset
from synthloop.data.images import DEFAULT_MAX_PIXELS, load_image
from synthloop.data.voc import read_voc, write_voc
from synthloop.data.yolo import read_yolo, write_yolo
from synthloop.errors import InputError

FORMATS = ("coco", "yolo", "voc")


def read_dataset(src: str | Path, fmt: str, *, image_root: str | Path | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Dataset:
    """Read a dataset in format ``fmt`` (``coco``: a JSON file or a folder holding ``annotations.json``;
    ``yolo``: a folder or its ``data.yaml``; ``voc``: the folder holding ``Annotations/``).

    COCO image headers are checked against the sizes in the JSON.
    """
    src = Path(src)
    if fmt == "coco":
        return read_coco(src, image_root, check_images=True, max_pixels=max_pixels)
    if image_root is not None:
        raise InputError("image_root only applies to COCO input", field="image_root")
    if fmt == "yolo":
        return read_yolo(src, max_pixels=max_pixels)
    if fmt == "voc":
        return read_voc(src)
    raise InputError(f"unknown format {fmt!r}; expected one of {FORMATS}", field="format")


def write_dataset(dataset: Dataset, out_dir: str | Path, fmt: str, *, mask_format: str = "rle") -> Path:
    """Write ``dataset`` to ``out_dir`` in format ``fmt`` (``mask_format`` applies to COCO)."""
    if fmt == "coco":
        return write_coco(dataset, out_dir, mask_format=mask_format)
    if fmt == "yolo":
        return write_yolo(dataset, out_dir)
    if fmt == "voc":
        return write_voc(dataset, out_dir)
    raise InputError(f"unknown format {fmt!r}; expected one of {FORMATS}", field="format")


def verify_images(dataset: Dataset, *, max_pixels: int = DEFAULT_MAX_PIXELS, workers: int | None = None) -> None:
    """Decode every image of ``dataset`` (threads; PIL decodes without the GIL) to catch corrupt or
    truncated files. Raises the :class:`InputError` of the first bad image in dataset order."""
    paths = [dataset.image_path(im) for im in dataset.images]
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(lambda p: load_image(p, mode="RGB", max_pixels=max_pixels).shape, paths):
            pass


def convert_dataset(
    src: str | Path,
    dst: str | Path,
    *,
    src_format: str,
    dst_format: str,
    mask_format: str = "rle",
    image_root: str | Path | None = None,
    overwrite: bool = False,
    verify: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Dataset:
    """Convert the dataset at ``src`` into a new folder ``dst``; returns the dataset read.

    ``dst`` is written into a temporary sibling folder that is renamed onto ``dst`` at the end, so
    a failed conversion leaves no ``dst`` (and an existing one untouched). A non-empty ``dst`` is
    refused unless ``overwrite``. With ``verify`` every image is decoded first.
    """
    for name, fmt in (("from", src_format), ("to", dst_format)):
        if fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r}; expected one of {FORMATS}", field=name)
    src, dst = Path(src), Path(dst)
    if dst.exists():
        if not dst.is_dir():
            raise InputError("output path exists and is not a folder", file=dst)
        if any(dst.iterdir()) and not overwrite:
            raise InputError("output folder is not empty (use --overwrite to replace it)", file=dst)
        src_r, dst_r = src.resolve(), dst.resolve()
        if src_r == dst_r or dst_r in src_r.parents:
            raise InputError("output folder holds the input; replacing it would delete the input", file=dst)
    dataset = read_dataset(src, src_format, image_root=image_root, max_pixels=max_pixels)
    if verify:
        verify_images(dataset, max_pixels=max_pixels)
    tmp = make_temp_sibling(dst, "partial")
    try:
        write_dataset(dataset, tmp, dst_format, mask_format=mask_format)
        if dst.exists():
            old = make_temp_sibling(dst, "old")
            old.rmdir()
            os.replace(dst, old)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dataset
