"""``synthloop terse CONFIG.yaml``: TERSE for detection on a user's own COCO data, end to end.

The config (:class:`TerseDetectionJobConfig`, YAML; relative paths are relative to the config
file) names:

- ``real``: the real set, a COCO instances file (``annotations``, a ``.json`` file or a folder
  holding ``annotations.json``) and the folder its ``file_name`` s are relative to (``images``,
  default the JSON's folder); or ``builtin: digit_scenes`` (the digits-in-scenes benchmark data).
- ``eval``: optional, a second set of the same kind on which AP is measured (default: the real
  set itself, and the report says so: that is training-set AP).
- ``foregrounds``: the cut-outs S pastes: ``source: real`` (the real set's own instances, cut out
  of their masks by :class:`~synthloop.data.instances.InstanceBank` with the TERSE A.2
  clean-up), ``coco`` (another COCO file), ``rgba_folder`` / ``mask_pairs`` (a folder
  ``<root>/<category name>/...``) or ``digits`` (built-in MNIST training digits).
- ``backgrounds``: :class:`~synthloop.jobs.paste_config.BackgroundsConfig` (``photos``,
  ``procedural`` kinds, a folder, ...).
- ``model``: ``small_fcos`` (:class:`~synthloop.models.detection.SmallDetector`) or any torchvision
  detection builder name (:func:`~synthloop.models.detection.torchvision_detector`, never with
  downloaded weights) with its ``args``; optionally a ``checkpoint`` (a state dict, e.g. a previous
  run's ``model.pt``) to start from.
- ``image_size``: every image is resized (stretched, bilinear with antialiasing) to it, boxes
  scaled with it; AP is computed in each image's own pixel coordinates. The real (and eval) set
  is held in memory at that size as float32 (``N * 3 * H * W * 4`` bytes: 2,000 images at
  128x128 take 0.4 GB), as the scene loop trains on one tensor of real images.
- ``baseline``: epochs of plain training on the real set before the loop (0 = start from the
  checkpoint or from scratch as it is).
- ``loop``: :class:`~synthloop.loops.terse_detection.SceneTerseConfig`, the A.2 loop's knobs
  (its ``seed`` defaults to the job's ``seed``).

Data rules (each an :class:`~synthloop.errors.InputError` naming the file and the field, or a
documented behaviour):

- An image with no objects is allowed: it is a negative for the detector (no boxes).
- A box that sticks out of its image by up to 1 px (float rounding in exporters) is clipped to
  the image; one further outside is rejected by the COCO reader, naming the annotation
  (``annotations[i].bbox``). A box with less than 1 px of width or height left after scaling to
  ``image_size`` is rejected too, naming the image and the annotation id.
- Every foreground category must be a category of the real set (matched by id for COCO sources
  and digits, by name for folder sources); otherwise the error names the category.
- ``model.num_classes`` (or ``model.args.num_classes``), when given, must be the real set's
  categories + 1 (the background).
- ``eval`` must use the real set's categories (by id, with the same names); it may lack some.

Output folder (everything written atomically)::

    config.resolved.yaml   the validated config with absolute paths (loads as a config again);
                           a comment line on top records version, git commit and seeds
    run.json               seed, synthloop version, git commit, command, start/finish/resume times
    baseline.pt            the model after baseline training (so --resume does not redo it)
    loop/                  SceneTerse's run folder: checkpoint.pt after every cycle, history, scenes
    synthetic/             the kept hard examples as a COCO data set (per-image replay params)
    model.pt, model.json   the fine-tuned model's state dict and how to rebuild it
    metrics.json           AP before and after, per-cycle history, baseline losses, hardness
    report.html            self-contained report

``--resume`` continues an interrupted run with the same config (the baseline is loaded, the loop
goes on from its last finished cycle); ``loop.cycles`` may be raised to extend a finished run. Any
other difference of config is an error listing the changed keys.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from pydantic import Field, field_validator, model_validator
from torch import nn

from synthloop.utils.records import diff_keys, utc_now
from synthloop.config import Config, apply_overrides, build_config, load_yaml
from synthloop.data.dataset import Dataset
from synthloop.data.instances import InstanceBankConfig
from synthloop.errors import InputError
from synthloop.jobs.paste_config import BACKGROUND_NAMES, BackgroundsConfig, CocoSource
from synthloop.loops.terse_detection import SceneTerseConfig

Progress = Callable[[str, int, int], None]
"""``progress(task, done, total)``: ``task`` names the phase (baseline, cycle k: ..., evaluation)."""

CONFIG_FILE = "config.resolved.yaml"
RUN_FILE = "run.json"
BASELINE_FILE = "baseline.pt"
LOOP_DIR = "loop"
SYNTHETIC_DIR = "synthetic"
MODEL_FILE = "model.pt"
MODEL_JSON = "model.json"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
SMALL_FCOS = "small_fcos"


# --------------------------------------------------------------------------------------------
# config


class DatasetSource(Config):
    """A COCO data set (``annotations`` + ``images``) or the built-in digits-in-scenes data."""

    annotations: Path | None = Field(None, description="COCO instances JSON, or a folder holding annotations.json")
    images: Path | None = Field(None, description="folder the file_name entries are relative to (default: the JSON's folder)")
    builtin: Literal["digit_scenes"] | None = Field(None, description="built-in data instead of a file")
    split: Literal["train", "val", "test"] = Field("train", description="with builtin: which split")
    sizes: dict[str, int] | None = Field(None, description="with builtin: images per split (default 2000/500/1000)")
    seed: int = Field(0, description="with builtin: the data generator's seed (data are generated once and cached)")
    limit: int | None = Field(None, ge=1, description="use only the first N images")

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSource:
        if (self.annotations is None) == (self.builtin is None):
            raise ValueError("give exactly one of annotations (a COCO file) or builtin")
        return self


class ForegroundsConfig(Config):
    """Where S's cut-outs come from (see the module docstring)."""

    source: Literal["real", "coco", "rgba_folder", "mask_pairs", "digits"] = "real"
    coco: CocoSource | None = Field(None, description="with source: coco")
    folder: Path | None = Field(None, description="with source: rgba_folder or mask_pairs")
    category_ids: list[int] | None = Field(None, description="only cut-outs of these categories")
    limit: int | None = Field(None, ge=1, description="use only the first N cut-outs")
    digits: int = Field(2000, ge=1, description="with source: digits, how many MNIST training digits (random, tinted)")
    bank: InstanceBankConfig = Field(default_factory=InstanceBankConfig, description="clean-up options (TERSE A.2)")

    @model_validator(mode="after")
    def _needs(self) -> ForegroundsConfig:
        if self.source == "coco" and self.coco is None:
            raise ValueError("source: coco needs coco: {json: ..., images: ...}")
        if self.source in ("rgba_folder", "mask_pairs") and self.folder is None:
            raise ValueError(f"source: {self.source} needs folder")
        return self


