"""COCO instance annotations: validated reading, writing (RLE or polygon masks), mask conversions.

Layout written by :func:`write_coco`::

    out_dir/annotations.json      file_name entries are "images/<name>", relative to out_dir
    out_dir/images/<name>

Masks: ``mask_format="rle"`` is lossless (compressed RLE, ``counts`` as a string).
``mask_format="polygon"`` traces each mask's outer boundary with OpenCV; COCO polygons are a union
of filled outlines, so holes are filled in (empty masks and crowd annotations are written as RLE,
as COCO does for crowds). Polygons read from a file are written back unchanged.

Only the COCO fields synthloop models survive a read/write: images (id, file_name, width, height,
attributes), annotations (id, image_id, category_id, bbox, segmentation, iscrowd, attributes),
categories (id, name, supercategory) and info; e.g. licences, URLs and keypoints are dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from synthloop.data._io import check_unique_targets, copy_file, jsonable, staged_dir, under_images
from synthloop.data.dataset import Annotation, Category, Dataset, ImageEntry, decode_rle
from synthloop.data.images import DEFAULT_MAX_PIXELS, image_size, safe_join
from synthloop.errors import InputError
from synthloop.utils.atomic import atomic_write_json

MASK_FORMATS = ("rle", "polygon")
BBOX_TOLERANCE = 1.0  # px a box may stick out of its image (float rounding in exporters)
ANNOTATIONS_FILE = "annotations.json"


# --------------------------------------------------------------------------------------------
# mask conversions


def mask_to_rle(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of a ``(H, W)`` mask: ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {m.shape}")
    rle = mask_utils.encode(np.asfortranarray(m > 0 if m.dtype != bool else m, dtype=np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict, height: int, width: int) -> np.ndarray:
    """Decode COCO RLE (compressed ``counts`` str/bytes, or uncompressed list) to ``bool (H, W)``.

    Raises:
        InputError: when the RLE is malformed or its ``size`` is not ``[height, width]``.
    """
    return decode_rle(_rle_from_json(rle, int(height), int(width), file=None, where="segmentation"))


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` of a ``(H, W)`` mask's outer boundaries.

    The mask is upsampled 2x (nearest) before ``cv2.findContours``, so every outline point lies a
    quarter pixel outside the centres of the boundary pixels: rasterised again by pycocotools,
    the polygons give back the mask exactly except for holes, which COCO polygons cannot
    represent. (Contours through the pixel centres themselves lose about half the boundary
    pixels.) Single pixels become small squares.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {m.shape}")
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return []
    y0, x0 = int(rows[0]), int(cols[0])
    crop = (m[y0 : int(rows[-1]) + 1, x0 : int(cols[-1]) + 1] > 0).astype(np.uint8)  # only the object's box is traced
    up = cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(2 * x0, 2 * y0))
    return [((c.reshape(-1).astype(np.float64) + 0.5) / 2.0).tolist() for c in contours]


def polygons_to_rle(polygons: list[list[float]], height: int, width: int) -> dict:
    """Compressed RLE (``counts`` bytes) of the union of COCO polygons, rasterised by pycocotools."""
    return mask_utils.merge(mask_utils.frPyObjects([list(map(float, p)) for p in polygons], int(height), int(width)))


def mask_bbox(mask_or_rle: np.ndarray | dict) -> tuple[float, float, float, float]:
    """Tight COCO ``xywh`` box of a mask (array or compressed RLE); zeros for an empty mask."""
    rle = mask_or_rle if isinstance(mask_or_rle, dict) else mask_utils.encode(np.asfortranarray(mask_or_rle, dtype=np.uint8))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return (x, y, w, h)


def _compressed_counts(s: bytes) -> list[int]:
    """Run lengths of a compressed COCO RLE string.

    A port of pycocotools' ``rleFrString``: pycocotools decodes without checking that the runs add
    up to ``H * W`` (a short string yields uninitialised pixels), so RLE read from a file is
    checked with this first.
    """
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x = k = 0
        more = True
        while more:
            if p >= n:
                raise ValueError("string ends inside a run length")
            c = s[p] - 48
            if not 0 <= c < 64:
                raise ValueError(f"invalid character {chr(s[p])!r}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _rle_from_json(seg: dict, height: int, width: int, *, file: str | Path | None, where: str) -> dict:
    """Validate a JSON RLE object against the image size; return compressed RLE (``counts`` bytes)."""
    size = seg.get("size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in size)):
        raise InputError(f"RLE size must be [height, width], got {size!r}", file=file, field=f"{where}.size")
    if [int(size[0]), int(size[1])] != [height, width]:
        raise InputError(f"RLE size {list(size)} does not match the image size [{height}, {width}] (height, width)", file=file, field=f"{where}.size")
    counts = seg.get("counts")
    if isinstance(counts, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
            raise InputError("uncompressed RLE counts must be non-negative integers", file=file, field=f"{where}.counts")
        runs = counts
    elif isinstance(counts, (str, bytes)):
        try:
            counts = counts.encode("ascii") if isinstance(counts, str) else counts
            runs = _compressed_counts(counts)
        except ValueError as e:  # UnicodeEncodeError included
            raise InputError(f"malformed compressed RLE: {e}", file=file, field=f"{where}.counts") from None
        if any(v < 0 for v in runs):
            raise InputError("malformed compressed RLE: negative run length", file=file, field=f"{where}.counts")
    else:
        raise InputError(f"RLE counts must be a list or a string, got {type(counts).__name__}", file=file, field=f"{where}.counts")
    if sum(runs) != height * width:
        raise InputError(f"RLE runs cover {sum(runs)} pixels, the image has {height * width}", file=file, field=f"{where}.counts")
    if isinstance(counts, list):
        return mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [height, width], "counts": counts}


# --------------------------------------------------------------------------------------------
# reading


def _is_int(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _Reader:
    """Validation helpers bound to one JSON file, so every error names it."""

    def __init__(self, file: Path):
        self.file = file

    def fail(self, message: str, where: str) -> InputError:
        return InputError(message, file=self.file, field=where)

    def req(self, obj: dict, key: str, where: str) -> Any:
        if key not in obj:
            raise self.fail(f"missing required field {key!r}", f"{where}.{key}")
        return obj[key]

    def int_(self, obj: dict, key: str, where: str, *, positive: bool = False) -> int:
        v = self.req(obj, key, where)
        if not _is_int(v):
            raise self.fail(f"must be an integer, got {v!r}", f"{where}.{key}")
        if positive and v <= 0:
            raise self.fail(f"must be positive, got {v!r}", f"{where}.{key}")
        return int(v)

    def str_(self, obj: dict, key: str, where: str) -> str:
        v = self.req(obj, key, where)
        if not isinstance(v, str):
            raise self.fail(f"must be a string, got {v!r}", f"{where}.{key}")
        return v

    def list_(self, data: dict, key: str, *, required: bool = True) -> list:
        if key not in data:
            if required:
                raise self.fail(f"missing required field {key!r}", key)
            return []
        v = data[key]
        if not isinstance(v, list):
            raise self.fail(f"must be a list, got {type(v).__name__}", key)
        return v

    def dict_(self, obj: Any, where: str) -> dict:
        if not isinstance(obj, dict):
            raise self.fail(f"must be an object, got {type(obj).__name__}", where)
        return obj

    def entries(self, data: dict, key: str, what: str, *, required: bool = True) -> Iterator[tuple[str, dict, int]]:
        """``(where, entry, id)`` of each entry of the list ``data[key]``: each must be an object
        with an integer ``id`` no earlier entry has (``what`` names the entries in the error)."""
        seen: set[int] = set()
        for i, obj in enumerate(self.list_(data, key, required=required)):
            where = f"{key}[{i}]"
            obj = self.dict_(obj, where)
            oid = self.int_(obj, "id", where)
            if oid in seen:
                raise self.fail(f"duplicate {what} id {oid}", f"{where}.id")
            seen.add(oid)
            yield where, obj, oid

    def attributes(self, obj: dict, where: str) -> dict:
        v = obj.get("attributes", {})
        if not isinstance(v, dict):
            raise self.fail(f"must be an object, got {type(v).__name__}", f"{where}.attributes")
        return v

    def segmentation(self, seg: Any, height: int, width: int, where: str) -> tuple[dict | None, list[list[float]] | None]:
        """``(compressed RLE, polygons read)``; ``(None, None)`` for a box-only annotation."""
        if seg is None or (isinstance(seg, list) and len(seg) == 0):
            return None, None
        if isinstance(seg, dict):
            return _rle_from_json(seg, height, width, file=self.file, where=where), None
        if isinstance(seg, list):
            polys = []
            for k, poly in enumerate(seg):
                if not isinstance(poly, list) or not all(_is_num(v) for v in poly):
                    raise self.fail("a polygon must be a list of numbers [x1, y1, x2, y2, ...]", f"{where}[{k}]")
                if len(poly) < 6 or len(poly) % 2:
                    raise self.fail(f"a polygon needs an even number (>= 6) of coordinates, got {len(poly)}", f"{where}[{k}]")
                xs, ys = poly[0::2], poly[1::2]
                t = BBOX_TOLERANCE
                if min(xs) < -t or min(ys) < -t or max(xs) > width + t or max(ys) > height + t:
                    raise self.fail(f"polygon reaches outside the {width}x{height} image", f"{where}[{k}]")
                polys.append([float(v) for v in poly])
            return polygons_to_rle(polys, height, width), polys
        raise self.fail(f"segmentation must be a list of polygons or an RLE object, got {type(seg).__name__}", where)

    def bbox(self, ann: dict, width: int, height: int, where: str) -> tuple[float, float, float, float]:
        b = self.req(ann, "bbox", where)
        if not (isinstance(b, list) and len(b) == 4 and all(_is_num(v) for v in b)):
            raise self.fail(f"bbox must be 4 finite numbers [x, y, w, h], got {b!r}", f"{where}.bbox")
        x, y, w, h = (float(v) for v in b)
        if w < 0 or h < 0:
            raise self.fail(f"bbox width and height must be >= 0, got {b!r}", f"{where}.bbox")
        t = BBOX_TOLERANCE
        if x < -t or y < -t or x + w > width + t or y + h > height + t:
            raise self.fail(f"bbox {b!r} lies outside the {width}x{height} image", f"{where}.bbox")
        return (x, y, w, h)


def find_coco_json(src: str | Path) -> Path:
    """``src`` itself when it is a file; in a folder, its ``annotations.json`` or its only ``.json`` file."""
    src = Path(src)
    if src.is_file():
        return src
    if not src.is_dir():
        raise InputError("annotation file not found", file=src)
    if (src / ANNOTATIONS_FILE).is_file():
        return src / ANNOTATIONS_FILE
    found = sorted(src.glob("*.json"))
    if len(found) != 1:
        raise InputError(f"expected {ANNOTATIONS_FILE} or a single .json file in the folder, found {len(found)} .json files", file=src)
    return found[0]


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError("annotation file not found", file=path)
    try:
        with open(path, "rb") as fh:
            return json.load(fh)
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", file=path) from None
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text ({e.reason})", file=path) from None


def read_coco(json_path: str | Path, image_root: str | Path | None = None, *, check_images: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> Dataset:
    """Read and validate a COCO instances JSON file.

    Args:
        json_path: the annotation file (or a folder holding ``annotations.json``, see :func:`find_coco_json`).
        image_root: folder the ``file_name`` entries are relative to (default: the JSON's folder).
        check_images: also check that every image file exists and that its header size matches
            ``width``/``height`` (reads headers only).
    Returns:
        A :class:`Dataset`; masks (polygons or RLE, compressed or not) are held as compressed RLE.
    Raises:
        InputError: naming the file and the field, e.g. ``annotations[12].category_id``, for
            missing required fields, duplicate or unknown ids, a ``file_name`` that is absolute or
            leaves the image folder, a segmentation of the wrong size, a box outside its image.
    """
    json_path = find_coco_json(json_path)
    r = _Reader(json_path)
    data = r.dict_(_load_json(json_path), "<root>")
    root = Path(image_root) if image_root is not None else json_path.parent

    categories: list[Category] = []
    for where, c, cid in r.entries(data, "categories", "category"):
        sup = c.get("supercategory", "")
        categories.append(Category(cid, r.str_(c, "name", where), sup if isinstance(sup, str) else str(sup)))
    cat_ids = {c.id for c in categories}

    images: list[ImageEntry] = []
    by_id: dict[int, ImageEntry] = {}
    for where, im, iid in r.entries(data, "images", "image"):
        file_name = r.str_(im, "file_name", where)
        path = safe_join(root, file_name, file=json_path, field=f"{where}.file_name")
        width = r.int_(im, "width", where, positive=True)
        height = r.int_(im, "height", where, positive=True)
        if check_images:
            if not path.is_file():
                raise r.fail(f"image file not found: {path}", f"{where}.file_name")
            actual = image_size(path, max_pixels=max_pixels)
            if actual != (width, height):
                raise r.fail(f"width x height {width}x{height} does not match the image file {path} ({actual[0]}x{actual[1]})", f"{where}.width")
        entry = ImageEntry(iid, file_name, width, height, attributes=r.attributes(im, where))
        by_id[iid] = entry
        images.append(entry)

    for where, a, aid in r.entries(data, "annotations", "annotation", required=False):
        iid = r.int_(a, "image_id", where)
        entry = by_id.get(iid)
        if entry is None:
            raise r.fail(f"image_id {iid} is not the id of any image", f"{where}.image_id")
        cid = r.int_(a, "category_id", where)
        if cid not in cat_ids:
            raise r.fail(f"category_id {cid} is not the id of any category", f"{where}.category_id")
        bbox = r.bbox(a, entry.width, entry.height, where)
        iscrowd = a.get("iscrowd", 0)
        if iscrowd not in (0, 1) or isinstance(iscrowd, bool):
            raise r.fail(f"iscrowd must be 0 or 1, got {iscrowd!r}", f"{where}.iscrowd")
        rle, polys = r.segmentation(a.get("segmentation"), entry.height, entry.width, f"{where}.segmentation")
        attrs = r.attributes(a, where)
        if rle is None:
            ann = Annotation(cid, bbox, None, int(iscrowd), attrs, aid)
        else:
            ann = Annotation.from_rle(cid, bbox, rle, iscrowd=int(iscrowd), attributes=attrs, id=aid, polygons=polys)
        entry.annotations.append(ann)

    info = data.get("info", {})
    return Dataset(root=root, categories=categories, images=images, info=dict(info) if isinstance(info, dict) else {})


# --------------------------------------------------------------------------------------------
# writing


def _annotation_ids(images: list[ImageEntry]) -> list[list[int]]:
    """Keep the annotations' own ids when they are unique; number the others after the largest."""
    given = [a.id for im in images for a in im.annotations if a.id is not None]
    keep = len(given) == len(set(given))
    nxt = (max(given) if keep and given else 0) + 1
    out = []
    for im in images:
        row = []
        for a in im.annotations:
            if keep and a.id is not None:
                row.append(int(a.id))
            else:
                row.append(nxt)
                nxt += 1
        out.append(row)
    return out


def _segmentation(ann: Annotation, mask_format: str) -> Any:
    rle = ann.rle
    if mask_format == "polygon" and not ann.iscrowd:
        if ann.polygons is not None:
            return ann.polygons
        polys = mask_to_polygons(decode_rle(rle))
        if polys:
            return polys
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def coco_json(images: list[ImageEntry], categories: list[Category], *, mask_format: str = "rle", info: dict | None = None) -> dict:
    """The COCO instances document for ``images`` (validated; raises before anything is written).

    Box-only annotations are written without a ``segmentation`` key. ``area`` is the mask's pixel
    count (``w * h`` for box-only), ``info`` gets ``synthloop_version``. Annotation ids are kept
    when they are all unique, else numbered.
    """
    return _coco_doc(images, categories, mask_format, info, None)


def _coco_doc(images: list[ImageEntry], categories: list[Category], mask_format: str, info: dict | None, file: str | Path | None) -> dict:
    """:func:`coco_json`, with errors naming ``file`` (the file being written)."""
    from synthloop import __version__

    if mask_format not in MASK_FORMATS:
        raise InputError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}", field="mask_format")
    cats_out, cat_ids = [], set()
    for i, c in enumerate(categories):
        if c.id in cat_ids:
            raise InputError(f"duplicate category id {c.id}", file=file, field=f"categories[{i}].id")
        cat_ids.add(c.id)
        cats_out.append({"id": int(c.id), "name": str(c.name), "supercategory": str(c.supercategory)})
    ids = _annotation_ids(images)
    images_out, anns_out, image_ids = [], [], set()
    for i, im in enumerate(images):
        where = f"images[{i}]"
        if im.id in image_ids:
            raise InputError(f"duplicate image id {im.id}", file=file, field=f"{where}.id")
        image_ids.add(im.id)
        entry: dict[str, Any] = {"id": int(im.id), "file_name": str(im.file_name).replace("\\", "/"), "width": int(im.width), "height": int(im.height)}
        if im.attributes:
            entry["attributes"] = jsonable(im.attributes, f"{where}.attributes", file)
        images_out.append(entry)
        for j, ann in enumerate(im.annotations):
            aw = f"{where}.annotations[{j}]"
            if ann.category_id not in cat_ids:
                raise InputError(f"category_id {ann.category_id} is not the id of any category", file=file, field=f"{aw}.category_id")
            b = tuple(ann.bbox)
            if len(b) != 4 or not all(_is_num(v) for v in b) or b[2] < 0 or b[3] < 0:
                raise InputError(f"bbox must be 4 finite numbers [x, y, w >= 0, h >= 0], got {ann.bbox!r}", file=file, field=f"{aw}.bbox")
            t = BBOX_TOLERANCE
            if b[0] < -t or b[1] < -t or b[0] + b[2] > im.width + t or b[1] + b[3] > im.height + t:
                raise InputError(f"bbox {list(b)} lies outside the {im.width}x{im.height} image", file=file, field=f"{aw}.bbox")
            out: dict[str, Any] = {
                "id": ids[i][j],
                "image_id": int(im.id),
                "category_id": int(ann.category_id),
                "bbox": [float(v) for v in b],
                "area": ann.area,
                "iscrowd": int(ann.iscrowd),
            }
            if ann.has_mask:
                if ann.mask_shape != (int(im.height), int(im.width)):
                    raise InputError(f"mask is {ann.mask_shape} (H, W), the image is ({im.height}, {im.width})", file=file, field=f"{aw}.mask")
                out["segmentation"] = _segmentation(ann, mask_format)
            if ann.attributes:
                out["attributes"] = jsonable(ann.attributes, f"{aw}.attributes", file)
            anns_out.append(out)
    info_out = jsonable(dict(info or {}), "info", file)
    info_out["synthloop_version"] = __version__
    return {"info": info_out, "licenses": [], "images": images_out, "annotations": anns_out, "categories": cats_out}


