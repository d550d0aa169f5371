"""Instance banks: foreground cut-outs (RGB + alpha) to paste onto backgrounds.

Sources:

- a COCO dataset (:meth:`InstanceBank.from_coco`: a JSON file, or any :class:`Dataset` read from
  COCO/YOLO/VOC). Polygon and RLE masks give exact binary alphas. Box-only annotations give the
  box crop with a Gaussian-feathered rectangular alpha, with one warning per source.
- a folder of RGBA cut-outs (:meth:`InstanceBank.from_rgba_folder`): ``root/<category>/*.png``;
  the alpha channel is the mask.
- image + mask pairs (:meth:`InstanceBank.from_mask_pairs`): ``root/<category>/foo.jpg`` with its
  mask in ``root/<category>/foo_mask.png`` or ``root/<category>/masks/foo.png`` (same stem; the
  first found wins). A mask is foreground where it is non-zero (0/1 masks) or >= 128 (0/255).

In both folder layouts the category is the first folder below ``root``; files directly in
``root`` take the name of ``root`` itself.

Clean-up (TERSE supplementary A.2), recorded in :attr:`InstanceBank.report`: crowd annotations,
empty masks, masks under ``min_area`` pixels and masks whose tight box disagrees with the annotated
box (IoU < ``bbox_iou_threshold``) are dropped. An empty mask *file* (folder sources) is an error
rather than a drop: it is a broken input, not an annotation defect.

Every instance remembers where it came from (source image, its size, the crop's offset), so
:func:`bank_to_dataset` rebuilds full-image annotations: COCO -> bank -> COCO gives back every kept
mask pixel for pixel.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils
from pydantic import Field

from synthloop.config import Config, build_config
from synthloop.data.coco import read_coco
from synthloop.data.dataset import Annotation, Category, Dataset, ImageEntry, decode_rle
from synthloop.data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, has_alpha, load_image, load_mask
from synthloop.errors import InputError

DROP_REASONS = ("crowd", "empty_mask", "too_small", "bbox_mismatch")


class InstanceBankConfig(Config):
    """Options of every instance source."""

    bbox_iou_threshold: float = Field(0.7, ge=0.0, le=1.0, description="drop masks whose tight box has IoU below this with the annotated box")
    min_area: int = Field(64, ge=0, description="drop masks (or boxes) with fewer pixels")
    normalize: bool = Field(False, description="square crops centred on the object, its longer side filling `fill` of the crop")
    fill: float = Field(0.7, gt=0.0, le=1.0, description="with normalize: the object's longer side is at least this fraction of the crop")
    feather: float = Field(0.05, ge=0.0, le=0.5, description="box-only alpha: Gaussian sigma as a fraction of the box's shorter side")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, description="refuse source images with more pixels")


@dataclass(eq=False)
class Instance:
    """One cut-out.

    Attributes:
        rgb: ``uint8 (h, w, 3)``.
        alpha: ``float32 (h, w)`` in [0, 1].
        source: what the bank was built from (annotation file or folder).
        source_id: ``"coco:<annotation id>"``, ``"rgba:<path>"`` or ``"pair:<path>"``.
        image_root, image_file: the source image is ``image_root / image_file``.
        image_id: id of the source image (COCO id, or its position in a folder source).
        image_size: ``(height, width)`` of the source image.
        offset: ``(x0, y0)`` of the crop's top-left pixel in the source image (negative when a
            normalised crop reaches past the image; pixels there are zero with zero alpha).
        bbox: the object's box ``(x, y, w, h)`` in the source image (annotated, or the mask's).
        has_mask: ``False`` for a box-only annotation (alpha is a feathered rectangle).
        annotation_id: the source annotation's id, if it had one.
    """

    rgb: np.ndarray
    alpha: np.ndarray
    category_id: int
    category_name: str
    source: str
    source_id: str
    image_root: str = ""
    image_file: str = ""
    image_id: int = 0
    image_size: tuple[int, int] = (0, 0)
    offset: tuple[int, int] = (0, 0)
    bbox: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    has_mask: bool = True
    annotation_id: int | None = None


@dataclass
class CleanupReport:
    """What the clean-up kept and dropped: ``dropped[reason]`` lists the dropped ``source_id`` s."""

    kept: int = 0
    dropped: dict[str, list[str]] = field(default_factory=lambda: {r: [] for r in DROP_REASONS})
    box_only: list[str] = field(default_factory=list)

    def drop(self, reason: str, source_id: str) -> None:
        self.dropped.setdefault(reason, []).append(source_id)

    def counts(self) -> dict[str, int]:
        return {"kept": self.kept, **{r: len(ids) for r, ids in self.dropped.items()}, "box_only": len(self.box_only)}

    def merge(self, other: CleanupReport) -> CleanupReport:
        out = CleanupReport(self.kept + other.kept, {r: list(v) for r, v in self.dropped.items()}, self.box_only + other.box_only)
        for r, ids in other.dropped.items():
            out.dropped.setdefault(r, []).extend(ids)
        return out

    def __str__(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.counts().items())


def _options(config: InstanceBankConfig | None, overrides: dict) -> InstanceBankConfig:
    base = config.to_dict() if config is not None else {}
    return build_config(InstanceBankConfig, {**base, **overrides}, source="instance bank options")


def feathered_box_alpha(height: int, width: int, feather: float) -> np.ndarray:
    """``float32 (height, width)`` alpha: a rectangle inset by 2 sigma, Gaussian-blurred (sigma = feather * shorter side)."""
    sigma = feather * min(height, width)
    if sigma < 0.3:
        return np.ones((height, width), np.float32)
    inset_y = min(int(math.ceil(2 * sigma)), (height - 1) // 2)
    inset_x = min(int(math.ceil(2 * sigma)), (width - 1) // 2)
    a = np.zeros((height, width), np.float32)
    a[inset_y : height - inset_y, inset_x : width - inset_x] = 1.0
    a = cv2.GaussianBlur(a, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)
    return np.clip(a / max(float(a.max()), 1e-6), 0.0, 1.0)


def _crop(img: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """``img[y0:y1, x0:x1]`` with zero padding where the window leaves the image."""
    H, W = img.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0, *img.shape[2:]), img.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = img[sy0:sy1, sx0:sx1]
    return out


def _window(box: tuple[int, int, int, int], cfg: InstanceBankConfig) -> tuple[int, int, int, int]:
    """The crop window for an object occupying pixels ``[x0, x1) x [y0, y1)``."""
    x0, y0, x1, y1 = box
    if not cfg.normalize:
        return box
    side = max(x1 - x0, y1 - y0)
    size = max(int(side / cfg.fill), side)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    nx0, ny0 = int(math.floor(cx - size / 2.0)), int(math.floor(cy - size / 2.0))
    return nx0, ny0, nx0 + size, ny0 + size


def _cut(
    img: np.ndarray, alpha_full_crop: np.ndarray, box: tuple[int, int, int, int], cfg: InstanceBankConfig
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Cut ``img`` around ``box``; ``alpha_full_crop`` is the alpha of exactly ``box``."""
    wx0, wy0, wx1, wy1 = _window(box, cfg)
    rgb = _crop(img, wx0, wy0, wx1, wy1)
    alpha = np.zeros((wy1 - wy0, wx1 - wx0), np.float32)
    x0, y0, x1, y1 = box
    alpha[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0] = alpha_full_crop
    return rgb, alpha, (wx0, wy0)


