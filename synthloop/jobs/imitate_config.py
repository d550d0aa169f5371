"""The ``synthloop imitate`` job's config (:class:`ImitateJobConfig`): the ``synthloop terse`` job's
data, model and baseline sections (same classes, same path rules) with a required real
validation split (``val``: failures are mined on it and it decides when to stop), an optional test
set (``test``: reported, never used to choose) and the imitation loop's knobs (``loop``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from synthloop.config import Config, apply_overrides, build_config, image_size_type, load_yaml, override_keys, threads_field
from synthloop.jobs.paste_config import BackgroundsConfig
from synthloop.jobs.terse_detection_config import BaselineConfig, DatasetSource, ForegroundsConfig, ModelConfig, TerseDetectionJobConfig, _resolve_paths
from synthloop.loops.imitation import ImitationConfig

CONFIG_FILE = "config.resolved.yaml"
BASELINE_FILE = "baseline.pt"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"
CYCLES_FILE = "cycles.json"
REPORT_FILE = "report.html"
OUTPUTS = (CONFIG_FILE, "run.json", BASELINE_FILE, MODEL_FILE, METRICS_FILE, CYCLES_FILE, REPORT_FILE, "checkpoint.pt")


class ImitateReportConfig(Config):
    failures_per_cycle: int = Field(8, ge=0, description="failures shown per cycle in the gallery")
    scenes_per_failure: int = Field(3, ge=1, description="re-simulated scenes shown beside each failure")
    scale: int = Field(2, ge=1, description="pixel enlargement of drawn images")


class ImitateJobConfig(Config):
    """A ``synthloop imitate`` job (see :mod:`synthloop.jobs.imitate`)."""

    seed: int = 0
    image_size: image_size_type(16) = Field((128, 128), description="(H, W) every image is resized to; a single number for square")
    real: DatasetSource
    val: DatasetSource = Field(..., description="real validation split: failures are mined here and it decides when to stop (never trained on)")
    test: DatasetSource | None = Field(None, description="optional held-out set, evaluated for the selected model only")
    foregrounds: ForegroundsConfig = Field(default_factory=ForegroundsConfig)
    backgrounds: BackgroundsConfig = Field(default_factory=lambda: BackgroundsConfig(sources=["photos"]))
    model: ModelConfig = Field(default_factory=ModelConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    loop: ImitationConfig = Field(default_factory=ImitationConfig)
    eval_batch_size: int = Field(16, ge=1)
    report: ImitateReportConfig = Field(default_factory=ImitateReportConfig)
    threads: int | None = threads_field()

    @model_validator(mode="before")
    @classmethod
    def _loop_seed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "seed" in data:  # the loop's seed follows the job's unless set
            loop = data.get("loop")
            if loop is None or (isinstance(loop, dict) and "seed" not in loop):
                data = {**data, "loop": {**(loop or {}), "seed": data["seed"]}}
        return data

    def as_terse(self, eval_set: DatasetSource | None = None) -> TerseDetectionJobConfig:
        """The same data/model sections as a ``terse`` job config (its loaders take that), with
        ``eval_set`` (default ``val``) as its ``eval``."""
        return TerseDetectionJobConfig(
            seed=self.seed, image_size=self.image_size, real=self.real, eval=eval_set or self.val, foregrounds=self.foregrounds, backgrounds=self.backgrounds,
            model=self.model, baseline=self.baseline, eval_batch_size=self.eval_batch_size,
        )  # fmt: skip


def load_imitate_config(path: str | Path, overrides: Sequence[str] | None = None, *, data: Mapping[str, Any] | None = None) -> ImitateJobConfig:
    """Load a job config file, apply ``key=value`` overrides, resolve relative paths against the
    file's folder, validate (errors name the file and the key). ``data``: the file's contents
    already read (``path`` still names it and anchors relative paths)."""
    data = dict(data) if data is not None else load_yaml(path)
    merged = apply_overrides(data, list(overrides or []))
    for key in ("val", "test"):  # resolved like the terse job's real / eval
        if isinstance(merged.get(key), dict) and "eval" not in merged:
            merged = {**merged, "eval": merged[key]}
            merged[key] = _resolve_paths(merged, Path(path).resolve().parent)["eval"]
            merged.pop("eval")
    return build_config(ImitateJobConfig, _resolve_paths(merged, Path(path).resolve().parent), source=str(path), overridden=override_keys(overrides))


def resolved_dict(cfg: ImitateJobConfig) -> dict[str, Any]:
    """The config as written in files, without ``threads`` (a resumed run may change it)."""
    return cfg.model_dump(mode="json", by_alias=True, exclude={"threads"})


__all__ = ["OUTPUTS", "ImitateJobConfig", "ImitateReportConfig", "load_imitate_config", "resolved_dict"]
