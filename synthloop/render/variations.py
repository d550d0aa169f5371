"""Latent variations of the glyph renderer: configs, the params dataclass, the sampler, and the
pure batched ``apply``.

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
per sample (:attr:`RenderParams.flags`). A sample without a variation gets that variation's
identity parameters, and ``apply`` leaves it bit-identical to a render with the variation off.

Sampling takes one explicit ``torch.Generator``: a single 63-bit seed is drawn from it and every
variation draws from its own generator derived from that seed, so switching one variation on or
off (or changing its ranges) leaves the glyphs and every other variation's draws unchanged --
the controlled ablation of MrGAN's Table 1.

Coordinates. Output pixel ``(x, y)`` covers ``[x, x+1) x [y, y+1)`` in *output pixels*. The 2D
augmentation's crop and shear map output pixels to *scene* coordinates (same units); the glyph,
the background and the occluders live in scene coordinates. The glyph tile (``G x G``, see
:meth:`~synthloop.render.glyphs.GlyphSet.atlas`) maps to the scene through the camera homography
about the glyph's centre of mass, then a scale that makes the glyph's longer side
``glyph_size * min(H, W)`` output pixels, with the centre of mass on the canvas centre.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from synthloop.compose.config import RangeChecked
from synthloop.config import Config
from synthloop.errors import InputError
from synthloop.functional.color import LUMA
from synthloop.utils.seeding import make_generator

VARIATIONS: tuple[str, ...] = ("texture", "lighting", "background", "camera", "occlusion", "augment", "stroke", "elastic")
TEXTURE_KINDS: tuple[str, ...] = ("solid", "gradient", "stripes", "checker", "noise")
BACKGROUND_KINDS: tuple[str, ...] = ("plain", "texture", "photo")
OCCLUDER_SHAPES: tuple[str, ...] = ("rect", "ellipse", "line")

NOISE_LATTICE = 5
"""Side of the value-noise lattice of the ``noise`` texture."""
ELASTIC_GRID = 5
"""Control points per side of the elastic displacement grid (spanning the glyph tile)."""

# High-dimensional random fields (pixel noise, noise-texture lattices, elastic control grids) are
# recorded as a seed: each is drawn from its own generator seeded with it, so the params stay
# small (a params.jsonl line is a few hundred bytes) and still replay exactly.
_SEED_HIGH = 2**53  # seeds stay exact through JSON readers that parse numbers as doubles

Range = tuple[float, float]
IntRange = tuple[int, int]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]
UnitRange = tuple[Unit, Unit]
Color = tuple[Unit, Unit, Unit]
TextureKind = Literal["solid", "gradient", "stripes", "checker", "noise"]
OccluderShape = Literal["rect", "ellipse", "line"]


# ---------------------------------------------------------------------------------------------
# configuration


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


# ---------------------------------------------------------------------------------------------
# params


def _index(value: Any, idx: torch.Tensor) -> Any:
    if isinstance(value, torch.Tensor):
        return value[idx]
    if isinstance(value, tuple):
        return tuple(value[i] for i in idx.tolist())
    if dataclasses.is_dataclass(value):
        return type(value)(**{f.name: _index(getattr(value, f.name), idx) for f in dataclasses.fields(value)})
    return value


def _concat(values: Sequence[Any]) -> Any:
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(values))
    if isinstance(first, tuple):
        return tuple(x for v in values for x in v)
    if dataclasses.is_dataclass(first):
        return type(first)(**{f.name: _concat([getattr(v, f.name) for v in values]) for f in dataclasses.fields(first)})
    return first


@dataclass
class TextureParams:
    """A batch of fill or background patterns (``C`` = image channels, 1 or 3).

    Attributes:
        kind: ``Tensor[B]`` long, index into :data:`TEXTURE_KINDS`.
        color_a, color_b: ``Tensor[B, C]`` the pattern's two colours (``solid`` uses ``color_a``).
        pattern: ``Tensor[B, 4]`` angle (degrees), frequency (cycles across the glyph or canvas),
            phase u, phase v (in cycles).
        seed: ``Tensor[B]`` long seed of the ``noise`` kind's value lattice (see :func:`noise_lattice`).
    """

    kind: torch.Tensor
    color_a: torch.Tensor
    color_b: torch.Tensor
    pattern: torch.Tensor
    seed: torch.Tensor

    @classmethod
    def solid(cls, color: torch.Tensor) -> "TextureParams":
        """Solid ``color`` ``Tensor[B, C]``."""
        n = color.shape[0]
        return cls(
            kind=torch.zeros(n, dtype=torch.long),
            color_a=color.clone(),
            color_b=color.clone(),
            pattern=torch.zeros(n, 4),
            seed=torch.zeros(n, dtype=torch.long),
        )

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per sample: ``kind``, ``color_a``, and for patterns ``color_b``,
        ``angle``, ``frequency``, ``phase`` (and ``seed`` for noise)."""
        kinds, a, b, pattern, seed = self.kind.tolist(), self.color_a.tolist(), self.color_b.tolist(), self.pattern.tolist(), self.seed.tolist()
        out = []
        for i, k in enumerate(kinds):
            kind = TEXTURE_KINDS[k]
            rec: dict[str, Any] = {"kind": kind, "color_a": a[i]}
            if kind != "solid":
                angle, freq, pu, pv = pattern[i]
                rec.update(color_b=b[i], angle=angle, frequency=freq, phase=[pu, pv])
            if kind == "noise":
                rec["seed"] = seed[i]
            out.append(rec)
        return out

    @classmethod
    def from_record_list(cls, recs: Sequence[dict[str, Any]], channels: int, where: str) -> "TextureParams":
        n = len(recs)
        kind = torch.zeros(n, dtype=torch.long)
        a = torch.zeros(n, channels)
        b = torch.zeros(n, channels)
        pattern = torch.zeros(n, 4)
        seed = torch.zeros(n, dtype=torch.long)
        for i, r in enumerate(recs):
            k = r.get("kind")
            if k not in TEXTURE_KINDS:
                raise InputError(f"unknown texture kind {k!r}; expected one of {', '.join(TEXTURE_KINDS)}", field=f"[{i}].{where}.kind")
            kind[i] = TEXTURE_KINDS.index(k)
            a[i] = _vec(r, "color_a", channels, f"[{i}].{where}")
            b[i] = _vec(r, "color_b", channels, f"[{i}].{where}") if k != "solid" else a[i]
            if k != "solid":
                pattern[i, 0] = _num(r, "angle", f"[{i}].{where}")
                pattern[i, 1] = _num(r, "frequency", f"[{i}].{where}")
                pattern[i, 2:] = _vec(r, "phase", 2, f"[{i}].{where}")
            if k == "noise":
                seed[i] = _seed(r, "seed", f"[{i}].{where}")
        return cls(kind, a, b, pattern, seed)


