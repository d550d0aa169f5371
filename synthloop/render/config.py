"""Configuration of the glyph renderer's latent variations (:class:`VariationConfig`).

The variations are the ones MrGAN's renderer ablates, plus two that matter for glyphs:

============  =================================================================================
texture       the glyph's fill: solid, linear gradient, stripes, checkerboard or value noise,
              painted on the glyph plane (so it follows the camera view)
lighting      the glyph as a height map (its blurred mask), Lambert-shaded by a light of random
              direction, intensity, ambient share and colour
background    plain colour, procedural pattern, or a crop of a real photograph (photos and
              folders come from :class:`~synthloop.data.backgrounds.BackgroundBank`)
camera        3D rotation of the glyph plane (yaw, pitch, roll) seen through a pinhole camera of
              random focal length: a perspective warp (homography)
occlusion     rectangles, ellipses and lines drawn over the glyph
augment       2D augmentation: crop (zoom + shift), shear, contrast, brightness, an illumination
              gradient, Gaussian blur and Gaussian noise
stroke        thicker or thinner strokes (dilation / erosion of the mask by max-pooling)
elastic       a smooth random displacement field (bicubic interpolation of a coarse random grid)
============  =================================================================================

Every variation has ``enabled`` and a per-sample probability ``p``; whether it applied is recorded
per sample (:attr:`~synthloop.render.params.RenderParams.flags`). A sample without a variation
gets that variation's identity parameters, and :func:`~synthloop.render.apply.apply` leaves it
bit-identical to a render with the variation off.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from synthloop.config import Config, RangeChecked

VARIATIONS: tuple[str, ...] = ("texture", "lighting", "background", "camera", "occlusion", "augment", "stroke", "elastic")
TEXTURE_KINDS: tuple[str, ...] = ("solid", "gradient", "stripes", "checker", "noise")
BACKGROUND_KINDS: tuple[str, ...] = ("plain", "texture", "photo")
OCCLUDER_SHAPES: tuple[str, ...] = ("rect", "ellipse", "line")

Range = tuple[float, float]
IntRange = tuple[int, int]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]
UnitRange = tuple[Unit, Unit]
Color = tuple[Unit, Unit, Unit]
TextureKind = Literal["solid", "gradient", "stripes", "checker", "noise"]
OccluderShape = Literal["rect", "ellipse", "line"]


class VariationSwitch(RangeChecked):
    """``enabled`` switches a variation on; ``p`` is the probability it applies to a sample."""

    enabled: bool = True
    p: float = Field(1.0, ge=0.0, le=1.0)


class TextureConfig(VariationSwitch):
    kinds: list[TextureKind] = Field(default_factory=lambda: list(TEXTURE_KINDS), min_length=1)
    luma: UnitRange = Field((0.6, 1.0), description="brightness of the fill colours")
    saturation: UnitRange = (0.2, 1.0)  # RGB only
    frequency: Range = Field((1.0, 4.0), description="stripes/checker cycles across the glyph")
    base_color: Color = Field((1.0, 1.0, 1.0), description="the fill when texture is off")


class LightingConfig(VariationSwitch):
    azimuth: Range = (0.0, 360.0)  # degrees, counter-clockwise from +x on screen
    elevation: Range = (25.0, 75.0)  # degrees above the glyph plane
    intensity: Range = Field((0.7, 1.3), description="brightness of a flat lit surface")
    ambient: UnitRange = Field((0.15, 0.5), description="share of light that ignores the surface normal")
    relief: Range = Field((0.05, 0.15), description="height of the glyph's relief, in glyph sizes")
    softness: Range = Field((0.03, 0.07), description="sigma of the height map's blur, in glyph sizes")
    saturation: UnitRange = (0.0, 0.3)  # of the light's colour (RGB only)


class BackgroundConfig(VariationSwitch):
    kinds: dict[Literal["plain", "texture", "photo"], float] = Field(default_factory=lambda: {"plain": 1.0, "texture": 1.0, "photo": 1.0})
    luma: UnitRange = Field((0.0, 0.4), description="brightness of plain and pattern colours")
    saturation: UnitRange = (0.2, 1.0)
    texture_kinds: list[TextureKind] = Field(default_factory=lambda: ["gradient", "stripes", "checker", "noise"], min_length=1)
    frequency: Range = Field((1.0, 6.0), description="pattern cycles across the canvas")
    photo_sources: list[str] = Field(default_factory=lambda: ["photos"], description="BackgroundBank sources: 'photos' (bundled) or image folders/files")
    photo_scale: UnitRange = Field((0.05, 0.5), description="crop area as a fraction of the photo's area")
    base_color: Color = Field((0.0, 0.0, 0.0), description="the background when this variation is off")

    @model_validator(mode="after")
    def _weights(self) -> "BackgroundConfig":
        if any(w < 0 for w in self.kinds.values()) or not self.kinds or sum(self.kinds.values()) <= 0:
            raise ValueError(f"background.kinds needs non-negative weights with a positive sum, got {self.kinds}")
        return self


class CameraConfig(VariationSwitch):
    yaw: Range = (-40.0, 40.0)  # degrees, rotation about the glyph's vertical axis
    pitch: Range = (-40.0, 40.0)  # degrees, about the horizontal axis
    roll: Range = (-15.0, 15.0)  # degrees, in-plane, counter-clockwise on screen
    focal: Range = Field((1.5, 4.0), description="focal length in glyph sizes (smaller = stronger perspective)")

    @model_validator(mode="after")
    def _positive_focal(self) -> "CameraConfig":
        if self.focal[0] <= 0:
            raise ValueError(f"camera.focal must be positive, got {self.focal}")
        return self


class OcclusionConfig(VariationSwitch):
    count: IntRange = (1, 2)
    shapes: list[OccluderShape] = Field(default_factory=lambda: list(OCCLUDER_SHAPES), min_length=1)
    size: Range = Field((0.15, 0.45), description="occluder width and height, in glyph sizes")
    line_width: Range = Field((0.05, 0.12), description="line thickness, in glyph sizes")
    spread: float = Field(0.45, ge=0.0, description="occluder centres lie within +-spread glyph sizes of the glyph centre")
    luma: UnitRange = (0.0, 1.0)
    saturation: UnitRange = (0.0, 1.0)

    @model_validator(mode="after")
    def _count(self) -> "OcclusionConfig":
        if self.count[0] < 0:
            raise ValueError(f"occlusion.count must be non-negative, got {self.count}")
        return self


class AugmentConfig(VariationSwitch):
    crop: Range = Field((0.8, 1.0), description="side of the crop as a fraction of the image (zoom 1/crop)")
    shear: Range = (-0.2, 0.2)
    contrast: Range = (0.6, 1.4)
    brightness: Range = (0.75, 1.25)
    illumination: Range = Field((0.0, 0.3), description="strength of a linear illumination gradient")
    blur: Range = Field((0.0, 0.8), description="Gaussian sigma in output pixels")
    noise: Range = Field((0.0, 0.05), description="standard deviation of Gaussian pixel noise")

    @model_validator(mode="after")
    def _bounds(self) -> "AugmentConfig":
        if not (0 < self.crop[0] <= self.crop[1] <= 1):
            raise ValueError(f"augment.crop must satisfy 0 < min <= max <= 1, got {self.crop}")
        if self.blur[0] < 0 or self.noise[0] < 0:
            raise ValueError("augment.blur and augment.noise must be non-negative")
        return self


class StrokeConfig(VariationSwitch):
    width: Range = Field((-0.03, 0.05), description="added stroke width per side, in glyph sizes (negative thins)")


class ElasticConfig(VariationSwitch):
    magnitude: Range = Field((0.03, 0.08), description="largest control-point displacement, in glyph sizes")


class VariationConfig(Config):
    """The eight latent variations, each switchable (``<name>.enabled``) with its ranges."""

    texture: TextureConfig = Field(default_factory=TextureConfig)
    lighting: LightingConfig = Field(default_factory=LightingConfig)
    background: BackgroundConfig = Field(default_factory=BackgroundConfig)
    camera: CameraConfig = Field(default_factory=CameraConfig)
    occlusion: OcclusionConfig = Field(default_factory=OcclusionConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    stroke: StrokeConfig = Field(default_factory=StrokeConfig)
    elastic: ElasticConfig = Field(default_factory=ElasticConfig)

    def switches(self) -> dict[str, VariationSwitch]:
        return {name: getattr(self, name) for name in VARIATIONS}

    @property
    def uses_photos(self) -> bool:
        bg = self.background
        return bg.enabled and bg.p > 0 and bg.kinds.get("photo", 0.0) > 0
