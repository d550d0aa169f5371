"""The ``synthloop terse`` job's config (:class:`TerseDetectionJobConfig`), its file names and
loading (relative paths resolve against the config file). See :mod:`synthloop.jobs.terse_detection`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from synthloop.config import Config, apply_overrides, build_config, image_size_type, load_yaml, override_keys, threads_field
from synthloop.data.instances import InstanceBankConfig
from synthloop.jobs.paste_config import BackgroundsConfig, CocoSource, absolute_to, resolve_backgrounds
from synthloop.loops.terse_detection_config import SceneTerseConfig
from synthloop.models.build import SMALL_FCOS

CONFIG_FILE = "config.resolved.yaml"
BASELINE_FILE = "baseline.pt"
LOOP_DIR = "loop"
SYNTHETIC_DIR = "synthetic"
MODEL_FILE = "model.pt"
MODEL_JSON = "model.json"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"


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
    image_size: image_size_type(16) = Field((128, 128), description="(H, W) every image is resized to; a single number for square")
    real: DatasetSource
    eval: DatasetSource | None = None
    foregrounds: ForegroundsConfig = Field(default_factory=ForegroundsConfig)
    backgrounds: BackgroundsConfig = Field(default_factory=lambda: BackgroundsConfig(sources=["photos"]))
    model: ModelConfig = Field(default_factory=ModelConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    loop: SceneTerseConfig = Field(default_factory=SceneTerseConfig)
    eval_batch_size: int = Field(16, ge=1)
    report: ReportConfig = Field(default_factory=ReportConfig)
    threads: int | None = threads_field()

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
    absolute = absolute_to(base)
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
    return resolve_backgrounds(data, absolute)


def foreground_sources(cfg: TerseDetectionJobConfig) -> list[Any]:
    """The job's foreground sources (:class:`~synthloop.jobs.paste_assets.ForegroundSource`; none
    for built-in data)."""
    from synthloop.jobs.paste_assets import ForegroundSource

    fc = cfg.foregrounds
    ids = tuple(fc.category_ids) if fc.category_ids is not None else None
    if fc.source == "real" and cfg.real.annotations is not None:
        return [ForegroundSource("real", coco=cfg.real.annotations, images=cfg.real.images, category_ids=ids)]
    if fc.source == "coco" and fc.coco is not None:
        ids = ids or (tuple(fc.coco.category_ids) if fc.coco.category_ids is not None else None)
        return [ForegroundSource("foregrounds.coco", coco=fc.coco.json_file, images=fc.coco.images, category_ids=ids)]
    if fc.source in ("rgba_folder", "mask_pairs") and fc.folder is not None:
        return [ForegroundSource("foregrounds.folder", folder=fc.folder)]
    return []


def load_job_config(path: str | Path, overrides: Sequence[str] | None = None) -> TerseDetectionJobConfig:
    """Load a job config file, apply ``key=value`` overrides, resolve relative paths against the
    file's folder, validate. Errors name the file and the key (typos list the valid keys). Warns
    when a background source is also a foreground source
    (:func:`~synthloop.jobs.paste_assets.background_overlap`)."""
    from synthloop.jobs.paste_assets import warn_background_overlap

    data = load_yaml(path)
    merged = apply_overrides(data, list(overrides or []))
    cfg = build_config(TerseDetectionJobConfig, _resolve_paths(merged, Path(path).resolve().parent), source=str(path), overridden=override_keys(overrides))
    warn_background_overlap(cfg.backgrounds, foreground_sources(cfg))
    return cfg


def resolved_dict(cfg: TerseDetectionJobConfig) -> dict[str, Any]:
    """The config as plain data, as written in files (aliases such as ``coco.json``), without
    ``threads`` (a resumed run may use another value; ``run.json`` records what each run used)."""
    return cfg.model_dump(mode="json", by_alias=True, exclude={"threads"})