@dataclass
class RenderParams:
    """Everything random about a batch of ``B`` renders; ``apply`` is a pure function of it.

    Attributes:
        glyph: ``Tensor[B]`` long, index into the renderer's :class:`~synthloop.render.glyphs.GlyphSet`.
        label: ``Tensor[B]`` long class label.
        flags: ``Tensor[B, V]`` bool, which of :data:`VARIATIONS` applied to each sample.
        fill: the glyph's :class:`TextureParams`.
        lighting: ``Tensor[B, 6]`` azimuth, elevation (degrees), intensity, ambient, relief and
            softness (height and blur sigma of the height map, in glyph sizes).
        light_color: ``Tensor[B, C]``.
        background_kind: ``Tensor[B]`` long, index into :data:`BACKGROUND_KINDS`.
        background: :class:`TextureParams` of plain (``color_a``) and pattern backgrounds.
        photo: per sample, the background bank's params dict of a photo crop, or ``None``.
        camera: ``Tensor[B, 4]`` yaw, pitch, roll (degrees), focal length (glyph sizes).
        occluders: ``Tensor[B, K, 7]`` active (0/1), shape (index into :data:`OCCLUDER_SHAPES`),
            centre x, y (glyph sizes from the canvas centre), width, height (glyph sizes), angle (degrees).
        occluder_color: ``Tensor[B, K, C]``.
        augment: ``Tensor[B, 10]`` crop zoom (>= 1), crop shift x, y (in [-1, 1] of the free
            margin), shear, contrast, brightness, illumination gradient x, y, blur sigma (output
            px), noise standard deviation.
        noise_seed: ``Tensor[B]`` long seed of each sample's pixel noise.
        stroke: ``Tensor[B]`` added stroke width per side, in glyph sizes.
        elastic: ``Tensor[B]`` largest control-point displacement, in glyph sizes.
        elastic_seed: ``Tensor[B]`` long seed of the control-point displacements (see :func:`elastic_field`).
    """

    glyph: torch.Tensor
    label: torch.Tensor
    flags: torch.Tensor
    fill: TextureParams
    lighting: torch.Tensor
    light_color: torch.Tensor
    background_kind: torch.Tensor
    background: TextureParams
    photo: tuple[dict[str, Any] | None, ...]
    camera: torch.Tensor
    occluders: torch.Tensor
    occluder_color: torch.Tensor
    augment: torch.Tensor
    noise_seed: torch.Tensor
    stroke: torch.Tensor
    elastic: torch.Tensor
    elastic_seed: torch.Tensor

    def __len__(self) -> int:
        return int(self.glyph.shape[0])

    @property
    def channels(self) -> int:
        return int(self.fill.color_a.shape[1])

    def enabled(self, name: str) -> torch.Tensor:
        """``Tensor[B]`` bool: where variation ``name`` applied."""
        return self.flags[:, VARIATIONS.index(name)]

    def select(self, index: Sequence[int] | torch.Tensor) -> "RenderParams":
        """The params of a subset of the samples (rendering it gives the same pixels as slicing)."""
        idx = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        return _index(self, idx)

    @staticmethod
    def concat(parts: Sequence["RenderParams"]) -> "RenderParams":
        if not parts:
            raise ValueError("nothing to concatenate")
        return _concat(parts)


def identity_params(glyph: torch.Tensor, label: torch.Tensor, channels: int, config: VariationConfig | None = None) -> RenderParams:
    """Params of plain renders (every variation off) of ``glyph`` ``Tensor[B]`` with ``label``."""
    cfg = config or VariationConfig()
    n = int(glyph.shape[0])
    fill = _base_color(cfg.texture.base_color, channels).expand(n, channels)
    bg = _base_color(cfg.background.base_color, channels).expand(n, channels)
    lighting = torch.zeros(n, 6)
    lighting[:, 1] = 90.0
    lighting[:, 2] = 1.0
    lighting[:, 3] = 1.0
    augment = torch.zeros(n, 10)
    augment[:, 0] = 1.0
    augment[:, 4] = 1.0
    augment[:, 5] = 1.0
    camera = torch.zeros(n, 4)
    camera[:, 3] = 1.0
    return RenderParams(
        glyph=glyph.to(torch.long).clone(),
        label=label.to(torch.long).clone(),
        flags=torch.zeros(n, len(VARIATIONS), dtype=torch.bool),
        fill=TextureParams.solid(fill),
        lighting=lighting,
        light_color=torch.ones(n, channels),
        background_kind=torch.zeros(n, dtype=torch.long),
        background=TextureParams.solid(bg),
        photo=(None,) * n,
        camera=camera,
        occluders=torch.zeros(n, 0, 7),
        occluder_color=torch.zeros(n, 0, channels),
        augment=augment,
        noise_seed=torch.zeros(n, dtype=torch.long),
        stroke=torch.zeros(n),
        elastic=torch.zeros(n),
        elastic_seed=torch.zeros(n, dtype=torch.long),
    )


def _base_color(color: Sequence[float], channels: int) -> torch.Tensor:
    rgb = torch.tensor([float(c) for c in color], dtype=torch.float64)
    if channels == 1:
        return (rgb @ torch.tensor(LUMA, dtype=torch.float64)).reshape(1, 1).to(torch.float32)
    return rgb.reshape(1, 3).to(torch.float32)


# ---------------------------------------------------------------------------------------------
# records (JSON) <-> params


def _num(rec: dict[str, Any], key: str, where: str) -> float:
    v = rec.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InputError(f"expected a finite number, got {v!r}", field=f"{where}.{key}")
    return float(v)


def _vec(rec: dict[str, Any], key: str, shape: int | tuple[int, ...], where: str) -> torch.Tensor:
    try:
        t = torch.tensor(rec[key], dtype=torch.float32)
    except KeyError:
        raise InputError("missing", field=f"{where}.{key}") from None
    except (TypeError, ValueError):
        raise InputError(f"expected numbers, got {rec[key]!r}", field=f"{where}.{key}") from None
    want = (shape,) if isinstance(shape, int) else shape
    if tuple(t.shape) != want or not torch.isfinite(t).all():
        raise InputError(f"expected {want} finite numbers, got {rec[key]!r}", field=f"{where}.{key}")
    return t


def _seed(rec: dict[str, Any], key: str, where: str) -> int:
    v = rec.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
        raise InputError(f"expected a non-negative integer seed, got {v!r}", field=f"{where}.{key}")
    return v


