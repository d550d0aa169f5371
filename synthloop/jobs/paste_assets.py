"""Build a paste job's instance and background sources from its config (once per process), and
warn when a background source is also a foreground source (:func:`background_overlap`)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from synthloop.compose.params import SceneParams
from synthloop.compose.sampler import sample_scene
from synthloop.data.builtin import BUILTIN_BACKGROUND_SOURCES, MnistDigits
from synthloop.data.dataset import Category
from synthloop.errors import InputError
from synthloop.jobs.paste_config import BACKGROUND_NAMES, BackgroundsConfig, InstancesConfig, PasteConfig
from synthloop.utils.seeding import derive_seed


@dataclass
class Assets:
    """Decoded sources of a paste job: what :func:`~synthloop.compose.apply.apply_scene` needs,
    the categories to write, and the scene sampler matching the placement strategy."""

    instances: Any
    backgrounds: Any
    categories: list[Category]
    psis: bool = False

    def sample(self, cfg: PasteConfig, generator: torch.Generator, seed: int) -> SceneParams:
        if self.psis:
            from synthloop.compose.psis import sample_psis

            return sample_psis(cfg.scene, self.instances, generator, seed=seed)
        return sample_scene(cfg.scene, self.instances, self.backgrounds, generator, seed=seed)


def _instance_bank(cfg: InstancesConfig):
    from synthloop.data.instances import InstanceBank

    if cfg.coco is not None:
        return InstanceBank.from_coco(cfg.coco.json_file, image_root=cfg.coco.images, category_ids=cfg.coco.category_ids, config=cfg.bank)
    if cfg.rgba_folder is not None:
        return InstanceBank.from_rgba_folder(cfg.rgba_folder, config=cfg.bank)
    return InstanceBank.from_mask_pairs(cfg.mask_pairs, config=cfg.bank)


def build_instances(cfg: InstancesConfig, seed: int) -> tuple[Any, list[Category]]:
    """The instance source and its categories."""
    from synthloop.compose.sources import BankInstances
    from synthloop.data.instances import InstanceBank

    if cfg.builtin == "mnist":
        digits = MnistDigits.load(seed, limit=cfg.limit)
        return digits, digits.categories
    bank = _instance_bank(cfg)
    if cfg.limit is not None:
        bank = InstanceBank(bank.instances[: cfg.limit], bank.categories, bank.report)
    if len(bank) == 0:
        raise InputError(f"no usable cut-outs (clean-up: {bank.report})", field=f"instances.{cfg.kind}")
    return BankInstances(bank), list(bank.categories)


def build_backgrounds(cfg: BackgroundsConfig, seed: int) -> Any:
    """The background source: a :class:`~synthloop.data.backgrounds.BackgroundBank`, pooled when
    ``cfg.pool`` > 0."""
    from synthloop.compose.sources import PooledBackgrounds
    from synthloop.data.backgrounds import BackgroundBank, builtin_photos

    sources: list[str] = []
    weights: list[float] = []
    given = cfg.weights if cfg.weights is not None else [1.0] * len(cfg.sources)
    if len(given) != len(cfg.sources):
        raise InputError(f"{len(given)} weights for {len(cfg.sources)} sources", field="backgrounds.weights")
    for src, w in zip(cfg.sources, given):
        if src == "builtin":  # its weight is shared by its parts
            parts = list(BUILTIN_BACKGROUND_SOURCES) if set(builtin_photos()) - set(cfg.exclude) else ["procedural"]
            sources += parts
            weights += [w / len(parts)] * len(parts)
        else:
            sources.append(src)
            weights.append(w)
    try:
        bank = BackgroundBank(sources, weights=weights, scale=cfg.scale, aspect=cfg.aspect, exclude=cfg.exclude)
    except InputError as e:
        raise InputError(e.message, file=e.file, field=f"backgrounds.{e.field}" if e.field else "backgrounds.sources") from None
    if cfg.pool > 0:
        return PooledBackgrounds(bank, cfg.pool, derive_seed(seed, "backgrounds"))
    return bank


def build_assets(cfg: PasteConfig) -> Assets:
    """Decode everything a paste job draws from (call once per worker process)."""
    if cfg.scene.placement.strategy == "psis":  # the config guarantees instances.coco
        from synthloop.compose.psis import DatasetScenes
        from synthloop.data.coco import read_coco
        from synthloop.data.images import load_image

        dataset = read_coco(cfg.instances.coco.json_file, cfg.instances.coco.images)
        scenes = DatasetScenes(dataset, functools.partial(load_image, mode="RGB"))
        return Assets(scenes, scenes, list(dataset.categories), psis=True)
    instances, categories = build_instances(cfg.instances, cfg.seed)
    return Assets(instances, build_backgrounds(cfg.backgrounds, cfg.seed), categories)


# ---------------------------------------------------------------------------------------------
# backgrounds that are also foregrounds


@dataclass(frozen=True)
class ForegroundSource:
    """Where a job's cut-outs come from, as far as :func:`background_overlap` needs: a COCO file
    (its images relative to ``images``, default the JSON's folder) or a folder of images; only
    ``category_ids`` of a COCO file when given."""

    field: str
    coco: Path | None = None
    images: Path | None = None
    folder: Path | None = None
    category_ids: tuple[int, ...] | None = None

    def location(self) -> Path | None:
        """The folder holding the source's images."""
        if self.folder is not None:
            return self.folder
        if self.images is not None:
            return self.images
        return None if self.coco is None else (self.coco if self.coco.is_dir() else self.coco.parent)

    def contents(self) -> tuple[list[Any], list[str]]:
        """``(images, category names)``: ``(path, (width, height))`` per image of a COCO file, a
        path per image file of a folder. A file its reader will reject gives nothing here."""
        from synthloop.data.images import IMAGE_EXTENSIONS

        if self.coco is not None:
            from synthloop.data.coco import read_coco

            try:
                ds = read_coco(self.coco, self.images)
            except InputError:
                return [], []
            wanted = set(self.category_ids) if self.category_ids is not None else None
            names = [c.name for c in ds.categories if wanted is None or c.id in wanted]
            return [(ds.image_path(e), (e.width, e.height)) for e in ds.images], names
        root = self.folder
        if root is None or not root.is_dir():
            return [], []
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        names = sorted({p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else root.name for p in files})
        return list(files), names


def paste_foregrounds(cfg: InstancesConfig) -> list[ForegroundSource]:
    """The foreground sources of a paste job's ``instances`` (none for the built-in digits)."""
    if cfg.coco is not None:
        ids = tuple(cfg.coco.category_ids) if cfg.coco.category_ids is not None else None
        return [ForegroundSource("instances.coco", coco=Path(cfg.coco.json_file), images=cfg.coco.images, category_ids=ids)]
    if cfg.rgba_folder is not None:
        return [ForegroundSource("instances.rgba_folder", folder=Path(cfg.rgba_folder))]
    if cfg.mask_pairs is not None:
        return [ForegroundSource("instances.mask_pairs", folder=Path(cfg.mask_pairs))]
    return []


def _overlaps(a: Path, b: Path) -> bool:
    """Whether paths ``a`` and ``b`` are the same or one lies inside the other."""
    return a == b or a in b.parents or b in a.parents


def _iter_overlap(cfg: BackgroundsConfig, foregrounds: Sequence[ForegroundSource]) -> Iterator[str]:
    from synthloop.data.backgrounds import builtin_photos, identical_builtin_photos, photos_showing

    folders = [Path(s).expanduser().resolve() for s in cfg.sources if s not in BACKGROUND_NAMES]
    for fg in foregrounds:
        where = fg.location()
        for bg in folders:
            if where is not None and _overlaps(bg, where.expanduser().resolve()):
                yield f"background source {bg} is also a foreground source ({fg.field}: {where}): its objects would appear unlabelled in the backgrounds"
    if not set(cfg.sources) & {"photos", "builtin"}:
        return
    photos = [n for n in builtin_photos() if n not in cfg.exclude]
    images: list[Any] = []
    categories: dict[str, str] = {}
    for fg in foregrounds:
        found, names = fg.contents()
        images += found
        categories.update((n, fg.field) for n in names)
    same = identical_builtin_photos(images, photos)
    for name, path in same.items():
        yield f"built-in background photo {name!r} is also a foreground image ({path}, identical pixels); leave it out with backgrounds.exclude: [{name}]"
    for name, category in photos_showing(categories, photos).items():
        if name not in same:
            yield (f"built-in background photo {name!r} shows objects like the foreground category {category!r} ({categories[category]}), "
                   f"which would appear unlabelled in the backgrounds; leave it out with backgrounds.exclude: [{name}]")  # fmt: skip


def background_overlap(cfg: BackgroundsConfig, foregrounds: Sequence[ForegroundSource]) -> list[str]:
    """Why backgrounds from ``cfg`` would show objects of the ``foregrounds`` without labels, one
    message each (empty when nothing was found). Detected:

    - a background folder or image that is, contains or lies inside a foreground source's image
      folder (a COCO file's image folder, an RGBA or image+mask folder), compared as resolved paths;
    - a built-in photo in use (``photos`` / ``builtin``, less ``exclude``) whose decoded RGB pixels
      are identical to a foreground image (only images of a photo's size are decoded);
    - a built-in photo in use that shows objects named like a foreground category
      (:data:`~synthloop.data.backgrounds.PHOTO_SUBJECTS`: ``coins`` for a category ``coin``).

    Not detected: re-encoded, resized or cropped copies, and folders holding copies of the files.
    """
    return list(dict.fromkeys(_iter_overlap(cfg, foregrounds)))


def warn_background_overlap(cfg: BackgroundsConfig, foregrounds: Sequence[ForegroundSource]) -> list[str]:
    """:func:`background_overlap`, each message issued as a warning; returns the messages."""
    messages = background_overlap(cfg, foregrounds)
    for message in messages:
        warnings.warn(message, stacklevel=3)
    return messages
