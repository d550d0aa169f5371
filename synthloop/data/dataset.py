"""The in-memory dataset every reader returns and every writer takes.

A :class:`Dataset` is a folder (``root``), categories and images; each :class:`ImageEntry` holds
its :class:`Annotation` s. Boxes are COCO ``xywh`` in pixels (continuous coordinates: pixel
``(x, y)`` covers ``[x, x+1) x [y, y+1)``). Masks are full-image ``bool (H, W)``.

Masks read from annotation files are kept as compressed COCO RLE (a few hundred bytes each instead
of ``H * W``) and decoded each time :attr:`Annotation.mask` is read; assign to ``mask`` to replace
one. Writers use :attr:`Annotation.rle` directly, so reading and writing a dataset never decodes
a mask.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from synthloop.data.images import safe_join


@dataclass
class Category:
    id: int
    name: str
    supercategory: str = ""


@dataclass(eq=False)
class Annotation:
    """One object: category, COCO ``xywh`` box, optional full-image mask.

    Attributes:
        category_id: id of a :class:`Category` of the dataset.
        bbox: ``(x, y, w, h)`` in pixels.
        mask: ``bool (H, W)`` at the size of the image, or ``None`` for a box-only annotation.
        iscrowd: COCO's crowd flag (0 or 1).
        attributes: extra per-object fields (visibility, truncation, params, ...), written into the
            COCO annotation under ``"attributes"``.
        id: the annotation id read from a file (kept on write when all ids are unique), or ``None``.
    """

    category_id: int
    bbox: tuple[float, float, float, float]
    mask: np.ndarray | None = field(default=None, repr=False)
    iscrowd: int = 0
    attributes: dict = field(default_factory=dict)
    id: int | None = None

    @classmethod
    def from_rle(
        cls,
        category_id: int,
        bbox: tuple[float, float, float, float],
        rle: dict,
        *,
        iscrowd: int = 0,
        attributes: dict | None = None,
        id: int | None = None,
        polygons: list[list[float]] | None = None,
    ) -> Annotation:
        """An annotation whose mask is held as compressed RLE ``{"size": [H, W], "counts": bytes | str}``.

        ``polygons`` (optional) are the COCO polygons the RLE was rasterised from; writers in
        polygon mode write them back unchanged instead of re-tracing the mask.
        """
        ann = cls(category_id, bbox, None, iscrowd, attributes if attributes is not None else {}, id)
        counts = rle.get("counts")
        if isinstance(counts, str):  # JSON-style RLE (as ``coco.mask_to_rle`` returns it)
            rle = {**rle, "counts": counts.encode("ascii")}
        ann._rle = rle
        ann._polygons = polygons
        return ann

    @property
    def has_mask(self) -> bool:
        """Whether a mask is attached (without decoding it)."""
        return self._mask is not None or self._rle is not None

    @property
    def mask_shape(self) -> tuple[int, int] | None:
        """``(H, W)`` of the attached mask, or ``None`` (without decoding it)."""
        if self._mask is not None:
            return (int(self._mask.shape[0]), int(self._mask.shape[1]))
        if self._rle is not None:
            return (int(self._rle["size"][0]), int(self._rle["size"][1]))
        return None

    @property
    def rle(self) -> dict | None:
        """The mask as compressed COCO RLE (``counts`` as bytes), or ``None`` for box-only."""
        if self._mask is not None:  # encoded on every call: the array may have been edited in place
            return mask_utils.encode(np.asfortranarray(self._mask, dtype=np.uint8))
        return self._rle

    @property
    def polygons(self) -> list[list[float]] | None:
        """The COCO polygons this annotation was read from, if it was read from polygons."""
        return self._polygons

    @property
    def area(self) -> float:
        """Mask pixel count, else box ``w * h``."""
        if self._mask is not None:
            return float(np.count_nonzero(self._mask))
        if self._rle is not None:
            return float(mask_utils.area(self._rle))
        return float(self.bbox[2]) * float(self.bbox[3])


def decode_rle(rle: dict) -> np.ndarray:
    """``bool (H, W)`` mask of a compressed COCO RLE (``counts`` bytes or str)."""
    with warnings.catch_warnings():
        # pycocotools' decoder trips numpy 2's copy-keyword deprecation on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def _get_mask(self: Annotation) -> np.ndarray | None:
    if self._mask is not None:
        return self._mask
    if self._rle is not None:
        return decode_rle(self._rle)
    return None


def _set_mask(self: Annotation, value: Any) -> None:
    if value is not None:
        value = np.asarray(value)
        if value.ndim != 2:
            raise ValueError(f"mask must be (H, W), got shape {value.shape}")
        if value.dtype != bool:
            value = value > 0
    self._mask = value
    self._rle = None
    self._polygons = None


# ``mask`` is a dataclass field (so it is a constructor argument) backed by a property, so that
# masks read from files can stay RLE-compressed until they are used.
Annotation.mask = property(_get_mask, _set_mask, doc="``bool (H, W)`` full-image mask, or ``None``.")  # type: ignore[assignment]


@dataclass
class ImageEntry:
    id: int
    file_name: str
    width: int
    height: int
    annotations: list[Annotation] = field(default_factory=list)
    attributes: dict = field(default_factory=dict)


@dataclass
class Dataset:
    root: Path
    categories: list[Category]
    images: list[ImageEntry]
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def image_path(self, entry: ImageEntry) -> Path:
        """Path of ``entry``'s image file (``InputError`` when its ``file_name`` escapes ``root``)."""
        return safe_join(self.root, entry.file_name, field=f"image {entry.id} file_name")

    @property
    def num_annotations(self) -> int:
        return sum(len(im.annotations) for im in self.images)
