"""The params of a batch of renders and the fixed inputs of ``apply``.

:class:`RenderParams` holds everything random about a batch (with :class:`TextureParams` for
fills and backgrounds), :func:`identity_params` the params of plain renders, and
:func:`params_to_records` / :func:`params_from_records` their bit-exact JSON round trip (the
``params.jsonl`` records). :class:`Stage` holds what is not per sample: the glyph atlas, output
size and supersampling.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from synthloop.errors import InputError
from synthloop.functional.color import LUMA
from synthloop.functional.morphology import blend_levels, dilate
from synthloop.render.config import BACKGROUND_KINDS, OCCLUDER_SHAPES, TEXTURE_KINDS, VARIATIONS, VariationConfig


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
        seed: ``Tensor[B]`` long seed of the ``noise`` kind's value lattice (see
            :func:`~synthloop.render.apply.noise_lattice`).
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
    """Everything random about a batch of ``B`` renders; :func:`~synthloop.render.apply.apply` is a pure function of it.

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
        elastic_seed: ``Tensor[B]`` long seed of the control-point displacements (see
            :func:`~synthloop.render.apply.elastic_field`).
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


@dataclass(frozen=True)
class Stage:
    """The fixed inputs of :func:`~synthloop.render.apply.apply` (everything that is not per-sample params).

    Attributes:
        atlas: ``Tensor[N, 1, G, G]`` glyph tiles (see :meth:`~synthloop.render.glyphs.GlyphSet.atlas`).
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
            hit = dilate(self.atlas, k)
            self._dilated[k] = hit
        return hit

    def tiles(self, glyph: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
        """``Tensor[B, 1, G, G]`` tiles of ``glyph`` with stroke ``width`` (tile px per side,
        ``Tensor[B]``); equal to :func:`~synthloop.functional.morphology.stroke_width` of
        ``atlas[glyph]``, but every dilation step is computed once per glyph, not per sample."""
        base = self.atlas[glyph]
        if not bool((width != 0).any()):
            return base
        return blend_levels(lambda k, idx: self.dilated(k)[glyph[idx]], width, base)


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