class ModelConfig(Config):
    """The detector: ``small_fcos`` or a torchvision detection builder name, with its arguments."""

    name: str = Field(SMALL_FCOS, description="'small_fcos' or a torchvision detection builder, e.g. fasterrcnn_mobilenet_v3_large_fpn")
    num_classes: int | None = Field(None, ge=2, description="optional check: must be the real set's categories + 1")
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the builder")
    checkpoint: Path | None = Field(None, description="state dict to start from (e.g. a previous run's model.pt)")


class BaselineConfig(Config):
    """Plain training on the real set before the loop (the baseline the report compares with)."""

    epochs: int = Field(0, ge=0, description="0: no baseline training (use the checkpoint, or the untrained model)")
    batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    augment: bool = Field(False, description="random channel permutation + horizontal flip")


class ReportConfig(Config):
    samples_per_cycle: int = Field(8, ge=0, description="composites drawn per cycle in the report")
    real_samples: int = Field(8, ge=0, description="evaluation images drawn with the fine-tuned model's hits and misses")
    scale: int = Field(2, ge=1, description="pixel enlargement of drawn images")


class TerseDetectionJobConfig(Config):
    """A ``synthloop terse`` job (see the module docstring)."""

    seed: int = 0
    image_size: tuple[int, int] = Field((128, 128), description="(H, W) every image is resized to; a single number for square")
    real: DatasetSource
    eval: DatasetSource | None = None
    foregrounds: ForegroundsConfig = Field(default_factory=ForegroundsConfig)
    backgrounds: BackgroundsConfig = Field(default_factory=lambda: BackgroundsConfig(sources=["photos"]))
    model: ModelConfig = Field(default_factory=ModelConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    loop: SceneTerseConfig = Field(default_factory=SceneTerseConfig)
    eval_batch_size: int = Field(16, ge=1)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @field_validator("image_size", mode="before")
    @classmethod
    def _square(cls, v: Any) -> Any:
        return (v, v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("image_size")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 16:
            raise ValueError(f"image_size must be at least 16 x 16, got {list(v)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _loop_seed(cls, data: Any) -> Any:
        # the loop's seed follows the job's unless the config sets it
        if isinstance(data, dict) and "seed" in data:
            loop = data.get("loop")
            if loop is None or (isinstance(loop, dict) and "seed" not in loop):
                data = {**data, "loop": {**(loop or {}), "seed": data["seed"]}}
        return data


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make the file paths of a raw config mapping absolute, relative to ``base``."""

    def absolute(p: Any) -> Any:
        return str((base / Path(p).expanduser()).resolve()) if isinstance(p, str) and p else p

    data = dict(data)
    for key in ("real", "eval"):
        src = data.get(key)
        if isinstance(src, dict):
            data[key] = {k: absolute(v) if k in ("annotations", "images") else v for k, v in src.items()}
    fg = data.get("foregrounds")
    if isinstance(fg, dict):
        fg = dict(fg)
        if "folder" in fg:
            fg["folder"] = absolute(fg["folder"])
        if isinstance(fg.get("coco"), dict):
            fg["coco"] = {k: absolute(v) if k in ("json", "json_file", "images") else v for k, v in fg["coco"].items()}
        data["foregrounds"] = fg
    model = data.get("model")
    if isinstance(model, dict) and model.get("checkpoint"):
        data["model"] = dict(model, checkpoint=absolute(model["checkpoint"]))
    bgs = data.get("backgrounds")
    if bgs is not None:
        bgs = BackgroundsConfig._shorthand(bgs)
        if isinstance(bgs, dict) and isinstance(bgs.get("sources"), list):
            bgs = dict(bgs, sources=[s if not isinstance(s, str) or s in BACKGROUND_NAMES else absolute(s) for s in bgs["sources"]])
        data["backgrounds"] = bgs
    return data


def load_job_config(path: str | Path, overrides: Sequence[str] | None = None) -> TerseDetectionJobConfig:
    """Load a job config file, apply ``key=value`` overrides, resolve relative paths against the
    file's folder, validate. Errors name the file and the key (typos list the valid keys)."""
    data = load_yaml(path)
    merged = apply_overrides(data, list(overrides or []))
    return build_config(TerseDetectionJobConfig, _resolve_paths(merged, Path(path).resolve().parent), source=str(path))


def resolved_dict(cfg: TerseDetectionJobConfig) -> dict[str, Any]:
    """The config as plain data, as written in files (aliases such as ``coco.json``)."""
    return cfg.model_dump(mode="json", by_alias=True)


# --------------------------------------------------------------------------------------------
# data


@dataclass
class LoadedSet:
    """A data set resized to the job's image size: ``images`` ``(N, 3, H, W)`` in [0, 1],
    torchvision ``targets`` in resized pixels, and per image the ``(sx, sy)`` scale from the
    original to the resized coordinates."""

    dataset: Dataset
    file: str
    images: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    scales: list[tuple[float, float]]


@dataclass
class JobData:
    real: LoadedSet
    eval: LoadedSet | None
    label_map: Any
    foregrounds: Any
    backgrounds: Any
    foreground_report: str = ""


def _read_source(src: DatasetSource, field: str) -> tuple[Dataset, str]:
    from synthloop.data.coco import find_coco_json, read_coco

    if src.builtin == "digit_scenes":
        from synthloop.data.digit_scenes import digit_scenes

        paths = digit_scenes(src.seed, sizes=src.sizes)
        file = getattr(paths, src.split)
        ds = read_coco(file)
    else:
        assert src.annotations is not None
        file = find_coco_json(src.annotations)
        ds = read_coco(file, src.images, check_images=True)
    if src.limit is not None:
        ds = Dataset(root=ds.root, categories=ds.categories, images=ds.images[: src.limit], info=ds.info)
    if not ds.images:
        raise InputError("the data set has no images", file=file, field=f"{field}.images")
    return ds, str(file)


def _load_resized(ds: Dataset, file: str, size: tuple[int, int], label_map: Any, field: str) -> LoadedSet:
    """Decode, resize and label every image of ``ds`` (see the module docstring for box rules)."""
    from synthloop.data.images import load_image
    from synthloop.models.detection import MIN_BOX_SIZE

    H, W = size
    images = torch.empty(len(ds.images), 3, H, W)
    targets, scales = [], []
    for i, entry in enumerate(ds.images):
        arr = load_image(ds.image_path(entry), mode="RGB")
        if arr.shape[:2] != (entry.height, entry.width):
            raise InputError(
                f"the image file is {arr.shape[1]}x{arr.shape[0]} but the annotations say {entry.width}x{entry.height}",
                file=file,
                field=f"images[{i}].width",
            )
        img = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float().div_(255.0)
        if (entry.height, entry.width) != (H, W):
            img = F.interpolate(img[None], size=(H, W), mode="bilinear", align_corners=False, antialias=True)[0].clamp_(0.0, 1.0)
        images[i] = img
        sx, sy = W / entry.width, H / entry.height
        target = label_map.target(entry.annotations, where=f"images[{i}].annotations")
        boxes = target["boxes"]
        if boxes.numel():
            # boxes within the reader's 1 px tolerance may stick out: clip them to the image
            boxes = torch.stack([boxes[:, 0].clamp(0, entry.width), boxes[:, 1].clamp(0, entry.height),
                                 boxes[:, 2].clamp(0, entry.width), boxes[:, 3].clamp(0, entry.height)], 1)  # fmt: skip
            boxes = boxes * torch.tensor([sx, sy, sx, sy])
            small = ((boxes[:, 2] - boxes[:, 0]) < MIN_BOX_SIZE) | ((boxes[:, 3] - boxes[:, 1]) < MIN_BOX_SIZE)
            if bool(small.any()):
                k = int(small.nonzero()[0])
                anns = [a for a in entry.annotations if not a.iscrowd]
                ann = anns[k]
                raise InputError(
                    f"annotation id {ann.id} (bbox {list(ann.bbox)}) of image {entry.file_name!r} is less than "
                    f"{MIN_BOX_SIZE:g} px wide or high at image_size {H}x{W}; remove it or use a larger image_size",
                    file=file,
                    field=f"images[{i}].annotations[{entry.annotations.index(ann)}].bbox",
                )
        targets.append({"boxes": boxes.float(), "labels": target["labels"]})
        scales.append((sx, sy))
    return LoadedSet(ds, file, images, targets, scales)


def _check_eval_categories(real: Dataset, other: Dataset, file: str) -> None:
    names = {c.id: c.name for c in real.categories}
    for i, c in enumerate(other.categories):
        if c.id not in names:
            raise InputError(f"category {c.name!r} (id {c.id}) is not a category of the real set (ids {sorted(names)})", file=file, field=f"categories[{i}]")
        if names[c.id] != c.name:
            raise InputError(f"category id {c.id} is {c.name!r} here but {names[c.id]!r} in the real set", file=file, field=f"categories[{i}].name")


def _foregrounds(cfg: TerseDetectionJobConfig, real: Dataset, real_file: str) -> tuple[Any, str]:
    """The foreground bank (a renderer source) and a one-line clean-up summary."""
    from synthloop.compose.sources import BankInstances
    from synthloop.data.instances import InstanceBank

    fc = cfg.foregrounds
    known = {c.id: c.name for c in real.categories}
    if fc.source == "digits":
        from synthloop.data.digit_scenes import digit_bank
        from synthloop.data.mnist import SPLIT_SIZES
        from synthloop.utils.seeding import make_generator

        n = min(fc.digits, SPLIT_SIZES["train"])
        idx = torch.randperm(SPLIT_SIZES["train"], generator=make_generator(cfg.seed, "job-digits"))[:n]
        bank = digit_bank(indices=idx, generator=make_generator(cfg.seed, "job-digit-tints"))
        cats = sorted(set(bank.category_ids))
        for c in cats:
            if c not in known:
                raise InputError(
                    f"the digits' category id {c} (digit {c - 1}) is not a category of the real set (ids {sorted(known)})",
                    file=real_file,
                    field="categories",
                )
        if fc.category_ids is not None or fc.limit is not None:
            keep = [i for i, c in enumerate(bank.category_ids) if fc.category_ids is None or c in fc.category_ids][: fc.limit]
            from synthloop.compose.sources import TensorInstances

            bank = TensorInstances([bank.rgbs[i] for i in keep], [bank.alphas[i] for i in keep], [bank.category_ids[i] for i in keep])
        summary = f"{len(bank)} MNIST training digits"
        source: Any = bank
    else:
        if fc.source == "real":
            bank = InstanceBank.from_coco(real, category_ids=fc.category_ids, config=fc.bank)
            where = real_file
        elif fc.source == "coco":
            assert fc.coco is not None
            bank = InstanceBank.from_coco(fc.coco.json_file, image_root=fc.coco.images, category_ids=fc.category_ids or fc.coco.category_ids, config=fc.bank)
            where = str(fc.coco.json_file)
        else:
            assert fc.folder is not None
            if not fc.folder.is_dir():
                raise InputError("no such folder", file=fc.folder, field="foregrounds.folder")
            build = InstanceBank.from_rgba_folder if fc.source == "rgba_folder" else InstanceBank.from_mask_pairs
            bank = build(fc.folder, categories=list(real.categories), config=fc.bank)
            where = str(fc.folder)
            if fc.category_ids is not None:
                bank = InstanceBank([i for i in bank.instances if i.category_id in fc.category_ids], bank.categories, bank.report)
        used = {inst.category_id: inst.category_name for inst in bank.instances}
        for cid, name in sorted(used.items()):
            if cid not in known:
                raise InputError(f"foreground category {name!r} (id {cid}) is not a category of the real set {real_file} (categories: "
                                 + ", ".join(f"{i} {n!r}" for i, n in sorted(known.items())) + ")", file=where, field="foregrounds.categories")  # fmt: skip
            if known[cid] != name:
                raise InputError(f"foreground category id {cid} is {name!r} but {known[cid]!r} in the real set", file=where, field="foregrounds.categories")
        if fc.limit is not None:
            bank = InstanceBank(bank.instances[: fc.limit], bank.categories, bank.report)
        if len(bank) == 0:
            raise InputError(f"no usable cut-outs after the clean-up ({bank.report})", file=where, field="foregrounds")
        summary = f"{len(bank)} cut-outs from {fc.source} ({where}); clean-up: {bank.report}"
        source = BankInstances(bank)
    return source, summary


def load_job_data(cfg: TerseDetectionJobConfig) -> JobData:
    """Read, validate and resize the real (and eval) set, build the foreground and background banks."""
    from synthloop.jobs.paste_assets import build_backgrounds
    from synthloop.models.detection import LabelMap

    real_ds, real_file = _read_source(cfg.real, "real")
    if not real_ds.categories:
        raise InputError("the real set has no categories", file=real_file, field="categories")
    if not any(not a.iscrowd for im in real_ds.images for a in im.annotations):
        raise InputError("the real set has no (non-crowd) object to learn from", file=real_file, field="annotations")
    label_map = LabelMap.from_categories(real_ds.categories)
    size = tuple(cfg.image_size)
    real = _load_resized(real_ds, real_file, size, label_map, "real")
    ev = None
    if cfg.eval is not None:
        ev_ds, ev_file = _read_source(cfg.eval, "eval")
        _check_eval_categories(real_ds, ev_ds, ev_file)
        # scored against the real set's categories: the model may predict any of them, and
        # categories without ground truth here are left out of the AP mean by pycocotools
        ev_ds = Dataset(root=ev_ds.root, categories=list(real_ds.categories), images=ev_ds.images, info=ev_ds.info)
        if not any(not a.iscrowd for im in ev_ds.images for a in im.annotations):
            raise InputError("the evaluation set has no (non-crowd) object, so AP is undefined", file=ev_file, field="annotations")
        ev = _load_resized(ev_ds, ev_file, size, label_map, "eval")
    foregrounds, summary = _foregrounds(cfg, real_ds, real_file)
    backgrounds = build_backgrounds(cfg.backgrounds, cfg.seed)
    return JobData(real, ev, label_map, foregrounds, backgrounds, summary)


# --------------------------------------------------------------------------------------------
# model


def build_model(spec: Mapping[str, Any], num_classes: int, image_size: Sequence[int]) -> nn.Module:
    """The detector of a ``model.json``-style spec (``name``, ``args``) for ``num_classes``
    (background included) at ``image_size`` (H, W). Randomly initialised, nothing downloaded."""
    from synthloop.models.detection import SmallDetector, torchvision_detector

    args = dict(spec.get("args") or {})
    args.pop("num_classes", None)
    name = str(spec.get("name", SMALL_FCOS))
    try:
        if name == SMALL_FCOS:
            model = SmallDetector(num_classes=num_classes, image_size=tuple(image_size), **args)
        else:
            model = torchvision_detector(name, num_classes, tuple(image_size), **args)
    except TypeError as exc:  # an unknown keyword of the builder
        raise InputError(f"{name}: {exc}", field="model.args") from None
    _check_args(name, model, args)
    return model


# keywords torchvision's detection models pass on to their GeneralizedRCNNTransform via **kwargs
_TRANSFORM_KWARGS = frozenset({"size_divisible", "fixed_size"})


def _check_args(name: str, model: nn.Module, args: Mapping[str, Any]) -> None:
    """torchvision's detection builders and model classes take ``**kwargs`` and drop the ones
    nobody reads, so a misspelt argument would be ignored silently: every key must be a parameter
    of the builder or of a class the model derives from."""
    import inspect

    import torchvision

    allowed = set(_TRANSFORM_KWARGS)
    if name != SMALL_FCOS:
        allowed |= set(inspect.signature(torchvision.models.get_model_builder(name)).parameters)
    for cls in type(model).__mro__:
        if "__init__" in vars(cls) and issubclass(cls, nn.Module) and cls is not nn.Module:
            allowed |= set(inspect.signature(cls.__init__).parameters)
    allowed -= {"self", "args", "kwargs", "progress"}
    for key in args:
        if key not in allowed:
            raise InputError(f"{name} has no argument {key!r}; valid: {', '.join(sorted(allowed))}", field=f"model.args.{key}")


def _build_target(cfg: TerseDetectionJobConfig, label_map: Any, source: str) -> Any:
    from synthloop.loops.training import scoped_rng
    from synthloop.models.detection import DetectionTarget
    from synthloop.utils.seeding import derive_seed

    need = label_map.num_classes
    for key, given in (("model.num_classes", cfg.model.num_classes), ("model.args.num_classes", cfg.model.args.get("num_classes"))):
        if given is not None and int(given) != need:
            raise InputError(
                f"num_classes {given} does not match the real set: {label_map.num_categories} categories "
                f"({', '.join(label_map.names)}) + the background = {need}",
                file=source,
                field=key,
            )
    with scoped_rng(derive_seed(cfg.seed, "job-model-init")):  # weight initialisation draws from the global RNG
        model = build_model({"name": cfg.model.name, "args": cfg.model.args}, need, cfg.image_size)
    if cfg.model.checkpoint is not None:
        _load_weights(model, cfg.model.checkpoint)
    return DetectionTarget(model, label_map, image_size=tuple(cfg.image_size), hard_threshold=cfg.loop.hard_threshold, name="model")


def _load_weights(model: nn.Module, path: Path) -> None:
    """Load a state dict from ``path``: a synthloop checkpoint holding ``model`` (this job's
    ``model.pt``) or a plain ``torch.save`` d state dict."""
    if not Path(path).is_file():
        raise InputError("checkpoint not found", file=path, field="model.checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        raise InputError(f"cannot read the checkpoint: {exc}", file=path, field="model.checkpoint") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise InputError("not a state dict", file=path, field="model.checkpoint")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise InputError(
            "the weights do not fit the model (another architecture, or another number of categories): " + " ".join(first[:3]),
            file=path,
            field="model.checkpoint",
        ) from None


def load_detector(run_dir: str | Path) -> Any:
    """The fine-tuned :class:`~synthloop.models.detection.DetectionTarget` of a finished run
    folder, rebuilt from ``model.json`` and ``model.pt``."""
    from synthloop.loops.checkpoint import load_checkpoint
    from synthloop.models.detection import DetectionTarget, LabelMap

    run_dir = Path(run_dir)
    spec_file = run_dir / MODEL_JSON
    if not spec_file.is_file():
        raise InputError("no model.json here (is this a finished synthloop terse run?)", file=spec_file)
    spec = json.loads(spec_file.read_text())
    label_map = LabelMap(tuple(spec["category_ids"]), tuple(spec["category_names"]))
    model = build_model(spec, label_map.num_classes, spec["image_size"])
    model.load_state_dict(load_checkpoint(run_dir / MODEL_FILE)["model"])
    return DetectionTarget(model, label_map, image_size=tuple(spec["image_size"]))


# --------------------------------------------------------------------------------------------
# evaluation


def evaluate(target: Any, loaded: LoadedSet, *, batch_size: int = 16) -> dict[str, float]:
    """COCO AP (``ap50`` ... ``ap``) of ``target`` on ``loaded``: detections on the resized images
    are scaled back to each image's own pixels and scored by pycocotools against the original
    annotations (:func:`~synthloop.metrics.detection.coco_ap`). When every image already has the
    job's size this is :func:`~synthloop.loops.detection_training.evaluate_detector`."""
    from synthloop.loops.detection_training import evaluate_detector
    from synthloop.metrics.classification import model_device
    from synthloop.metrics.detection import coco_ap
    from synthloop.models.targets import freeze

    H, W = loaded.images.shape[-2:]
    if all((e.height, e.width) == (H, W) for e in loaded.dataset.images):
        return evaluate_detector(target, loaded.dataset, batch_size=batch_size)
    # evaluate_detector reads images at their own size, which differs here, so the resized
    # tensors are run and the boxes mapped back before pycocotools scores them
    device = model_device(target.model)
    records: list[dict[str, Any]] = []
    with freeze(target.model), torch.no_grad():
        for start in range(0, loaded.images.shape[0], batch_size):
            batch = loaded.images[start : start + batch_size].to(device)
            for j, det in enumerate(target.predict(batch)):
                i = start + j
                sx, sy = loaded.scales[i]
                det = dict(det, boxes=det["boxes"].cpu() / torch.tensor([sx, sy, sx, sy]))
                records += target.label_map.to_coco(loaded.dataset.images[i].id, det)
    return coco_ap(loaded.dataset, records)


def predicted_confidence(target: Any, images: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]], *, batch_size: int = 16) -> list[torch.Tensor]:
    """Per image, ``target``'s confidence on each labelled object (see
    :meth:`~synthloop.models.detection.DetectionTarget.confidence`), no gradient."""
    from synthloop.metrics.classification import model_device
    from synthloop.models.targets import freeze

    device = model_device(target.model)
    out: list[torch.Tensor] = []
    with freeze(target.model), torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start : start + batch_size].to(device)
            tg = [{k: torch.as_tensor(v).to(device) for k, v in t.items()} for t in targets[start : start + batch_size]]
            out += [c.float().cpu() for c in target.confidence(chunk, tg)]
    return out