def write_coco_json(path: str | Path, images: list[ImageEntry], categories: list[Category], *, mask_format: str = "rle", info: dict | None = None) -> None:
    """Validate and atomically write a COCO instances JSON file (see :func:`coco_json`)."""
    doc = _coco_doc(images, categories, mask_format, info, path)
    atomic_write_json(path, doc, indent=None)


def write_coco(dataset: Dataset, out_dir: str | Path, *, mask_format: str = "rle", copy_images: bool = True) -> Path:
    """Write ``dataset`` as ``out_dir/annotations.json`` (+ ``out_dir/images/`` when copying).

    With ``copy_images`` the image files are copied (bytes unchanged) to ``out_dir/images/<file_name>``
    and the JSON names them ``images/<file_name>``. Without, no image is copied: file names are
    made relative to ``out_dir`` when ``dataset.root`` lies inside it (a generator that already
    wrote its images there), and are kept as they are otherwise (then pass ``dataset.root`` as
    ``image_root`` when reading the file back).

    Everything is validated before anything is written, and the output appears all at once.
    Returns the path of ``annotations.json``.
    """
    out_dir = Path(out_dir)
    ann_file = out_dir / ANNOTATIONS_FILE
    if copy_images:
        targets = {im.file_name: under_images(im.file_name) for im in dataset.images}
        check_unique_targets(targets, ann_file)
    else:
        root, out = dataset.root.resolve(), out_dir.resolve()
        prefix = root.relative_to(out).as_posix() if root.is_relative_to(out) else "."
        targets = {im.file_name: im.file_name if prefix == "." else f"{prefix}/{im.file_name}" for im in dataset.images}
    entries = [replace(im, file_name=targets[im.file_name]) for im in dataset.images]
    doc = _coco_doc(entries, dataset.categories, mask_format, dataset.info, ann_file)
    with staged_dir(out_dir) as stage:
        if copy_images:
            done: set[str] = set()
            for i, im in enumerate(dataset.images):
                if im.file_name in done:
                    continue
                done.add(im.file_name)
                src = safe_join(dataset.root, im.file_name, field=f"images[{i}].file_name")
                copy_file(src, stage / targets[im.file_name], field=f"images[{i}].file_name")
        atomic_write_json(stage / ANNOTATIONS_FILE, doc, indent=None)
    return ann_file
