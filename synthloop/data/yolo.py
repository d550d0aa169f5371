"""YOLO (Ultralytics / YOLOv5 style) datasets: ``data.yaml`` + ``images/`` + ``labels/``.

Layout written by :func:`write_yolo`::

    out_dir/data.yaml            train/val: images (or train.txt/val.txt/test.txt lists when images
                                 carry a "split" attribute), nc, names {index: name}, category_ids
    out_dir/images/<name>        image files, bytes unchanged
    out_dir/labels/<name>.txt    one object per line, coordinates normalised to [0, 1]

One label format per dataset: when every (non-crowd) annotation has a mask the labels are
segments, ``class x1 y1 x2 y2 ...`` (YOLO-seg); otherwise boxes, ``class cx cy w h``. A mask made of
several pieces becomes one outline that visits the pieces along zero-area connecting segments
(as Ultralytics' own COCO converter does); holes are filled in. Crowd annotations and empty masks
have no YOLO form and are skipped with a warning. Class indices follow the categories sorted by
id; ``category_ids`` in ``data.yaml`` records the ids so that reading gives them back.

:func:`read_yolo` reads both label kinds (even mixed in one file). Segments are rasterised with
pycocotools after scaling to pixels, so a mask written by :func:`write_yolo` reads back exactly
(holes aside); boxes of segment labels are the tight boxes of those masks.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import yaml
from scipy.spatial.distance import cdist

from synthloop.data._io import check_unique_targets, copy_file, staged_dir, under_images
from synthloop.data.coco import mask_bbox, mask_to_polygons, polygons_to_rle
from synthloop.data.dataset import Annotation, Category, Dataset, ImageEntry
from synthloop.data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, image_size, safe_join
from synthloop.errors import InputError
from synthloop.utils.atomic import atomic_write_text
from synthloop.utils.text import read_text

SPLITS = ("train", "val", "test")
_YAML_NAMES = ("data.yaml", "dataset.yaml", "data.yml")


def merge_polygons(polygons: list[list[float]]) -> list[float]:
    """Join polygons ``[[x1, y1, ...], ...]`` into one outline with zero-area connections.

    Each polygon is entered from the previous one at their closest pair of vertices, walked
    around, and left the way it was entered, so a rasteriser using the even-odd rule (pycocotools)
    fills exactly the union of the (disjoint) inputs.
    """
    pts = [np.asarray(p, np.float64).reshape(-1, 2) for p in polygons]
    if len(pts) == 1:
        return [float(v) for v in pts[0].ravel()]
    n = len(pts)
    entry, exit_ = [0] * n, [0] * n
    for k in range(n - 1):
        d = cdist(pts[k], pts[k + 1])
        exit_[k], entry[k + 1] = (int(v) for v in np.unravel_index(np.argmin(d), d.shape))
    seq: np.ndarray | None = None
    for k in reversed(range(n)):
        p = np.roll(pts[k], -entry[k], axis=0)
        p = np.concatenate([p, p[:1]])  # closed: back at the entry vertex
        if seq is not None:
            at = (exit_[k] - entry[k]) % len(pts[k])
            p = np.concatenate([p[: at + 1], seq, p[at:]])
        seq = p
    assert seq is not None
    return [float(v) for v in seq.ravel()]


def _label_rel(image_rel: str) -> str:
    """``images/a/b.jpg`` -> ``labels/a/b.txt`` (the last ``images`` folder becomes ``labels``)."""
    parts = list(PurePosixPath(image_rel).parts)
    idx = max(i for i, p in enumerate(parts[:-1]) if p == "images")
    parts[idx] = "labels"
    return str(PurePosixPath(*parts).with_suffix(".txt"))


def _fmt(values: list[float] | np.ndarray) -> str:
    return " ".join(map("{:.6f}".format, np.clip(np.asarray(values, np.float64), 0.0, 1.0).tolist()))


def write_yolo(dataset: Dataset, out_dir: str | Path) -> Path:
    """Write ``dataset`` in YOLO format (see the module docstring); returns the ``data.yaml`` path.

    Everything is validated before anything is written, and the output appears all at once.
    """
    from synthloop import __version__

    out_dir = Path(out_dir)
    yaml_path = out_dir / "data.yaml"
    cats = sorted(dataset.categories, key=lambda c: c.id)
    index = {c.id: i for i, c in enumerate(cats)}
    if len(index) != len(cats):
        raise InputError("duplicate category ids", file=yaml_path, field="categories")
    usable = [a for im in dataset.images for a in im.annotations if not a.iscrowd]
    segments = bool(usable) and all(a.has_mask for a in usable)
    targets = {im.file_name: under_images(im.file_name) for im in dataset.images}
    check_unique_targets(targets, yaml_path)

    labels: dict[str, str] = {}
    skipped = {"crowd": 0, "empty mask": 0}
    splits: dict[str, list[str]] = {}
    for i, im in enumerate(dataset.images):
        lines = []
        W, H = float(im.width), float(im.height)
        for j, ann in enumerate(im.annotations):
            where = f"images[{i}].annotations[{j}]"
            if ann.category_id not in index:
                raise InputError(f"category_id {ann.category_id} is not the id of any category", file=yaml_path, field=f"{where}.category_id")
            if ann.iscrowd:
                skipped["crowd"] += 1
                continue
            cls = index[ann.category_id]
            if segments:
                if ann.mask_shape != (im.height, im.width):
                    raise InputError(f"mask is {ann.mask_shape} (H, W), the image is ({im.height}, {im.width})", file=yaml_path, field=f"{where}.mask")
                polys = ann.polygons if ann.polygons is not None else mask_to_polygons(ann.mask)
                if not polys:
                    skipped["empty mask"] += 1
                    continue
                norm = np.asarray(merge_polygons(polys)).reshape(-1, 2) / (W, H)
                lines.append(f"{cls} {_fmt(norm.ravel())}")
            else:
                x, y, w, h = (float(v) for v in ann.bbox)
                if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
                    raise InputError(f"bbox must be 4 finite numbers [x, y, w >= 0, h >= 0], got {ann.bbox!r}", file=yaml_path, field=f"{where}.bbox")
                lines.append(f"{cls} {_fmt([(x + w / 2) / W, (y + h / 2) / H, w / W, h / H])}")
        labels[_label_rel(targets[im.file_name])] = "".join(line + "\n" for line in lines)
        split = im.attributes.get("split")
        if split is not None:
            splits.setdefault(str(split), []).append(targets[im.file_name])
    skipped = {k: v for k, v in skipped.items() if v}
    if skipped:
        warnings.warn(f"{yaml_path}: YOLO has no form for " + ", ".join(f"{v} {k} annotation(s)" for k, v in skipped.items()) + "; skipped", stacklevel=2)

    meta: dict[str, Any] = {}
    lists: dict[str, str] = {}
    if splits:
        unknown = sorted(set(splits) - set(SPLITS))
        if unknown:
            raise InputError(f"split {unknown[0]!r} is not one of {SPLITS}", file=yaml_path, field="images[].attributes.split")
        unsplit = [targets[im.file_name] for im in dataset.images if im.attributes.get("split") is None]
        if unsplit:
            splits.setdefault("train", []).extend(unsplit)
        for s in SPLITS:
            if s in splits:
                meta[s] = f"{s}.txt"
                lists[f"{s}.txt"] = "".join(f"./{p}\n" for p in splits[s])
        meta.setdefault("val", meta.get("train", next(iter(meta.values()))))
        meta.setdefault("train", meta["val"])
    else:
        meta = {"train": "images", "val": "images"}
    meta["nc"] = len(cats)
    meta["names"] = {i: c.name for i, c in enumerate(cats)}
    meta["category_ids"] = [int(c.id) for c in cats]
    header = f"# YOLO {'segment' if segments else 'detect'} dataset written by synthloop {__version__}\n"
    text = header + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)

    with staged_dir(out_dir) as stage:
        for i, im in enumerate(dataset.images):
            copy_file(safe_join(dataset.root, im.file_name, field=f"images[{i}].file_name"), stage / targets[im.file_name], field=f"images[{i}].file_name")
        for rel, content in labels.items():
            atomic_write_text(stage / rel, content)
        for name, content in lists.items():
            atomic_write_text(stage / name, content)
        atomic_write_text(stage / "data.yaml", text)
    return yaml_path


def _find_yaml(src: Path) -> Path:
    if src.is_file():
        return src
    if not src.is_dir():
        raise InputError("YOLO dataset not found", file=src)
    for name in _YAML_NAMES:
        if (src / name).is_file():
            return src / name
    found = sorted(src.glob("*.yaml"))
    if len(found) == 1:
        return found[0]
    raise InputError(f"no data.yaml found (expected one of {', '.join(_YAML_NAMES)})", file=src)


def _names(meta: dict, file: Path) -> list[str]:
    names = meta.get("names")
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return names
    if isinstance(names, dict) and all(isinstance(k, int) and isinstance(v, str) for k, v in names.items()):
        if sorted(names) != list(range(len(names))):
            raise InputError(f"class indices must be 0..{len(names) - 1}, got {sorted(names)}", file=file, field="names")
        return [names[i] for i in range(len(names))]
    raise InputError("names must be a list of class names or a mapping {index: name}", file=file, field="names")


def _split_images(root: Path, entry: Any, yaml_path: Path, field: str) -> list[str]:
    """Image paths (relative to ``root``) of one split entry: folders, list files, or lists of them."""
    items = entry if isinstance(entry, list) else [entry]
    out: list[str] = []
    for k, item in enumerate(items):
        where = field if not isinstance(entry, list) else f"{field}[{k}]"
        if not isinstance(item, str):
            raise InputError(f"must be a folder or a .txt list of images, got {item!r}", file=yaml_path, field=where)
        path = safe_join(root, item, file=yaml_path, field=where)
        if path.is_dir():
            out.extend(sorted(p.relative_to(root).as_posix() for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()))
        elif path.is_file() and path.suffix == ".txt":
            for n, line in enumerate(read_text(path).splitlines(), 1):
                line = line.strip()
                if not line:
                    continue
                rel = (path.parent.relative_to(root) / line).as_posix() if line.startswith("./") else line
                safe_join(root, rel, file=path, field=f"line {n}")
                out.append(PurePosixPath(rel).as_posix().removeprefix("./"))
        else:
            raise InputError(f"{path} is neither a folder nor a .txt list of images", file=yaml_path, field=where)
    return out


def _parse_labels(path: Path, n_classes: int, width: int, height: int, cat_ids: list[int]) -> list[Annotation]:
    anns = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"line {n}"
        try:
            cls = int(parts[0])
            vals = [float(v) for v in parts[1:]]
        except ValueError:
            raise InputError(f"expected 'class x y ...' numbers, got {line!r}", file=path, field=where) from None
        if not 0 <= cls < n_classes:
            raise InputError(f"class {cls} is not in 0..{n_classes - 1}", file=path, field=where)
        if not all(math.isfinite(v) and -1e-6 <= v <= 1 + 1e-6 for v in vals):
            raise InputError("coordinates must be normalised to [0, 1]", file=path, field=where)
        if len(vals) == 4:
            cx, cy, w, h = vals
            bbox = ((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height)
            anns.append(Annotation(cat_ids[cls], bbox))
        elif len(vals) >= 6 and len(vals) % 2 == 0:
            poly = [v * (width if k % 2 == 0 else height) for k, v in enumerate(vals)]
            rle = polygons_to_rle([poly], height, width)
            bbox = mask_bbox(rle)
            if bbox[2] == 0 or bbox[3] == 0:  # a sliver that covers no pixel centre: its extent
                xs, ys = poly[0::2], poly[1::2]
                bbox = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
            anns.append(Annotation.from_rle(cat_ids[cls], bbox, rle, polygons=[poly]))
        else:
            raise InputError(f"expected 4 box values or an even number (>= 6) of polygon values, got {len(vals)}", file=path, field=where)
    return anns


def read_yolo(src: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Dataset:
    """Read a YOLO dataset: ``src`` is its folder or its ``data.yaml``.

    Images come from the ``train``/``val``/``test`` entries (folders or ``.txt`` lists, relative
    to the YAML's folder, or to its ``path`` when that is relative). An image found in exactly one
    split gets ``attributes["split"]``. A missing label file means an image without objects.
    Category ids come from ``category_ids`` when present, else ``class index + 1``.
    """
    yaml_path = _find_yaml(Path(src))
    try:
        meta = yaml.safe_load(read_text(yaml_path))
    except yaml.YAMLError as e:
        raise InputError(f"invalid YAML: {e}", file=yaml_path) from None
    if not isinstance(meta, dict):
        raise InputError("top level must be a mapping", file=yaml_path)
    names = _names(meta, yaml_path)
    cat_ids = meta.get("category_ids", list(range(1, len(names) + 1)))
    if not (isinstance(cat_ids, list) and len(cat_ids) == len(names) and all(isinstance(c, int) for c in cat_ids) and len(set(cat_ids)) == len(cat_ids)):
        raise InputError(f"must be {len(names)} distinct integers, one per name", file=yaml_path, field="category_ids")
    root = yaml_path.parent
    if isinstance(meta.get("path"), str) and meta["path"].strip():
        root = root / meta["path"]  # an absolute path replaces the YAML's folder
        if not root.is_dir():
            raise InputError(f"dataset folder {root} not found", file=yaml_path, field="path")
    found: dict[str, set[str]] = {}
    order: list[str] = []
    for split in SPLITS:
        if meta.get(split) is None:
            continue
        for rel in _split_images(root, meta[split], yaml_path, split):
            if rel not in found:
                found[rel] = set()
                order.append(rel)
            found[rel].add(split)
    if not found and not any(meta.get(s) for s in SPLITS):
        raise InputError("no train/val/test entry", file=yaml_path, field="train")

    images = []
    for i, rel in enumerate(order, 1):
        img_path = safe_join(root, rel, file=yaml_path, field=min(found[rel]))  # a linked image may not lead outside
        if "images" not in PurePosixPath(rel).parts[:-1]:
            raise InputError("YOLO images must lie under an 'images' folder (labels are found by replacing it with 'labels')", file=img_path)
        if not img_path.is_file():
            raise InputError("image file not found", file=img_path)
        w, h = image_size(img_path, max_pixels=max_pixels)
        label = root / _label_rel(rel)
        anns = _parse_labels(label, len(names), w, h, cat_ids) if label.is_file() else []
        attrs = {"split": next(iter(found[rel]))} if len(found[rel]) == 1 else {}
        images.append(ImageEntry(i, rel, w, h, anns, attrs))
    categories = [Category(cid, name) for cid, name in zip(cat_ids, names, strict=True)]
    return Dataset(root=root, categories=categories, images=images, info={})