# --------------------------------------------------------------------------------------------
# the job


@dataclass
class TerseDetectionJobResult:
    """What :func:`run_terse_detection_job` produced (paths are inside ``out_dir``)."""

    out_dir: Path
    baseline_ap: dict[str, float] | None
    final_ap: dict[str, float]
    history: list[dict[str, Any]]
    synthetic_images: int
    files: dict[str, Path] = field(default_factory=dict)


def _prepare(cfg: TerseDetectionJobConfig, out_dir: Path, resume: bool) -> dict[str, Any] | None:
    """Check the output folder; returns the previous run.json when resuming."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("the output path exists and is not a folder", file=out_dir)
    started = out_dir.is_dir() and any(out_dir.iterdir())
    if not resume:
        if started:
            raise InputError("the output folder is not empty; pass --resume to continue the run in it, or choose another folder", file=out_dir)
        return None
    if not started or not (out_dir / CONFIG_FILE).is_file():
        raise InputError(f"nothing to resume: no {CONFIG_FILE} in this folder", file=out_dir)
    previous = yaml.safe_load((out_dir / CONFIG_FILE).read_text())
    changed = [k for k in diff_keys(previous, resolved_dict(cfg)) if k != "loop.cycles"]  # more cycles extend a run
    if changed:
        raise InputError(f"the run was started with another config (changed: {', '.join(changed)}); resume with the same config", file=out_dir / CONFIG_FILE, field=changed[0])
    run_file = out_dir / RUN_FILE
    return json.loads(run_file.read_text()) if run_file.is_file() else {}


def _rounded(ap: Mapping[str, float] | None) -> dict[str, float] | None:
    return None if ap is None else {k: round(float(v), 5) for k, v in ap.items()}


def run_terse_detection_job(
    config: TerseDetectionJobConfig,
    out_dir: str | Path,
    resume: bool = False,
    *,
    progress: Progress | None = None,
    device: str = "cpu",
    config_file: str | Path | None = None,
    argv: Sequence[str] | None = None,
) -> TerseDetectionJobResult:
    """Run a ``synthloop terse`` job into ``out_dir`` (see the module docstring for the steps and
    the files). ``config_file`` only names the config in error messages.

    Raises:
        InputError: bad data, model or config (naming the file and the field), a non-empty
            ``out_dir`` without ``resume``, or a ``resume`` with another config.
    """
    from synthloop import __version__
    from synthloop.jobs.paste import _git_commit
    from synthloop.loops.checkpoint import load_checkpoint, save_checkpoint
    from synthloop.loops.detection_training import train_detector
    from synthloop.loops.terse_detection import SceneTerse, write_synthetic_coco
    from synthloop.utils.atomic import atomic_write_json, atomic_write_text
    from synthloop.utils.seeding import derive_seed

    cfg = config
    out = Path(out_dir)
    source = str(config_file) if config_file is not None else "config"
    previous = _prepare(cfg, out, resume)
    t_start = time.perf_counter()

    data = load_job_data(cfg)
    target = _build_target(cfg, data.label_map, source)
    target.model.to(device)

    out.mkdir(parents=True, exist_ok=True)
    commit = _git_commit()
    header = f"# synthloop {__version__}, git commit {commit or 'unknown'}, seed {cfg.seed} (loop seed {cfg.loop.seed}), written {utc_now()}\n"
    atomic_write_text(out / CONFIG_FILE, header + yaml.safe_dump(resolved_dict(cfg), sort_keys=False))
    run_info: dict[str, Any] = {
        "seed": cfg.seed,
        "loop_seed": cfg.loop.seed,
        "synthloop_version": __version__,
        "git_commit": commit,
        "torch_version": torch.__version__,
        "command": list(argv) if argv is not None else sys.argv,
        "device": device,
        "started": (previous or {}).get("started") or utc_now(),
        "resumed": [*(previous or {}).get("resumed", []), utc_now()] if previous is not None else [],
        "finished": None,
    }
    atomic_write_json(out / RUN_FILE, run_info)

    eval_set = data.eval if data.eval is not None else data.real
    eval_name = "eval" if data.eval is not None else "real (training set: no eval set given)"

    # ---- baseline
    baseline_file = out / BASELINE_FILE
    if baseline_file.is_file():  # resumed: the baseline was trained (and evaluated) before
        state = load_checkpoint(baseline_file)
        target.model.load_state_dict(state["model"])
        baseline_info = json.loads(state["info"])
    else:
        log = None
        if cfg.baseline.epochs > 0:
            bp = (lambda step, total, loss: progress("baseline training", step, total)) if progress is not None else None
            log = train_detector(
                target, data.real.images, data.real.targets, epochs=cfg.baseline.epochs, batch_size=cfg.baseline.batch_size,
                lr=cfg.baseline.lr, weight_decay=cfg.baseline.weight_decay, augment=cfg.baseline.augment,
                seed=derive_seed(cfg.seed, "job-baseline"), progress=bp,
            )  # fmt: skip
            target.model.eval()
        if progress is not None:
            progress("baseline evaluation", 0, 1)
        ap0 = evaluate(target, eval_set, batch_size=cfg.eval_batch_size)
        if progress is not None:
            progress("baseline evaluation", 1, 1)
        baseline_info = {
            "ap": _rounded(ap0),
            "epochs": cfg.baseline.epochs,
            "epoch_losses": [] if log is None else [float(v) for v in log.epoch_losses],
            "seconds": 0.0 if log is None else round(log.seconds, 2),
            "from_checkpoint": str(cfg.model.checkpoint) if cfg.model.checkpoint else None,
        }
        save_checkpoint(baseline_file, {"model": target.model.state_dict(), "info": json.dumps(baseline_info)})
    baseline_model = copy.deepcopy(target.model).eval()

    # ---- the loop
    loop = SceneTerse(cfg.loop, target, data.real.images, data.real.targets, data.foregrounds, data.backgrounds, device=device)
    result = loop.run(out / LOOP_DIR, resume=resume, progress=progress)
    target.model.eval()

    # ---- after
    if progress is not None:
        progress("final evaluation", 0, 1)
    ap1 = evaluate(target, eval_set, batch_size=cfg.eval_batch_size)
    if progress is not None:
        progress("final evaluation", 1, 1)
    scenes = result.scenes
    syn_file = write_synthetic_coco(scenes, out / SYNTHETIC_DIR, data.label_map)

    save_checkpoint(out / MODEL_FILE, {"model": target.model.state_dict()})
    model_spec = {
        "name": cfg.model.name,
        "args": {k: v for k, v in cfg.model.args.items() if k != "num_classes"},
        "num_classes": data.label_map.num_classes,
        "image_size": list(cfg.image_size),
        "category_ids": list(data.label_map.category_ids),
        "category_names": list(data.label_map.names),
        "labels": "label k (1..C) is category_ids[k - 1]; 0 is the background",
        "state_dict": MODEL_FILE + " (key 'model'; torch.load(weights_only=True))",
        "rebuild": "synthloop.jobs.terse_detection.load_detector(run folder)",
    }
    atomic_write_json(out / MODEL_JSON, model_spec)

    # hardness of the kept composites: at generation (the target of that cycle) and under the baseline
    gen_conf = [s.confidence.float().reshape(-1) for s in scenes]
    base_target = _with_model(target, baseline_model)
    base_conf = predicted_confidence(base_target, torch.stack([s.image for s in scenes]), [s.target for s in scenes], batch_size=cfg.eval_batch_size) if scenes else []
    flat_gen = torch.cat(gen_conf) if gen_conf else torch.empty(0)
    flat_base = torch.cat(base_conf) if base_conf else torch.empty(0)
    thr = cfg.loop.hard_threshold
    hardness = {
        "threshold": thr,
        "objects": int(flat_gen.numel()),
        "hard_positive_fraction_at_generation": float((flat_gen < thr).double().mean()) if flat_gen.numel() else None,
        "hard_positive_fraction_under_baseline": float((flat_base < thr).double().mean()) if flat_base.numel() else None,
        "mean_confidence_at_generation": float(flat_gen.mean()) if flat_gen.numel() else None,
        "mean_confidence_under_baseline": float(flat_base.mean()) if flat_base.numel() else None,
    }
    metrics = {
        "eval_set": eval_set.file,
        "eval_set_kind": eval_name,
        "baseline": baseline_info,
        "final_ap": _rounded(ap1),
        "history": result.history,
        "synthetic_images": len(scenes),
        "hardness": hardness,
        "foregrounds": data.foreground_report,
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    atomic_write_json(out / METRICS_FILE, metrics)

    # ---- report
    from synthloop.report.detection import build_detection_report

    final_conf = predicted_confidence(target, eval_set.images[: cfg.report.real_samples], eval_set.targets[: cfg.report.real_samples]) if cfg.report.real_samples else []
    blocks = build_detection_report(
        cfg=cfg,
        metrics=metrics,
        scenes=scenes,
        confidences={"at generation (model of that cycle)": flat_gen, "under the baseline": flat_base},
        label_map=data.label_map,
        real_images=eval_set.images[: cfg.report.real_samples],
        real_targets=eval_set.targets[: cfg.report.real_samples],
        real_confidence=final_conf,
    )
    from synthloop.report.detection import write_detection_report

    write_detection_report(out / REPORT_FILE, "synthloop terse: TERSE for detection", blocks, subtitle=f"{Path(eval_set.file).name} · seed {cfg.seed} · synthloop {__version__}")
    run_info["finished"] = utc_now()
    atomic_write_json(out / RUN_FILE, run_info)
    files = {k: out / v for k, v in (("config", CONFIG_FILE), ("run", RUN_FILE), ("synthetic", syn_file.relative_to(out).as_posix()), ("model", MODEL_FILE),
                                     ("model_json", MODEL_JSON), ("metrics", METRICS_FILE), ("report", REPORT_FILE))}  # fmt: skip
    return TerseDetectionJobResult(out, baseline_info["ap"], _rounded(ap1) or {}, result.history, len(scenes), files)


def _with_model(target: Any, model: nn.Module) -> Any:
    """A :class:`~synthloop.models.detection.DetectionTarget` like ``target`` around ``model``."""
    from synthloop.models.detection import DetectionTarget

    return DetectionTarget(model, target.label_map, iou_threshold=target.iou_threshold, hard_threshold=target.hard_threshold, name="baseline")


def default_out_dir(config_file: str | Path) -> Path:
    """``runs/terse/<config file stem>``."""
    return Path("runs") / "terse" / Path(config_file).stem


__all__ = [
    "BaselineConfig",
    "DatasetSource",
    "ForegroundsConfig",
    "ModelConfig",
    "ReportConfig",
    "TerseDetectionJobConfig",
    "TerseDetectionJobResult",
    "build_model",
    "evaluate",
    "load_detector",
    "load_job_config",
    "load_job_data",
    "run_terse_detection_job",
]
