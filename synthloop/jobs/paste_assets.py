"""Build a paste job's instance and background sources from its config (once per process)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

from synthloop.compose.params import SceneParams
from synthloop.compose.sampler import sample_scene
from synthloop.data.builtin import BUILTIN_BACKGROUND_SOURCES, MnistDigits
from synthloop.data.dataset import Category
from synthloop.errors import InputError
from synthloop.jobs.paste_config import BackgroundsConfig, InstancesConfig, PasteConfig
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
            parts = list(BUILTIN_BACKGROUND_SOURCES) if builtin_photos() else ["procedural"]
            sources += parts
            weights += [w / len(parts)] * len(parts)
        else:
            sources.append(src)
            weights.append(w)
    bank = BackgroundBank(sources, weights=weights, scale=cfg.scale, aspect=cfg.aspect)
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
