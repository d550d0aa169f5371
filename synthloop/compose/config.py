"""Configuration of scene composition (the Cut-Paste-Learn knobs and more)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from synthloop.config import RangeChecked
from synthloop.functional.blend import BLEND_MODES

Range = tuple[float, float]
IntRange = tuple[int, int]


class BlendConfig(RangeChecked):
    """Blend modes and the ranges their options are drawn from."""

    modes: list[str] = Field(default_factory=lambda: ["none", "gaussian", "box", "motion", "poisson"])
    per: Literal["image", "object"] = "image"
    all_modes: bool = False  # write the same layout once per blend mode (Cut-Paste-Learn)
    gaussian_sigma: Range = (0.5, 2.0)
    box_kernel: list[int] = Field(default_factory=lambda: [3, 5])
    motion_kernel: list[int] = Field(default_factory=lambda: [5, 7, 9])
    pyramid_levels: list[int] = Field(default_factory=lambda: [3, 4])

    @field_validator("modes")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one blend mode is required")
        bad = [m for m in v if m not in BLEND_MODES]
        if bad:
            raise ValueError(f"unknown blend mode(s) {bad}; valid: {', '.join(BLEND_MODES)}")
        return v


class PhotometricConfig(RangeChecked):
    enabled: bool = True
    brightness: Range = (0.8, 1.2)
    contrast: Range = (0.8, 1.2)
    saturation: Range = (0.8, 1.2)
    hue: Range = (-0.03, 0.03)


class PlacementConfig(RangeChecked):
    strategy: Literal["uniform", "psis"] = "uniform"
    scale: Range = (0.15, 0.5)  # longer side of the object's mask box, as a fraction of min(H, W)
    aspect_jitter: float = Field(0.0, ge=0.0, le=1.0)  # sy/sx = exp(U(-j, j))
    rotation: Range = (-30.0, 30.0)  # degrees
    shear: Range = (0.0, 0.0)
    max_truncation: float = Field(0.25, ge=0.0, le=1.0)  # fraction of an object's box outside the canvas
    max_iou: float = Field(0.75, ge=0.0, le=1.0)  # box IoU with any object placed before it
    max_tries: int = Field(25, ge=1)
    # instance switching (PSIS): candidates must match the replaced object's scale and aspect
    psis_scale_tolerance: float = Field(1.5, ge=1.0)
    psis_aspect_tolerance: float = Field(1.5, ge=1.0)
    psis_switch_prob: float = Field(1.0, ge=0.0, le=1.0)


class ArtefactConfig(RangeChecked):
    """TERSE §3.1 background artefacts (on by default for detection-style outputs)."""

    enabled: bool = True
    count: IntRange = (1, 3)


class SceneConfig(RangeChecked):
    canvas: IntRange = (480, 640)  # (H, W)
    objects: IntRange = (1, 4)
    distractors: IntRange = (0, 0)
    distractor_categories: list[int] = Field(default_factory=list)
    min_visibility: float = Field(0.25, ge=0.0, le=1.0)  # below this an object is dropped from the labels
    mask_cleanup: bool = False  # TERSE A.2 clean-up of warped masks
    placement: PlacementConfig = Field(default_factory=PlacementConfig)
    blend: BlendConfig = Field(default_factory=BlendConfig)
    photometric: PhotometricConfig = Field(default_factory=PhotometricConfig)
    artefacts: ArtefactConfig = Field(default_factory=ArtefactConfig)