def params_to_records(params: RenderParams, glyph_keys: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
    """One JSON-ready dict per sample. A variation's entry is present only where it applied.

    ``glyph_keys[i]`` names glyph ``i`` (see :attr:`~synthloop.render.glyphs.Glyph.key`). Float32
    values are written as doubles, so they read back exactly.
    """
    flags, glyph, label = params.flags.tolist(), params.glyph.tolist(), params.label.tolist()
    fill, background = params.fill.records(), params.background.records()
    lighting, light_color = params.lighting.tolist(), params.light_color.tolist()
    bg_kind, camera, augment, seeds = params.background_kind.tolist(), params.camera.tolist(), params.augment.tolist(), params.noise_seed.tolist()
    occluders, occluder_color = params.occluders.tolist(), params.occluder_color.tolist()
    stroke, elastic, elastic_seed = params.stroke.tolist(), params.elastic.tolist(), params.elastic_seed.tolist()
    out = []
    for i in range(len(params)):
        on = dict(zip(VARIATIONS, flags[i]))
        rec: dict[str, Any] = {"glyph": dict(glyph_keys[glyph[i]]), "label": label[i], "fill": fill[i]}
        if on["lighting"]:
            rec["lighting"] = dict(zip(("azimuth", "elevation", "intensity", "ambient", "relief", "softness"), lighting[i])) | {"color": light_color[i]}
        kind = BACKGROUND_KINDS[bg_kind[i]]
        if kind == "photo":
            rec["background"] = {"kind": "photo", "photo": dict(params.photo[i] or {})}
        elif kind == "texture":
            tex = dict(background[i])
            rec["background"] = {"kind": "texture", "pattern": tex.pop("kind"), **tex}
        else:
            rec["background"] = {"kind": "plain", "color": background[i]["color_a"]}
        if on["camera"]:
            rec["camera"] = dict(zip(("yaw", "pitch", "roll", "focal"), camera[i]))
        if on["occlusion"]:
            rec["occlusion"] = [
                {"shape": OCCLUDER_SHAPES[int(shape)], "center": [cx, cy], "size": [w, h], "angle": angle, "color": color}
                for (active, shape, cx, cy, w, h, angle), color in zip(occluders[i], occluder_color[i])
                if active > 0
            ]
        if on["augment"]:
            zoom, dx, dy, shear, contrast, bright, gx, gy, blur, noise = augment[i]
            rec["augment"] = {
                "zoom": zoom, "shift": [dx, dy], "shear": shear, "contrast": contrast, "brightness": bright,
                "illumination": [gx, gy], "blur": blur, "noise": noise, "noise_seed": seeds[i],
            }  # fmt: skip
        if on["stroke"]:
            rec["stroke"] = stroke[i]
        if on["elastic"]:
            rec["elastic"] = {"magnitude": elastic[i], "seed": elastic_seed[i]}
        rec["variations"] = [name for name in VARIATIONS if on[name]]
        out.append(rec)
    return out


def params_from_records(records: Sequence[dict[str, Any]], glyph_index, channels: int, config: VariationConfig | None = None) -> RenderParams:
    """Inverse of :func:`params_to_records`.

    Args:
        glyph_index: callable mapping a record's ``glyph`` dict to the renderer's glyph index.
        config: supplies the base colours used where the fill or background was recorded as off.
    Raises:
        InputError: naming the record index and field of a malformed entry.
    """
    n = len(records)
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise InputError(f"expected a mapping, got {type(r).__name__}", field=f"[{i}]")
    glyph = torch.tensor([glyph_index(r.get("glyph"), f"[{i}].glyph") for i, r in enumerate(records)], dtype=torch.long)
    label = torch.tensor([int(_num(r, "label", f"[{i}]")) for i, r in enumerate(records)], dtype=torch.long)
    p = identity_params(glyph, label, channels, config)
    for i, r in enumerate(records):
        unknown = set(r.get("variations", [])) - set(VARIATIONS)
        if unknown:
            raise InputError(f"unknown variations {sorted(unknown)}; expected some of {', '.join(VARIATIONS)}", field=f"[{i}].variations")
        for k, name in enumerate(VARIATIONS):
            p.flags[i, k] = name in r.get("variations", [])
    p.fill = TextureParams.from_record_list([r.get("fill") or {} for r in records], channels, "fill")
    kinds, bg_recs, photos = [], [], []
    for i, r in enumerate(records):
        bg = r.get("background") or {"kind": "plain", "color": p.background.color_a[i].tolist()}
        kind = bg.get("kind")
        if kind not in BACKGROUND_KINDS:
            raise InputError(f"unknown background kind {kind!r}; expected one of {', '.join(BACKGROUND_KINDS)}", field=f"[{i}].background.kind")
        kinds.append(BACKGROUND_KINDS.index(kind))
        photos.append(dict(bg["photo"]) if kind == "photo" else None)
        if kind == "texture":
            bg_recs.append(_texture_of(bg))
        elif kind == "plain":
            bg_recs.append({"kind": "solid", "color_a": bg.get("color")})
        else:
            bg_recs.append({"kind": "solid", "color_a": [0.0] * channels})
    p.background_kind = torch.tensor(kinds, dtype=torch.long)
    p.background = TextureParams.from_record_list(bg_recs, channels, "background")
    p.photo = tuple(photos)
    k_max = max((len(r.get("occlusion") or []) for r in records), default=0)
    p.occluders = torch.zeros(n, k_max, 7)
    p.occluder_color = torch.zeros(n, k_max, channels)
    for i, r in enumerate(records):
        w = f"[{i}]"
        if "lighting" in r:
            L = r["lighting"]
            p.lighting[i] = torch.tensor([_num(L, k, f"{w}.lighting") for k in ("azimuth", "elevation", "intensity", "ambient", "relief", "softness")])
            p.light_color[i] = _vec(L, "color", channels, f"{w}.lighting")
        if "camera" in r:
            p.camera[i] = torch.tensor([_num(r["camera"], k, f"{w}.camera") for k in ("yaw", "pitch", "roll", "focal")])
        for k, o in enumerate(r.get("occlusion") or []):
            shape = o.get("shape")
            if shape not in OCCLUDER_SHAPES:
                raise InputError(f"unknown occluder shape {shape!r}", field=f"{w}.occlusion[{k}].shape")
            c, s = _vec(o, "center", 2, f"{w}.occlusion[{k}]"), _vec(o, "size", 2, f"{w}.occlusion[{k}]")
            p.occluders[i, k] = torch.tensor([1.0, float(OCCLUDER_SHAPES.index(shape)), float(c[0]), float(c[1]), float(s[0]), float(s[1]), _num(o, "angle", f"{w}.occlusion[{k}]")])
            p.occluder_color[i, k] = _vec(o, "color", channels, f"{w}.occlusion[{k}]")
        if "augment" in r:
            a = r["augment"]
            sh, il = _vec(a, "shift", 2, f"{w}.augment"), _vec(a, "illumination", 2, f"{w}.augment")
            vals = [_num(a, "zoom", f"{w}.augment"), sh[0], sh[1], _num(a, "shear", f"{w}.augment"), _num(a, "contrast", f"{w}.augment"),
                    _num(a, "brightness", f"{w}.augment"), il[0], il[1], _num(a, "blur", f"{w}.augment"), _num(a, "noise", f"{w}.augment")]  # fmt: skip
            p.augment[i] = torch.tensor([float(v) for v in vals])
            p.noise_seed[i] = _seed(a, "noise_seed", f"{w}.augment")
        if "stroke" in r:
            p.stroke[i] = _num(r, "stroke", w)
        if "elastic" in r:
            p.elastic[i] = _num(r["elastic"], "magnitude", f"{w}.elastic")
            p.elastic_seed[i] = _seed(r["elastic"], "seed", f"{w}.elastic")
    return p


def _texture_of(bg: dict[str, Any]) -> dict[str, Any]:
    """A background record of kind ``texture`` holds the texture's own ``kind`` under ``pattern``."""
    return {k: v for k, v in bg.items() if k not in ("kind", "pattern")} | {"kind": bg.get("pattern")}


# ---------------------------------------------------------------------------------------------
# sampling


def _uniform(g: torch.Generator, shape: int | tuple[int, ...], r: Range) -> torch.Tensor:
    return float(r[0]) + (float(r[1]) - float(r[0])) * torch.rand(shape, generator=g)


def _colors(g: torch.Generator, shape: tuple[int, ...], channels: int, luma: Range, saturation: Range) -> torch.Tensor:
    """``Tensor[*shape, C]`` colours with luma uniform in ``luma`` (grey for ``C == 1``); RGB
    colours are a random hue around that luma, ``saturation`` setting how far from grey."""
    level = _uniform(g, shape, luma)
    if channels == 1:
        return level.unsqueeze(-1)
    rgb = torch.rand(*shape, 3, generator=g)
    chroma = rgb - (rgb * torch.tensor(LUMA)).sum(-1, keepdim=True)
    sat = _uniform(g, shape, saturation).unsqueeze(-1)
    return (level.unsqueeze(-1) + sat * chroma).clamp(0.0, 1.0)


def _pick(g: torch.Generator, n: int, choices: Sequence[int]) -> torch.Tensor:
    table = torch.tensor(list(choices), dtype=torch.long)
    return table[torch.randint(len(table), (n,), generator=g)]


def _where(on: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(on.view(-1, *([1] * (new.ndim - 1))), new, old.expand_as(new))


def _where_texture(on: torch.Tensor, new: TextureParams, old: TextureParams) -> TextureParams:
    return TextureParams(*(_where(on, getattr(new, f.name), getattr(old, f.name)) for f in dataclasses.fields(TextureParams)))


def _sample_texture(g: torch.Generator, n: int, channels: int, kinds: Sequence[str], luma: Range, saturation: Range, frequency: Range) -> TextureParams:
    kind = _pick(g, n, [TEXTURE_KINDS.index(k) for k in kinds])
    a = _colors(g, (n,), channels, luma, saturation)
    b = _colors(g, (n,), channels, luma, saturation)
    pattern = torch.stack([_uniform(g, n, (0.0, 360.0)), _uniform(g, n, frequency), torch.rand(n, generator=g), torch.rand(n, generator=g)], 1)
    seed = torch.randint(0, _SEED_HIGH, (n,), generator=g)
    solid = kind == TEXTURE_KINDS.index("solid")
    return TextureParams(
        kind=kind,
        color_a=a,
        color_b=_where(solid, a, b),
        pattern=_where(solid, torch.zeros_like(pattern), pattern),
        seed=torch.where(kind == TEXTURE_KINDS.index("noise"), seed, torch.zeros_like(seed)),
    )


def _s_texture(p: RenderParams, cfg: TextureConfig, on: torch.Tensor, g: torch.Generator, ctx: dict[str, Any]) -> None:
    new = _sample_texture(g, len(p), p.channels, cfg.kinds, cfg.luma, cfg.saturation, cfg.frequency)
    p.fill = _where_texture(on, new, p.fill)


def _s_lighting(p: RenderParams, cfg: LightingConfig, on: torch.Tensor, g: torch.Generator, ctx: dict[str, Any]) -> None:
    n = len(p)
    new = torch.stack([_uniform(g, n, r) for r in (cfg.azimuth, cfg.elevation, cfg.intensity, cfg.ambient, cfg.relief, cfg.softness)], 1)
    p.lighting = _where(on, new, p.lighting)
    if p.channels == 3:
        color = 1.0 + _colors(g, (n,), 3, (0.0, 0.0), cfg.saturation)  # luma 1, tinted
        p.light_color = _where(on, color.clamp_min(0.0), p.light_color)


def _s_background(p: RenderParams, cfg: BackgroundConfig, on: torch.Tensor, g: torch.Generator, ctx: dict[str, Any]) -> None:
    n, C = len(p), p.channels
    names = [k for k in BACKGROUND_KINDS if cfg.kinds.get(k, 0.0) > 0]
    weights = torch.tensor([cfg.kinds[k] for k in names], dtype=torch.float64)
    cum = (weights.cumsum(0) / weights.sum()).to(torch.float32)
    pick = torch.searchsorted(cum, torch.rand(n, generator=g), right=True).clamp_max(len(names) - 1)
    kind = torch.tensor([BACKGROUND_KINDS.index(k) for k in names], dtype=torch.long)[pick]
    plain = _colors(g, (n,), C, cfg.luma, cfg.saturation)
    tex = _sample_texture(g, n, C, cfg.texture_kinds, cfg.luma, cfg.saturation, cfg.frequency)
    is_plain = kind == BACKGROUND_KINDS.index("plain")
    new = _where_texture(is_plain, TextureParams.solid(plain), tex)
    p.background = _where_texture(on, new, p.background)
    p.background_kind = torch.where(on, kind, p.background_kind)
    photo_idx = (on & (kind == BACKGROUND_KINDS.index("photo"))).nonzero().flatten().tolist()
    if photo_idx:
        photos: PhotoSource | None = ctx.get("photos")
        if photos is None:
            raise InputError("photo backgrounds need a photo source", field="background.photo_sources")
        drawn = photos.sample(len(photo_idx), ctx["size"], g)
        out = list(p.photo)
        for i, d in zip(photo_idx, drawn):
            out[i] = d
        p.photo = tuple(out)


def _s_camera(p: RenderParams, cfg: CameraConfig, on: torch.Tensor, g: torch.Generator, ctx: dict[str, Any]) -> None:
    n = len(p)
    new = torch.stack([_uniform(g, n, r) for r in (cfg.yaw, cfg.pitch, cfg.roll, cfg.focal)], 1)
    p.camera = _where(on, new, p.camera)


def _s_occlusion(p: RenderParams, cfg: OcclusionConfig, on: torch.Tensor, g: torch.Generator, ctx: dict[str, Any]) -> None:
    n, K = len(p), int(cfg.count[1])
    count = torch.randint(int(cfg.count[0]), K + 1, (n,), generator=g)
    shape = _pick(g, n * K, [OCCLUDER_SHAPES.index(s) for s in cfg.shapes]).view(n, K)
    center = _uniform(g, (n, K, 2), (-cfg.spread, cfg.spread))
    size = _uniform(g, (n, K, 2), cfg.size)
    line = shape == OCCLUDER_SHAPES.index("line")
    length = 2.0 * size[..., 0]
    width = _uniform(g, (n, K), cfg.line_width)
    size = torch.stack([torch.where(line, length, size[..., 0]), torch.where(line, width, size[..., 1])], -1)
    angle = _uniform(g, (n, K), (0.0, 180.0))
    active = (torch.arange(K).view(1, K) < count.view(n, 1)) & on.view(n, 1)
    color = _colors(g, (n, K), p.channels, cfg.luma, cfg.saturation)
    occ = torch.cat([active.to(torch.float32).unsqueeze(-1), shape.to(torch.float32).unsqueeze(-1), center, size, angle.unsqueeze(-1)], -1)
    p.occluders = occ * active.unsqueeze(-1)
    p.occluder_color = color * active.unsqueeze(-1)


def _s_augment(p: RenderParams, cfg: AugmentConfig, on: torch.Tensor, g: torch.Generator, ctx: dict[str, Any]) -> None:
    n = len(p)
    zoom = 1.0 / _uniform(g, n, cfg.crop)
    shift = _uniform(g, (n, 2), (-1.0, 1.0))
    shear, contrast, bright = (_uniform(g, n, r) for r in (cfg.shear, cfg.contrast, cfg.brightness))
    strength = _uniform(g, n, cfg.illumination).double()
    direction = _uniform(g, n, (0.0, 2.0 * math.pi)).double()
    grad = torch.stack([strength * torch.cos(direction), strength * torch.sin(direction)], 1).to(torch.float32)
    blur, noise = _uniform(g, n, cfg.blur), _uniform(g, n, cfg.noise)
    seed = torch.randint(0, _SEED_HIGH, (n,), generator=g)
    new = torch.cat([zoom[:, None], shift, shear[:, None], contrast[:, None], bright[:, None], grad, blur[:, None], noise[:, None]], 1)
    p.augment = _where(on, new, p.augment)
    p.noise_seed = torch.where(on, seed, p.noise_seed)


def _s_stroke(p: RenderParams, cfg: StrokeConfig, on: torch.Tensor, g: torch.Generator, ctx: dict[str, Any]) -> None:
    p.stroke = _where(on, _uniform(g, len(p), cfg.width), p.stroke)


def _s_elastic(p: RenderParams, cfg: ElasticConfig, on: torch.Tensor, g: torch.Generator, ctx: dict[str, Any]) -> None:
    n = len(p)
    p.elastic = _where(on, _uniform(g, n, cfg.magnitude), p.elastic)
    p.elastic_seed = torch.where(on, torch.randint(0, _SEED_HIGH, (n,), generator=g), p.elastic_seed)


_SAMPLERS = {
    "texture": _s_texture,
    "lighting": _s_lighting,
    "background": _s_background,
    "camera": _s_camera,
    "occlusion": _s_occlusion,
    "augment": _s_augment,
    "stroke": _s_stroke,
    "elastic": _s_elastic,
}


def sample_params(
    config: VariationConfig,
    n: int,
    generator: torch.Generator,
    *,
    glyph_labels: torch.Tensor,
    num_classes: int,
    channels: int,
    size: tuple[int, int],
    photos: "PhotoSource | None" = None,
    labels: torch.Tensor | Sequence[int] | None = None,
) -> RenderParams:
    """Draw the params of ``n`` renders.

    Draws exactly one seed from ``generator``; glyphs and each variation then draw from their own
    generators derived from it (see the module docstring).

    Args:
        glyph_labels: ``Tensor[N]`` label of every glyph of the renderer.
        num_classes: labels are drawn uniformly from ``range(num_classes)`` (class-balanced), then
            a glyph (font) uniformly among those of the label.
        channels: 1 (grey) or 3 (RGB) colours.
        size: output ``(H, W)`` (photo crops are drawn with its aspect ratio).
        photos: photo backgrounds (needed when ``background.kinds`` has ``photo``).
        labels: fix the labels instead of drawing them.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    n = int(n)
    base = int(torch.randint(0, _SEED_HIGH, (1,), generator=generator))
    g = make_generator(base, "glyph")
    counts = torch.bincount(glyph_labels, minlength=num_classes)
    if labels is None:
        present = counts.nonzero().flatten()
        label = present[torch.randint(len(present), (n,), generator=g)]
    else:
        label = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if label.shape[0] != n:
            raise InputError(f"{label.shape[0]} labels for {n} samples", field="labels")
        if n and (label.min() < 0 or label.max() >= num_classes or (counts[label] == 0).any()):
            raise InputError(f"labels must be classes 0..{num_classes - 1} that have glyphs, got {label.tolist()}", field="labels")
    order = torch.argsort(glyph_labels, stable=True)
    start = torch.cumsum(counts, 0) - counts
    pos = (torch.rand(n, generator=g) * counts[label]).long().clamp_max(counts[label] - 1) if n else torch.zeros(0, dtype=torch.long)
    glyph = order[start[label] + pos]
    p = identity_params(glyph, label, channels, config)
    ctx = {"photos": photos, "size": tuple(size)}
    for k, (name, switch) in enumerate(config.switches().items()):
        if not switch.enabled or switch.p <= 0:
            continue
        gv = make_generator(base, name)
        on = torch.rand(n, generator=gv) < switch.p
        p.flags[:, k] = on
        _SAMPLERS[name](p, switch, on, gv, ctx)
    return p


# ---------------------------------------------------------------------------------------------
# photo backgrounds


class PhotoSource:
    """Photo-crop backgrounds: photos and crop params from a
    :class:`~synthloop.data.backgrounds.BackgroundBank`, pixels from a mipmap.

    The bank resolves the sources (bundled photos, folders, files), validates them and draws each
    crop's params (``{"kind": "photo", "photo", "box", "flip"}``). Rendering is done here rather
    than with ``BackgroundBank.render`` because the crop must be resampled together with the 2D
    augmentation's crop and shear (one bilinear lookup per pixel), and because the bank resizes one
    crop at a time with an antialiased interpolation (milliseconds per 28x28 crop), while here the
    crops of a batch that share a photo and a mip level are one ``grid_sample`` call. Each photo is
    decoded once into an area-averaged mip chain (levels halve the size) and the level whose pixels
    are closest to (and not smaller than) an output sample is read, which keeps minification below
    2x and so avoids aliasing without a per-crop filter.

    Args:
        sources: ``BackgroundBank`` sources (``"photos"``, folders or image files).
        scale: crop area range as a fraction of the photo's area.
        cache_size: decoded photos kept in memory (least recently used are dropped).
    """

    def __init__(self, sources: Sequence[str | Path] = ("photos",), scale: Range = (0.05, 0.5), cache_size: int = 64):
        from synthloop.data.backgrounds import BackgroundBank, builtin_photos

        self.bank = BackgroundBank(list(sources), scale=(float(scale[0]), float(scale[1])))
        self._builtin = builtin_photos()
        self._cache: OrderedDict[str, list[torch.Tensor]] = OrderedDict()
        self.cache_size = int(cache_size)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()  # workers decode again rather than receive every photo
        return state

    def sample(self, n: int, size: tuple[int, int], generator: torch.Generator) -> list[dict[str, Any]]:
        """``n`` crop params for an output of ``size`` (H, W)."""
        return [dict(s) for s in self.bank.sample_params(n, size, generator).samples]

    def levels(self, key: str) -> list[torch.Tensor]:
        """The mip chain ``[Tensor[1, 3, h, w], ...]`` of photo ``key`` (level 0 = full size)."""
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        from synthloop.data.images import load_image

        path = self._builtin.get(key, Path(key))
        img = load_image(path, mode="RGB").astype(np.float32) / 255.0
        chain = []
        while True:
            chain.append(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None])
            h, w = img.shape[:2]
            if min(h, w) < 16:
                break
            img = cv2.resize(img, (max(1, round(w / 2)), max(1, round(h / 2))), interpolation=cv2.INTER_AREA)
        self._cache[key] = chain
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return chain

    def render(self, samples: Sequence[dict[str, Any]], qx: torch.Tensor, qy: torch.Tensor) -> torch.Tensor:
        """Crops at canvas coordinates: ``qx``, ``qy`` ``Tensor[n, h, w]`` in [-1, 1] across the
        canvas (the crop box spans [-1, 1]; beyond it the photo continues, mirrored at its
        edges). Returns ``Tensor[n, 3, h, w]``."""
        n, h, w = qx.shape
        out = torch.empty(n, 3, h, w)
        groups: dict[tuple[str, int], list[int]] = {}
        for i, s in enumerate(samples):
            chain = self.levels(s["photo"])
            ph, pw = chain[0].shape[-2:]
            x0, y0, x1, y1 = (int(v) for v in s["box"])
            if not (0 <= x0 < x1 <= pw and 0 <= y0 < y1 <= ph):
                raise InputError(f"crop box {s['box']} lies outside the {pw}x{ph} photo {s['photo']}", field="background.photo.box")
            ratio = max((x1 - x0) / w, (y1 - y0) / h, 1.0)
            level = min(int(math.floor(math.log2(ratio))), len(chain) - 1)
            groups.setdefault((s["photo"], level), []).append(i)
        for (key, level), idx in groups.items():
            src = self.levels(key)[level]
            ph, pw = self.levels(key)[0].shape[-2:]
            box = torch.tensor([samples[i]["box"] for i in idx], dtype=torch.float64)
            flip = torch.tensor([bool(samples[i]["flip"]) for i in idx]).view(-1, 1, 1)
            x = torch.where(flip, -qx[idx], qx[idx])
            # crop-normalised -> photo-normalised coordinates (the same at every mip level)
            sx = ((box[:, 2] - box[:, 0]) / pw).to(torch.float32).view(-1, 1, 1)
            ox = ((box[:, 0] + box[:, 2]) / pw - 1.0).to(torch.float32).view(-1, 1, 1)
            sy = ((box[:, 3] - box[:, 1]) / ph).to(torch.float32).view(-1, 1, 1)
            oy = ((box[:, 1] + box[:, 3]) / ph - 1.0).to(torch.float32).view(-1, 1, 1)
            grid = torch.stack([x * sx + ox, qy[idx] * sy + oy], -1).reshape(1, len(idx) * h, w, 2)
            res = F.grid_sample(src, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
            out[idx] = res.view(3, len(idx), h, w).permute(1, 0, 2, 3)
        return out


# ---------------------------------------------------------------------------------------------
# apply


@dataclass(frozen=True)
class Stage:
    """The fixed inputs of :func:`apply` (everything that is not per-sample params).

    Attributes:
        atlas: ``Tensor[N, 1, G, G]`` glyph tiles (see :meth:`GlyphSet.atlas`).
        centers: ``Tensor[N, 2]`` each tile's centre of mass (x, y, tile pixels); it lands on
            the canvas centre.
        fill: fraction of the tile the glyph's longer side spans.
        size: output ``(H, W)``.
        glyph_size: the glyph's longer side as a fraction of ``min(H, W)``.
        supersample: render at this many samples per output pixel per axis, then average.
    """

    atlas: torch.Tensor
    centers: torch.Tensor
    fill: float
    size: tuple[int, int]
    glyph_size: float
    supersample: int = 1
    _dilated: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def dilated(self, k: int) -> torch.Tensor:
        """The atlas dilated by ``k`` max-pool steps (``k < 0``: eroded); computed once per ``k``."""
        if k == 0:
            return self.atlas
        hit = self._dilated.get(k)
        if hit is None:
            hit = _dilation(self.atlas, k)
            self._dilated[k] = hit
        return hit

    def tiles(self, glyph: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
        """``Tensor[B, 1, G, G]`` tiles of ``glyph`` with stroke ``width`` (tile px per side,
        ``Tensor[B]``); equal to ``stroke_width(atlas[glyph], width)``, but every dilation
        step is computed once per glyph instead of once per sample."""
        base = self.atlas[glyph]
        if not bool((width != 0).any()):
            return base
        return _blend_levels(lambda k, idx: self.dilated(k)[glyph[idx]], width, base)


@dataclass
class Rendered:
    """Output of :func:`apply`: ``image`` ``Tensor[B, C, H, W]``, ``mask`` ``Tensor[B, 1, H, W]``
    (visible glyph coverage, after occlusion and crop) and ``amodal`` (coverage without occluders)."""

    image: torch.Tensor
    mask: torch.Tensor
    amodal: torch.Tensor


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32)


def _rotation(camera: torch.Tensor) -> torch.Tensor:
    """``(B, 3, 3)`` float64 ``Rz(roll) Ry(yaw) Rx(pitch)``; roll is counter-clockwise on screen (y down)."""
    yaw, pitch, roll = (camera[:, k].double() * (math.pi / 180.0) for k in range(3))
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)

    def mat(rows):
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    cx, sx = torch.cos(pitch), torch.sin(pitch)
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cz, sz = torch.cos(roll), torch.sin(roll)
    rx = mat([[one, zero, zero], [zero, cx, -sx], [zero, sx, cx]])
    ry = mat([[cy, zero, sy], [zero, one, zero], [-sy, zero, cy]])
    rz = mat([[cz, sz, zero], [-sz, cz, zero], [zero, zero, one]])
    return rz @ ry @ rx


def _translate(tx: float, ty: float, n: int) -> torch.Tensor:
    t = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    t[:, 0, 2], t[:, 1, 2] = tx, ty
    return t


def _augment_matrix(augment: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, 3, 3)`` float64 map from output pixels to scene coordinates: crop (zoom about the
    centre plus a shift within the free margin), then shear about the centre."""
    H, W = size
    a = augment.double()
    zoom, dx, dy, shear = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
    n = a.shape[0]
    m = torch.zeros(n, 3, 3, dtype=torch.float64)
    inv = 1.0 / zoom
    m[:, 0, 0] = inv
    m[:, 0, 1] = shear * inv
    m[:, 1, 1] = inv
    m[:, 2, 2] = 1.0
    m[:, 0, 2] = dx * (1.0 - inv) * (W / 2.0)
    m[:, 1, 2] = dy * (1.0 - inv) * (H / 2.0)
    return _translate(W / 2.0, H / 2.0, n) @ m @ _translate(-W / 2.0, -H / 2.0, n)


def _glyph_matrix(camera: torch.Tensor, center: torch.Tensor, tile_glyph: float, scale: float, size: tuple[int, int]) -> torch.Tensor:
    """``(B, 3, 3)`` float64 map from scene coordinates to tile pixels (inverse of: move the
    glyph's ``center`` ``(B, 2)`` to the origin, camera homography, scale, move to the canvas
    centre). The glyph plane is rotated by ``R`` in front of a
    pinhole of focal length ``f`` (tile pixels) at distance ``f``, so an unrotated glyph keeps its
    size: ``x' = (r11 x + r12 y) / (r31 x / f + r32 y / f + 1)`` (likewise ``y'``)."""
    H, W = size
    n = camera.shape[0]
    R = _rotation(camera)
    f = camera[:, 3].double() * tile_glyph
    hc = torch.zeros(n, 3, 3, dtype=torch.float64)
    hc[:, :2, :2] = R[:, :2, :2]
    hc[:, 2, 0] = R[:, 2, 0] / f
    hc[:, 2, 1] = R[:, 2, 1] / f
    hc[:, 2, 2] = 1.0
    s = torch.diag(torch.tensor([scale, scale, 1.0], dtype=torch.float64)).expand(n, 3, 3)
    to_origin = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    to_origin[:, :2, 2] = -center.to(torch.float64)
    forward = _translate(W / 2.0, H / 2.0, n) @ s @ hc @ to_origin
    return torch.linalg.inv(forward)


def _project(m: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply ``(B, 3, 3)`` float32 ``m`` to pixel coordinates ``x`` ``(1, 1, W)``, ``y`` ``(1, H, 1)``:
    ``(u, v, w)`` each ``(B, H, W)`` (``u``, ``v`` already divided by ``w``)."""
    c = [m[:, i, j].view(-1, 1, 1) for i in range(3) for j in range(3)]
    u = c[0] * x + c[1] * y + c[2]
    v = c[3] * x + c[4] * y + c[5]
    w = c[6] * x + c[7] * y + c[8]
    return u / w, v / w, w


def _direction(angle_deg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rad = angle_deg.double() * (math.pi / 180.0)
    return _f32(torch.cos(rad)).view(-1, 1, 1), _f32(torch.sin(rad)).view(-1, 1, 1)


def _pattern(kind: str, x: torch.Tensor, y: torch.Tensor, pattern: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Pattern value in [0, 1] at coordinates ``x``, ``y`` ``(B, H, W)`` (the pattern's unit: the
    glyph or the canvas spans [-1, 1]). Built from exact arithmetic only (no per-pixel sin/exp),
    so a sample's pixels do not depend on the batch it is rendered in."""
    c, s = _direction(pattern[:, 0])
    along = x * c - y * s  # angle counter-clockwise on screen, y down
    across = x * s + y * c
    freq = pattern[:, 1].view(-1, 1, 1) / 2.0
    if kind == "gradient":
        return (0.5 + 0.5 * along).clamp(0.0, 1.0)
    if kind == "stripes":
        phase = along * freq + pattern[:, 2].view(-1, 1, 1)
        return (2.0 * (phase - torch.floor(phase)) - 1.0).abs()  # triangle wave
    if kind == "checker":
        u = torch.floor(along * freq + pattern[:, 2].view(-1, 1, 1))
        v = torch.floor(across * freq + pattern[:, 3].view(-1, 1, 1))
        return torch.remainder(u + v, 2.0)
    if kind == "noise":
        grid = torch.stack([x, y], -1)
        return F.grid_sample(noise_lattice(seed), grid, mode="bicubic", padding_mode="border", align_corners=True)[:, 0].clamp(0.0, 1.0)
    raise ValueError(f"unknown texture kind {kind!r}")


def _texture(tex: TextureParams, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Colours ``Tensor[B, C, H, W]`` of ``tex`` at ``x``, ``y`` (``Tensor[B, C, 1, 1]`` when all solid)."""
    a = tex.color_a[:, :, None, None]
    if bool((tex.kind == 0).all()):
        return a
    t = torch.zeros_like(x)
    for k in tex.kind.unique().tolist():
        if k == 0:
            continue
        idx = (tex.kind == k).nonzero().flatten()
        t[idx] = _pattern(TEXTURE_KINDS[k], x[idx], y[idx], tex.pattern[idx], tex.seed[idx])
    b = tex.color_b[:, :, None, None]
    return a + (b - a) * t.unsqueeze(1)


def _dilate_step(x: torch.Tensor, step: int) -> torch.Tensor:
    """One 3x3 max-pool dilation; cross and square elements alternate, so repeated steps grow an
    octagon (close to a disk) rather than a square."""
    if step % 2 == 0:
        return torch.maximum(F.max_pool2d(x, (3, 1), 1, (1, 0)), F.max_pool2d(x, (1, 3), 1, (0, 1)))
    return F.max_pool2d(x, 3, 1, 1)


def _blend_levels(level: Any, width: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Per-sample interpolation between whole dilation steps.

    ``level(k, idx)`` gives the masks of samples ``idx`` dilated by ``k`` steps (``k < 0``:
    eroded), ``Tensor[len(idx), 1, h, w]``; ``width`` ``Tensor[B]`` is the wanted width in pixels.
    A sample with ``|width|`` in ``(k, k + 1]`` gets ``level(k) + (|width| - k) * (level(k + 1) - level(k))``
    (steps negated for thinning); samples with ``width == 0`` keep ``base``.
    """
    out = base.clone()
    r = width.abs()
    active = width != 0
    upper = torch.where(width < 0, -1, 1) * torch.ceil(r).long()  # signed step just above |width|
    for k in upper[active].unique().tolist():
        idx = (active & (upper == k)).nonzero().flatten()
        lo, hi = level(k - (1 if k > 0 else -1), idx), level(k, idx)
        frac = (r[idx] - (abs(k) - 1)).view(-1, 1, 1, 1)
        out[idx] = lo + frac * (hi - lo)
    return out


def _dilation(mask: torch.Tensor, k: int) -> torch.Tensor:
    """``mask`` dilated by ``k`` max-pool steps (``k < 0``: eroded, as the complement dilated)."""
    x = mask if k >= 0 else 1.0 - mask
    for step in range(abs(k)):
        x = _dilate_step(x, step)
    return x if k >= 0 else 1.0 - x


def stroke_width(tiles: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Thicken (``width > 0``) or thin (``width < 0``) masks ``Tensor[B, 1, h, w]`` by ``|width|``
    pixels per side (``Tensor[B]``; fractional widths interpolate between whole max-pool steps,
    see :func:`_blend_levels`). Samples with ``width == 0`` are returned unchanged."""
    if not bool((width != 0).any()):
        return tiles
    return _blend_levels(lambda k, idx: _dilation(tiles[idx], k), width, tiles)


def gaussian_blur_exact(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample Gaussian blur of ``Tensor[B, C, H, W]`` (``sigma`` ``Tensor[B]``, pixels; each
    kernel truncated at ``+-ceil(3 sigma)``, replicate border; ``sigma <= 0`` passes through).

    Same filter as :func:`synthloop.functional.filters.gaussian_blur`, computed as separable
    shifted sums instead of a convolution: torch's ``conv2d`` picks its algorithm by batch size,
    so a convolved sample differs in the last bit depending on the batch it is in, whereas
    shifted sums are elementwise multiplies and adds in a fixed order, so rendering one sample
    alone reproduces its pixels in any batch bit for bit (what replaying params relies on).
    """
    smax = float(sigma.max()) if sigma.numel() else 0.0
    if smax <= 0:
        return x
    H, W = x.shape[-2:]
    R = int(math.ceil(3.0 * smax))
    j = torch.arange(-R, R + 1, dtype=torch.float64)
    s = sigma.double().clamp_min(1e-6).view(-1, 1)
    w = torch.exp(-(j * j) / (2.0 * s * s))
    w = torch.where(j.abs() <= torch.ceil(3.0 * s), w, torch.zeros_like(w))
    w = (w / w.sum(1, keepdim=True)).to(x.dtype)
    pad = F.pad(x, (R, R, R, R), mode="replicate")
    rows = pad[..., :, 0:W] * w[:, 0].view(-1, 1, 1, 1)
    for t in range(1, 2 * R + 1):
        rows = rows + pad[..., :, t : t + W] * w[:, t].view(-1, 1, 1, 1)
    out = rows[..., 0:H, :] * w[:, 0].view(-1, 1, 1, 1)
    for t in range(1, 2 * R + 1):
        out = out + rows[..., t : t + H, :] * w[:, t].view(-1, 1, 1, 1)
    return torch.where((sigma <= 0).view(-1, 1, 1, 1), x, out)


def _shade(alpha: torch.Tensor, lighting: torch.Tensor, color: torch.Tensor, glyph_px: float, supersample: int) -> torch.Tensor:
    """Lambertian shading ``Tensor[B, C, H, W]`` of the height map ``relief * blur(alpha)``
    (``relief`` and the blur's sigma are in glyph sizes; ``glyph_px`` output pixels each).

    Normals come from the height map's central differences (in output pixels); the light comes
    from ``(azimuth, elevation)``. Shading is ``intensity * (ambient + (1 - ambient) * max(0, n.l) / l_z)``
    times the light colour, so a flat surface is lit at ``intensity`` and slopes facing the light
    are brighter.
    """
    az, el, intensity, ambient, relief, softness = (lighting[:, k] for k in range(6))
    ss = float(supersample)
    h = gaussian_blur_exact(alpha, softness * (glyph_px * ss)) * (relief * glyph_px).view(-1, 1, 1, 1)
    pad = F.pad(h, (1, 1, 1, 1), mode="replicate")
    hx = (pad[..., 1:-1, 2:] - pad[..., 1:-1, :-2]) * (ss / 2.0)
    hy = (pad[..., 2:, 1:-1] - pad[..., :-2, 1:-1]) * (ss / 2.0)
    a, e = az.double() * (math.pi / 180.0), el.double() * (math.pi / 180.0)
    lx = _f32(torch.cos(e) * torch.cos(a)).view(-1, 1, 1, 1)
    ly = _f32(-torch.cos(e) * torch.sin(a)).view(-1, 1, 1, 1)  # screen y points down
    lz = _f32(torch.sin(e)).view(-1, 1, 1, 1)
    ndotl = (lz - hx * lx - hy * ly) / torch.sqrt(hx * hx + hy * hy + 1.0)
    amb = ambient.view(-1, 1, 1, 1)
    shade = intensity.view(-1, 1, 1, 1) * (amb + (1.0 - amb) * ndotl.clamp_min(0.0) / lz)
    return shade * color[:, :, None, None]


def _occluder_coverage(occ: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor, glyph_px: float, size: tuple[int, int], supersample: int) -> torch.Tensor:
    """Anti-aliased coverage ``Tensor[B, 1, H, W]`` of one occluder per sample (``occ`` ``Tensor[B, 7]``)."""
    H, W = size
    cx = W / 2.0 + occ[:, 2].view(-1, 1, 1) * glyph_px
    cy = H / 2.0 + occ[:, 3].view(-1, 1, 1) * glyph_px
    hw = (occ[:, 4] * (glyph_px / 2.0)).clamp_min(1e-3).view(-1, 1, 1)
    hh = (occ[:, 5] * (glyph_px / 2.0)).clamp_min(1e-3).view(-1, 1, 1)
    c, s = _direction(occ[:, 6])
    dx, dy = qx - cx, qy - cy
    x = dx * c - dy * s
    y = dx * s + dy * c
    box = torch.maximum(x.abs() - hw, y.abs() - hh)
    ellipse = (torch.sqrt((x / hw) ** 2 + (y / hh) ** 2) - 1.0) * torch.minimum(hw, hh)
    is_ellipse = (occ[:, 1] == OCCLUDER_SHAPES.index("ellipse")).view(-1, 1, 1)
    dist = torch.where(is_ellipse, ellipse, box)  # signed distance in output pixels (approximate for ellipses)
    return (0.5 - dist * float(supersample)).clamp(0.0, 1.0).unsqueeze(1)


def _seeded(seeds: torch.Tensor, shape: tuple[int, ...], draw=torch.rand) -> torch.Tensor:
    """``Tensor[n, *shape]``: sample ``i`` drawn by ``draw`` from its own generator seeded ``seeds[i]``."""
    fields = [draw(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds.tolist()]
    return torch.stack(fields) if fields else torch.empty(0, *shape)


def noise_lattice(seed: torch.Tensor) -> torch.Tensor:
    """``Tensor[B, 1, L, L]`` uniform value-noise lattices of the ``noise`` texture from their seeds."""
    return _seeded(seed, (1, NOISE_LATTICE, NOISE_LATTICE))


def elastic_field(magnitude: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """``Tensor[B, 2, E, E]`` control-point displacements (x, y; glyph sizes), uniform in
    ``[-magnitude, magnitude]``; zero where ``magnitude`` is 0."""
    field = torch.zeros(magnitude.shape[0], 2, ELASTIC_GRID, ELASTIC_GRID)
    on = (magnitude != 0).nonzero().flatten()
    field[on] = (2.0 * _seeded(seed[on], (2, ELASTIC_GRID, ELASTIC_GRID)) - 1.0) * magnitude[on].view(-1, 1, 1, 1)
    return field


def apply(params: RenderParams, stage: Stage, photos: PhotoSource | None = None) -> Rendered:
    """Render ``params`` deterministically (no RNG: pixel noise comes from the recorded seeds).

    Steps: scene coordinates of every output sample (2D crop + shear); the glyph tile's stroke
    width, then one bilinear lookup through the camera homography and the elastic field; fill
    texture on the glyph plane; background (plain / pattern / photo) at scene coordinates;
    composite; Lambertian lighting; occluders; average the supersamples; contrast, brightness,
    illumination gradient, blur and noise; clamp to [0, 1].

    Returns:
        :class:`Rendered` with ``image`` ``Tensor[B, C, H, W]`` and masks ``Tensor[B, 1, H, W]``.
    """
    n, C = len(params), params.channels
    H, W = (int(v) for v in stage.size)
    ss = int(stage.supersample)
    Hs, Ws = H * ss, W * ss
    G = int(stage.atlas.shape[-1])
    glyph_px = float(stage.glyph_size) * min(H, W)
    tile_glyph = float(stage.fill) * G
    if n == 0:
        empty = torch.zeros(0, 1, H, W)
        return Rendered(torch.zeros(0, C, H, W), empty, empty.clone())

    # output sample positions (output pixels) -> scene coordinates -> glyph tile pixels
    xs = ((torch.arange(Ws, dtype=torch.float64) + 0.5) / ss).view(1, 1, Ws).to(torch.float32)
    ys = ((torch.arange(Hs, dtype=torch.float64) + 0.5) / ss).view(1, Hs, 1).to(torch.float32)
    aug = _augment_matrix(params.augment, (H, W))
    to_tile = _glyph_matrix(params.camera, stage.centers[params.glyph], tile_glyph, glyph_px / tile_glyph, (H, W)) @ aug
    qx, qy, _ = _project(_f32(aug), xs, ys)
    u, v, w = _project(_f32(to_tile), xs, ys)
    front = w > 1e-6  # points behind the camera see no glyph
    gx = torch.where(front, 2.0 * u / G - 1.0, torch.full_like(u, 4.0))
    gy = torch.where(front, 2.0 * v / G - 1.0, torch.full_like(v, 4.0))
    if bool(params.enabled("elastic").any()):
        field = elastic_field(params.elastic, params.elastic_seed) * (2.0 * float(stage.fill))  # glyph sizes -> normalised tile units
        disp = F.grid_sample(field, torch.stack([gx, gy], -1), mode="bicubic", padding_mode="border", align_corners=True)
        gx, gy = gx + disp[:, 0], gy + disp[:, 1]

    tiles = stage.tiles(params.glyph, params.stroke * tile_glyph)
    amodal = F.grid_sample(tiles, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="zeros", align_corners=False)
    center = stage.centers[params.glyph].to(torch.float32)
    half_glyph = tile_glyph / 2.0
    fill = _texture(params.fill, ((gx + 1.0) * (G / 2.0) - center[:, 0].view(-1, 1, 1)) / half_glyph, ((gy + 1.0) * (G / 2.0) - center[:, 1].view(-1, 1, 1)) / half_glyph)

    half = min(H, W) / 2.0
    bg = _texture(params.background, (qx - W / 2.0) / half, (qy - H / 2.0) / half).expand(n, C, Hs, Ws).clone()
    photo_idx = (params.background_kind == BACKGROUND_KINDS.index("photo")).nonzero().flatten()
    if len(photo_idx):
        if photos is None:
            raise InputError("these params have photo backgrounds; the renderer needs its photo source", field="background")
        px = qx.expand(n, Hs, Ws)[photo_idx] * (2.0 / W) - 1.0
        py = qy.expand(n, Hs, Ws)[photo_idx] * (2.0 / H) - 1.0
        rgb = photos.render([params.photo[i] for i in photo_idx.tolist()], px, py)
        bg[photo_idx] = (rgb * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True) if C == 1 else rgb
    img = bg + amodal * (fill - bg)

    lit = params.enabled("lighting").nonzero().flatten()
    if len(lit):
        shade = _shade(amodal[lit], params.lighting[lit], params.light_color[lit], glyph_px, ss)
        img[lit] = (img[lit] * shade).clamp(0.0, 1.0)

    mask = amodal
    occluded = params.enabled("occlusion")
    if params.occluders.shape[1] and bool(occluded.any()):
        mask = amodal.clone()
        qx_b, qy_b = qx.expand(n, Hs, Ws), qy.expand(n, Hs, Ws)
        for k in range(params.occluders.shape[1]):
            idx = (occluded & (params.occluders[:, k, 0] > 0)).nonzero().flatten()
            if not len(idx):
                continue
            cov = _occluder_coverage(params.occluders[idx, k], qx_b[idx], qy_b[idx], glyph_px, (H, W), ss)
            color = params.occluder_color[idx, k][:, :, None, None]
            img[idx] = img[idx] + cov * (color - img[idx])
            mask[idx] = mask[idx] * (1.0 - cov)

    if ss > 1:
        occluded_any = mask is not amodal
        img, amodal = F.avg_pool2d(img, ss), F.avg_pool2d(amodal, ss)
        mask = F.avg_pool2d(mask, ss) if occluded_any else amodal

    aug_idx = params.enabled("augment").nonzero().flatten()
    if len(aug_idx):
        img[aug_idx] = _photometric(img[aug_idx], params.augment[aug_idx], params.noise_seed[aug_idx])
    return Rendered(image=img.clamp(0.0, 1.0), mask=amodal.clone() if mask is amodal else mask, amodal=amodal)


def _photometric(x: torch.Tensor, augment: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """Contrast, brightness, illumination gradient, blur and noise of ``x`` ``Tensor[B, C, H, W]``."""
    n, C, H, W = x.shape
    contrast, bright = augment[:, 4].view(-1, 1, 1, 1), augment[:, 5].view(-1, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    xs = ((torch.arange(W, dtype=torch.float32) + 0.5) * (2.0 / W) - 1.0).view(1, 1, 1, W)
    ys = ((torch.arange(H, dtype=torch.float32) + 0.5) * (2.0 / H) - 1.0).view(1, 1, H, 1)
    gain = bright * (1.0 + augment[:, 6].view(-1, 1, 1, 1) * xs + augment[:, 7].view(-1, 1, 1, 1) * ys)
    x = (x * gain).clamp(0.0, 1.0)
    x = gaussian_blur_exact(x, augment[:, 8])
    sigma = augment[:, 9]
    noisy = (sigma > 0).nonzero().flatten()
    if len(noisy):
        x[noisy] = x[noisy] + sigma[noisy].view(-1, 1, 1, 1) * _seeded(seeds[noisy], (C, H, W), torch.randn)
    return x.clamp(0.0, 1.0)
