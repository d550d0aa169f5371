"""The ``synthloop terse`` job's config (:class:`TerseDetectionJobConfig`), its file names and
loading (relative paths resolve against the config file). See :mod:`synthloop.jobs.terse_detection`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from synthloop.config import Config, apply_overrides, build_config, image_size_type, load_yaml, override_keys, parse_override, threads_field
from synthloop.data.instances import InstanceBankConfig
from synthloop.errors import ConfigError
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


SHIFTED = "digit_scenes_shifted"
"""The built-in shifted test set (:func:`~synthloop.compose.digit_scenes_shifted.load_shifted_test`)."""


class DatasetSource(Config):
    """A COCO data set (``annotations`` + ``images``) or built-in data: the digits-in-scenes set
    (``digit_scenes``) or its shifted test set (``digit_scenes_shifted``)."""

    annotations: Path | None = Field(None, description="COCO instances JSON, or a folder holding annotations.json")
    images: Path | None = Field(None, description="folder the file_name entries are relative to (default: the JSON's folder)")
    builtin: Literal["digit_scenes", "digit_scenes_shifted"] | None = Field(
        None,
        description="built-in data instead of a file: digit_scenes (the digits-in-scenes set) or digit_scenes_shifted (its shifted test set: "
        "smaller digits, unseen procedural backgrounds, stronger blur, busier scenes; test split only)",
    )
    split: Literal["train", "val", "test"] = Field("train", description="with builtin: digit_scenes, which split (digit_scenes_shifted has only test)")
    sizes: dict[str, int] | None = Field(None, description="with builtin: digit_scenes, images per split (default 2000/500/1000)")
    seed: int = Field(0, description="with builtin: the data generator's seed (data are generated once and cached)")
    limit: int | None = Field(None, ge=1, description="use only the first N images (digit_scenes_shifted: generates N images, default 500)")
    shift: Literal["mild", "severe"] | None = Field(None, description="with builtin: digit_scenes_shifted, the shift preset (default: the generator's own)")

    @model_validator(mode="before")
    @classmethod
    def _shifted_split(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("builtin") == SHIFTED and "split" not in data:  # its only split
            data = {**data, "split": "test"}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSource:
        if (self.annotations is None) == (self.builtin is None):
            raise ValueError("give exactly one of annotations (a COCO file) or builtin")
        if self.builtin != SHIFTED:
            if self.shift is not None:
                raise ValueError("shift is a setting of builtin: digit_scenes_shifted")
        elif self.sizes is not None or self.split != "test":
            raise ValueError("builtin: digit_scenes_shifted is one test set: no split (other than test) or sizes; limit sets its size")
        return self


class NamedDatasetSource(DatasetSource):
    """One of several evaluation sets (``eval: [{name: shifted, ...}, ...]``): a name and the fields
    of :class:`DatasetSource`."""

    name: str = Field(min_length=1, description="the set's name in metrics.json (eval_sets) and the report; unique")


def eval_list_problem(value: Any) -> tuple[str, str] | None:
    """``(field, message)`` of the first structural problem of a raw ``eval`` list (an item that is not
    a mapping, a missing, empty or duplicate ``name``), or ``None``. A mapping (one source) or ``None``
    is fine."""
    if not isinstance(value, list):
        return None
    if not value:
        return "eval", "an empty list: give at least one named set, or leave eval out"
    seen: dict[str, int] = {}
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            return f"eval[{i}]", f"each set of the list is a mapping {{name: ..., <data set keys>}}, got {item!r}"
        name = item.get("name")
        if name is None:
            return f"eval[{i}].name", "missing: every set of an eval list needs a name"
        if not isinstance(name, str) or not name.strip():
            return f"eval[{i}].name", f"must be a non-empty string, got {name!r}"
        if name in seen:
            return f"eval[{i}].name", f"duplicate name {name!r} (also eval[{seen[name]}].name); names must be unique"
        seen[name] = i
    return None


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


class PlausibilityConfig(Config):
    """The plausibility reference: a detector whose confidence on each kept pasted object says whether
    the object is still detectable (plausible: confidence >= loop.hard_threshold), reported next to
    hardness (:mod:`synthloop.metrics.plausibility`)."""

    reference: Literal["teacher", "baseline_random_paste", "none"] | None = Field(
        None,
        description="teacher: the loop's teacher as it ends (needs loop.objective: teacher; a frozen teacher is a copy of the baseline); "
        "baseline_random_paste: a copy of the baseline fine-tuned with plain random paste for the same cycles and T schedule "
        "(the benchmark's reference; costly: a second loop, about the loop's T time again); none: not measured; "
        "default (null): teacher when the loop has one, else none",
    )


class TerseDetectionJobConfig(Config):
    """A ``synthloop terse`` job (see the module docstring)."""

    seed: int = 0
    image_size: image_size_type(16) = Field((128, 128), description="(H, W) every image is resized to; a single number for square")
    real: DatasetSource
    eval: DatasetSource | list[NamedDatasetSource] | None = Field(
        None,
        description="where AP is measured: one data set (named 'eval'), or a list of named sets [{name: shifted, <data set keys>}, ...] "
        "(the first is the main one); default: the real set itself (training-set AP)",
    )
    foregrounds: ForegroundsConfig = Field(default_factory=ForegroundsConfig)
    backgrounds: BackgroundsConfig = Field(default_factory=lambda: BackgroundsConfig(sources=["photos"]))
    model: ModelConfig = Field(default_factory=ModelConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    loop: SceneTerseConfig = Field(default_factory=SceneTerseConfig)
    eval_batch_size: int = Field(16, ge=1)
    report: ReportConfig = Field(default_factory=ReportConfig)
    plausibility: PlausibilityConfig = Field(default_factory=PlausibilityConfig)
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

    @field_validator("eval", mode="before")
    @classmethod
    def _eval_list(cls, value: Any) -> Any:
        problem = eval_list_problem(value)
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        return value

    @model_validator(mode="after")
    def _reference(self) -> TerseDetectionJobConfig:
        if self.plausibility.reference == "teacher" and self.loop.objective != "teacher":
            raise ValueError("plausibility.reference: teacher needs loop.objective: teacher (there is no teacher otherwise)")
        return self

    def eval_sources(self) -> list[tuple[str, DatasetSource, str]]:
        """``(name, source, field)`` of every evaluation set in order; a single source is named
        ``eval``; empty without ``eval`` (the job then scores the real set)."""
        if self.eval is None:
            return []
        if isinstance(self.eval, DatasetSource) and not isinstance(self.eval, NamedDatasetSource):
            return [("eval", self.eval, "eval")]
        return [(s.name, s, f"eval[{i}]") for i, s in enumerate(self.eval)]  # type: ignore[union-attr]

    def plausibility_reference(self) -> str:
        """The reference actually used: the configured one, or (default) ``teacher`` when the loop has one, else ``none``."""
        ref = self.plausibility.reference
        if ref is None:
            return "teacher" if self.loop.objective == "teacher" else "none"
        return ref


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make the file paths of a raw config mapping absolute, relative to ``base``."""
    absolute = absolute_to(base)
    data = dict(data)
    paths = lambda src: {k: absolute(v) if k in ("annotations", "images") else v for k, v in src.items()}
    for key in ("real", "eval"):
        src = data.get(key)
        if isinstance(src, dict):
            data[key] = paths(src)
        elif key == "eval" and isinstance(src, list):
            data[key] = [paths(s) if isinstance(s, dict) else s for s in src]
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