def _category_folders(root: Path, files: list[Path], categories: list[Category] | None) -> tuple[list[Category], dict[Path, Category]]:
    """Category of each file (first folder below ``root``, or ``root``'s name); ids from ``categories`` by name."""
    names = {f: (f.relative_to(root).parts[0] if len(f.relative_to(root).parts) > 1 else root.resolve().name) for f in files}
    cats = list(categories) if categories is not None else []
    by_name = {c.name: c for c in cats}
    nxt = max((c.id for c in cats), default=0) + 1
    for name in sorted(set(names.values())):
        if name not in by_name:
            by_name[name] = Category(nxt, name)
            cats.append(by_name[name])
            nxt += 1
    return cats, {f: by_name[n] for f, n in names.items()}


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


class InstanceBank:
    """Cut-outs with categories; ``bank[i]`` is an :class:`Instance`, ``bank.tensor(i)`` its tensors.

    Build one with :meth:`from_coco`, :meth:`from_rgba_folder` or :meth:`from_mask_pairs`
    (options: the fields of :class:`InstanceBankConfig`, as ``config=`` and/or keywords), join
    several with :meth:`concat`.
    """

    def __init__(self, instances: list[Instance], categories: list[Category], report: CleanupReport | None = None, *, tensor_cache_size: int = 4096):
        self.instances = list(instances)
        self.categories = list(categories)
        self.report = report if report is not None else CleanupReport(kept=len(self.instances))
        self.by_category: dict[int, list[int]] = {}
        for i, inst in enumerate(self.instances):
            self.by_category.setdefault(inst.category_id, []).append(i)
        self._cache: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._cache_size = int(tensor_cache_size)

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, index: int) -> Instance:
        return self.instances[index]

    def __iter__(self) -> Iterator[Instance]:
        return iter(self.instances)

    def __repr__(self) -> str:
        return f"InstanceBank({len(self)} instances, {len(self.categories)} categories; {self.report})"

    def tensor(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rgb Tensor[3, h, w], alpha Tensor[1, h, w])`` float32 in [0, 1], cached (LRU; do not modify in place)."""
        hit = self._cache.get(index)
        if hit is not None:
            self._cache.move_to_end(index)
            return hit
        inst = self.instances[index]
        rgb = torch.from_numpy(np.ascontiguousarray(inst.rgb.transpose(2, 0, 1))).float().div_(255.0)
        alpha = torch.from_numpy(np.ascontiguousarray(inst.alpha, dtype=np.float32)).unsqueeze(0)
        hit = (rgb, alpha)
        if self._cache_size > 0:
            self._cache[index] = hit
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return hit

    @classmethod
    def concat(cls, banks: list[InstanceBank]) -> InstanceBank:
        """One bank with the instances of ``banks`` (categories joined by id; a clash of names is an error)."""
        cats: dict[int, Category] = {}
        report = CleanupReport()
        for bank in banks:
            for c in bank.categories:
                if c.id in cats and cats[c.id].name != c.name:
                    raise InputError(f"category id {c.id} is {cats[c.id].name!r} in one bank and {c.name!r} in another", field="categories")
                cats.setdefault(c.id, c)
            report = report.merge(bank.report)
        return cls([i for b in banks for i in b.instances], sorted(cats.values(), key=lambda c: c.id), report)

    # ----------------------------------------------------------------------------------------
    # sources

    @classmethod
    def from_coco(
        cls,
        src: str | Path | Dataset,
        *,
        image_root: str | Path | None = None,
        category_ids: list[int] | None = None,
        config: InstanceBankConfig | None = None,
        **options: object,
    ) -> InstanceBank:
        """Cut-outs of the annotations of a COCO JSON file (or of a :class:`Dataset`).

        Each source image is decoded once. ``category_ids`` restricts the bank to those categories.
        """
        cfg = _options(config, options)
        if isinstance(src, Dataset):
            dataset, source = src, str(src.root)
        else:
            dataset, source = read_coco(src, image_root), str(src)
        names = {c.id: c.name for c in dataset.categories}
        wanted = set(category_ids) if category_ids is not None else None
        report = CleanupReport()
        instances: list[Instance] = []
        for i, entry in enumerate(dataset.images):
            todo: list[tuple[Annotation, str, dict | None, tuple[int, int, int, int]]] = []
            for j, ann in enumerate(entry.annotations):
                if wanted is not None and ann.category_id not in wanted:
                    continue
                sid = f"coco:{ann.id}" if ann.id is not None else f"coco:image{entry.id}/{j}"
                if ann.category_id not in names:
                    raise InputError(
                        f"category_id {ann.category_id} is not the id of any category", file=source, field=f"images[{i}].annotations[{j}].category_id"
                    )
                picked = cls._check(ann, sid, entry, cfg, report, source)
                if picked is not None:
                    todo.append((ann, sid, *picked))
            if not todo:
                continue
            path = dataset.image_path(entry)
            # errors name the annotation file and the entry (images[i] is the i-th image of the JSON file)
            if not path.is_file():
                raise InputError(f"image file not found: {path}", file=source, field=f"images[{i}].file_name")
            try:
                img = load_image(path, mode="RGB", max_pixels=cfg.max_pixels)
            except InputError as e:
                raise InputError(f"{path}: {e.message}", file=source, field=f"images[{i}].file_name") from None
            if img.shape[:2] != (entry.height, entry.width):
                raise InputError(
                    f"the image file {path} is {img.shape[1]}x{img.shape[0]} but the entry says {entry.width}x{entry.height}",
                    file=source,
                    field=f"images[{i}].width",
                )
            for ann, sid, rle, box in todo:
                x0, y0, x1, y1 = box
                if rle is not None:
                    a = decode_rle(rle)[y0:y1, x0:x1].astype(np.float32)
                else:
                    a = feathered_box_alpha(y1 - y0, x1 - x0, cfg.feather)
                    report.box_only.append(sid)
                rgb, alpha, offset = _cut(img, a, box, cfg)
                instances.append(
                    Instance(
                        rgb=rgb,
                        alpha=alpha,
                        category_id=ann.category_id,
                        category_name=names[ann.category_id],
                        source=source,
                        source_id=sid,
                        image_root=str(dataset.root),
                        image_file=entry.file_name,
                        image_id=entry.id,
                        image_size=(entry.height, entry.width),
                        offset=offset,
                        bbox=tuple(float(v) for v in ann.bbox),
                        has_mask=rle is not None,
                        annotation_id=ann.id,
                    )
                )
        report.kept = len(instances)
        if report.box_only:
            warnings.warn(
                f"{source}: {len(report.box_only)} box-only annotation(s) have no mask; their cut-outs use the box with a feathered rectangular alpha",
                stacklevel=2,
            )
        return cls(instances, dataset.categories, report)

    @staticmethod
    def _check(
        ann: Annotation, sid: str, entry: ImageEntry, cfg: InstanceBankConfig, report: CleanupReport, source: str
    ) -> tuple[dict | None, tuple[int, int, int, int]] | None:
        """TERSE A.2 clean-up of one annotation: ``(rle or None, pixel box x0, y0, x1, y1)``, or ``None`` when dropped."""
        if ann.iscrowd:
            report.drop("crowd", sid)
            return None
        if not ann.has_mask:
            x, y, w, h = (float(v) for v in ann.bbox)
            x0, y0 = max(int(math.floor(x)), 0), max(int(math.floor(y)), 0)
            x1, y1 = min(int(math.ceil(x + w)), entry.width), min(int(math.ceil(y + h)), entry.height)
            if x1 <= x0 or y1 <= y0 or w * h < max(cfg.min_area, 1):
                report.drop("too_small", sid)
                return None
            return None, (x0, y0, x1, y1)
        if ann.mask_shape != (entry.height, entry.width):
            raise InputError(
                f"mask is {ann.mask_shape} (H, W), the image is ({entry.height}, {entry.width})",
                file=source,
                field=f"image {entry.id} ({entry.file_name}) annotation {sid} mask",
            )
        rle = ann.rle
        area = float(mask_utils.area(rle))
        if area == 0:
            report.drop("empty_mask", sid)
            return None
        if area < cfg.min_area:
            report.drop("too_small", sid)
            return None
        mb = mask_utils.toBbox(rle)
        iou = float(mask_utils.iou([mb.tolist()], [list(map(float, ann.bbox))], [0])[0][0])
        if iou < cfg.bbox_iou_threshold:
            report.drop("bbox_mismatch", sid)
            return None
        x, y, w, h = (int(round(v)) for v in mb)
        return rle, (x, y, x + w, y + h)

    @classmethod
    def from_rgba_folder(
        cls, root: str | Path, *, categories: list[Category] | None = None, config: InstanceBankConfig | None = None, **options: object
    ) -> InstanceBank:
        """Cut-outs from RGBA images ``root/<category>/*.png`` (any format with an alpha channel).

        ``categories`` fixes the ids of known names (others are numbered after them); by default
        the folder names are numbered 1..N in sorted order.
        """
        cfg = _options(config, options)
        root = Path(root)
        return cls._from_cutouts(root, _image_files(root), categories, cfg, "rgba", _load_rgba)

    @classmethod
    def from_mask_pairs(
        cls, root: str | Path, *, categories: list[Category] | None = None, config: InstanceBankConfig | None = None, **options: object
    ) -> InstanceBank:
        """Cut-outs from image + mask pairs: ``foo.jpg`` with ``foo_mask.png`` or ``masks/foo.png`` beside it.

        Raises:
            InputError: an image without a mask, a mask of another size than its image, an empty mask.
        """
        cfg = _options(config, options)
        root = Path(root)
        files = [f for f in _image_files(root) if not f.stem.endswith("_mask") and f.parent.name != "masks"]
        return cls._from_cutouts(root, files, categories, cfg, "pair", _load_pair)

    @classmethod
    def _from_cutouts(
        cls, root: Path, files: list[Path], categories: list[Category] | None, cfg: InstanceBankConfig, kind: str,
        load: Callable[[Path, InstanceBankConfig], tuple[np.ndarray, np.ndarray, int]],
    ) -> InstanceBank:  # fmt: skip
        """One instance per file of a folder: ``load(file, cfg)`` gives the image ``(H, W, 3)``, its
        alpha ``float32 (H, W)`` and the object's area in pixels (objects under ``cfg.min_area`` are
        dropped); the category is the file's folder (:func:`_category_folders`)."""
        cats, cat_of = _category_folders(root, files, categories)
        report = CleanupReport()
        instances = []
        for k, f in enumerate(files, 1):
            rel = f.relative_to(root).as_posix()
            sid = f"{kind}:{rel}"
            img, alpha, area = load(f, cfg)
            if area < cfg.min_area:
                report.drop("too_small", sid)
                continue
            box = _tight_box(alpha > 0)
            x0, y0, x1, y1 = box
            rgb, a, offset = _cut(img, alpha[y0:y1, x0:x1], box, cfg)
            H, W = alpha.shape
            instances.append(_folder_instance(rgb, a, cat_of[f], root, sid, rel, k, (H, W), offset, box))
        report.kept = len(instances)
        return cls(instances, cats, report)


def _load_rgba(f: Path, cfg: InstanceBankConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """An RGBA cut-out: its RGB, alpha in [0, 1] and area (alpha >= 128 of 255)."""
    if not has_alpha(f, max_pixels=cfg.max_pixels):
        raise InputError("cut-out has no alpha channel (expected RGBA)", file=f, field="alpha")
    rgba = load_image(f, mode="RGBA", max_pixels=cfg.max_pixels)
    if not (rgba[..., 3] > 0).any():
        raise InputError("cut-out is fully transparent", file=f, field="alpha")
    alpha = rgba[..., 3].astype(np.float32) / 255.0
    return np.ascontiguousarray(rgba[..., :3]), alpha, int(np.count_nonzero(rgba[..., 3] >= 128))


def _load_pair(f: Path, cfg: InstanceBankConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """An image and its mask (``foo_mask.png`` or ``masks/foo.png`` beside it): RGB, mask as 0/1 alpha, area."""
    mask_path = next((m for m in (f.with_name(f"{f.stem}_mask.png"), f.parent / "masks" / f"{f.stem}.png") if m.is_file()), None)
    if mask_path is None:
        raise InputError(f"no mask found (expected {f.stem}_mask.png or masks/{f.stem}.png next to it)", file=f, field="mask")
    img = load_image(f, mode="RGB", max_pixels=cfg.max_pixels)
    mask = load_mask(mask_path, max_pixels=cfg.max_pixels)
    if mask.shape != img.shape[:2]:
        raise InputError(f"mask is {mask.shape[1]}x{mask.shape[0]}, its image {f.name} is {img.shape[1]}x{img.shape[0]}", file=mask_path, field="size")
    if not mask.any():
        raise InputError("mask is empty", file=mask_path, field="mask")
    return img, mask.astype(np.float32), int(np.count_nonzero(mask))


def _folder_instance(
    rgb: np.ndarray,
    alpha: np.ndarray,
    cat: Category,
    root: Path,
    sid: str,
    rel: str,
    image_id: int,
    size: tuple[int, int],
    offset: tuple[int, int],
    box: tuple[int, int, int, int],
) -> Instance:
    x0, y0, x1, y1 = box
    return Instance(
        rgb=rgb,
        alpha=alpha,
        category_id=cat.id,
        category_name=cat.name,
        source=str(root),
        source_id=sid,
        image_root=str(root),
        image_file=rel,
        image_id=image_id,
        image_size=size,
        offset=offset,
        bbox=(float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
    )


def _image_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise InputError("folder not found", file=root)
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise InputError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found", file=root)
    return files


def bank_to_dataset(bank: InstanceBank) -> Dataset:
    """A :class:`Dataset` of the bank's source images with one annotation per instance.

    Masks are the instances' alphas (>= 0.5) put back at their offsets, so for binary-mask sources
    (COCO, mask pairs) they equal the source masks pixel for pixel; box-only instances give
    box-only annotations with their original boxes. Image ids are kept when the bank has one
    source; file names are relative to the common folder of the sources' roots.
    """
    roots = sorted({inst.image_root for inst in bank})
    common = Path(os.path.commonpath(roots)) if roots else Path(".")
    keep_ids = len({inst.source for inst in bank}) <= 1
    images: dict[tuple[str, str, int], ImageEntry] = {}
    for inst in bank:
        key = (inst.image_root, inst.image_file, inst.image_id)
        entry = images.get(key)
        if entry is None:
            file_name = (Path(inst.image_root) / inst.image_file).relative_to(common).as_posix() if len(roots) > 1 else inst.image_file
            H, W = inst.image_size
            entry = ImageEntry(inst.image_id if keep_ids else len(images) + 1, file_name, W, H)
            images[key] = entry
        mask = None
        if inst.has_mask:
            H, W = inst.image_size
            x0, y0 = inst.offset
            h, w = inst.alpha.shape
            on = inst.alpha >= 0.5
            mask = np.zeros((H, W), bool)
            sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
            mask[sy0:sy1, sx0:sx1] = on[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
        entry.annotations.append(Annotation(inst.category_id, inst.bbox, mask, id=inst.annotation_id))
    return Dataset(root=common, categories=list(bank.categories), images=list(images.values()), info={})