def load_job_config(path: str | Path, overrides: Sequence[str] | None = None, *, data: Mapping[str, Any] | None = None) -> TerseDetectionJobConfig:
    """Load a job config file, apply ``key=value`` overrides, resolve relative paths against the
    file's folder, validate. Errors name the file and the key (typos list the valid keys). A list
    ``eval`` takes overrides by index or name (``eval.0.limit=50``, ``eval.shifted.limit=50``).
    Warns when a background source is also a foreground source
    (:func:`~synthloop.jobs.paste_assets.background_overlap`). ``data``: the file's contents
    already read (``path`` still names it and anchors relative paths)."""
    from synthloop.jobs.paste_assets import warn_background_overlap

    data = dict(data) if data is not None else load_yaml(path)
    merged, rest = _eval_item_overrides(data, list(overrides or []))
    merged = apply_overrides(merged, rest)
    _check_eval_list(merged.get("eval"), str(path))
    cfg = build_config(TerseDetectionJobConfig, _resolve_paths(merged, Path(path).resolve().parent), source=str(path), overridden=override_keys(overrides))
    warn_background_overlap(cfg.backgrounds, foreground_sources(cfg))
    return cfg


def _eval_item_overrides(data: dict[str, Any], overrides: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Apply the ``eval.<index or name>.<key>=value`` overrides of a list ``eval`` (e.g.
    ``eval.0.limit=50``, ``eval.shifted.limit=50``) to a copy of ``data``; returns it and the
    other overrides."""
    sets = data.get("eval")
    if not isinstance(sets, list):
        return data, overrides
    sets = [dict(s) if isinstance(s, dict) else s for s in sets]
    names = {s["name"]: i for i, s in enumerate(sets) if isinstance(s, dict) and isinstance(s.get("name"), str)}
    rest = []
    for item in overrides:
        keys, value = parse_override(item)
        if len(keys) < 3 or keys[0] != "eval":
            rest.append(item)
            continue
        i = int(keys[1]) if keys[1].isdigit() else names.get(keys[1])
        if i is None or i >= len(sets) or not isinstance(sets[i], dict):
            raise ConfigError(f"no eval set {keys[1]!r} (give its index 0..{len(sets) - 1} or its name: {', '.join(map(str, names))})",
                              file="<command line>", field=".".join(keys))  # fmt: skip
        cur = sets[i]
        for part in keys[2:-1]:
            cur[part] = dict(cur[part]) if isinstance(cur.get(part), dict) else {}
            cur = cur[part]
        cur[keys[-1]] = value
    return {**data, "eval": sets}, rest


def _check_eval_list(value: Any, source: str) -> None:
    """``eval``'s errors as a :class:`~synthloop.errors.ConfigError` naming the file and the field
    (``eval[1].name``, ``eval.limit``): a list's missing, empty or duplicate name, a bad key of a set.
    (The union of one source and a list would otherwise name pydantic's union members.)"""
    problem = eval_list_problem(value)
    if problem is not None:
        raise ConfigError(problem[1], file=source, field=problem[0])
    if isinstance(value, dict):
        if "name" in value:
            raise ConfigError("one eval set has no name; for named sets give a list: eval: [{name: ..., <data set keys>}, ...]", file=source, field="eval.name")
        items: list[tuple[str, type[DatasetSource], Any]] = [("eval", DatasetSource, value)]
    else:
        items = [(f"eval[{i}]", NamedDatasetSource, item) for i, item in enumerate(value if isinstance(value, list) else [])]
    for field, model, item in items:
        try:
            model.model_validate(item)
        except ValidationError as exc:
            e = exc.errors()[0]
            loc = ".".join(str(p) for p in e.get("loc", ()))
            msg = "unknown key; valid keys here: " + ", ".join(sorted(model.model_fields)) if e.get("type") == "extra_forbidden" else e.get("msg")
            raise ConfigError(str(msg), file=source, field=field + (f".{loc}" if loc else "")) from None


def resolved_dict(cfg: TerseDetectionJobConfig) -> dict[str, Any]:
    """The config as plain data, as written in files (aliases such as ``coco.json``), without
    ``threads`` (a resumed run may use another value; ``run.json`` records what each run used)."""
    return cfg.model_dump(mode="json", by_alias=True, exclude={"threads"})
