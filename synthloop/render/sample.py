"""Sampling :class:`~synthloop.render.params.RenderParams` from a :class:`~synthloop.render.config.VariationConfig`.

Sampling takes one explicit ``torch.Generator``: a single 63-bit seed is drawn from it and every
variation draws from its own generator derived from that seed, so switching one variation on or
off (or changing its ranges) leaves the glyphs and every other variation's draws unchanged --
the controlled ablation of MrGAN's Table 1.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch

from synthloop.errors import InputError
from synthloop.functional.color import LUMA
from synthloop.render.config import (
    BACKGROUND_KINDS,
    OCCLUDER_SHAPES,
    TEXTURE_KINDS,
    AugmentConfig,
    BackgroundConfig,
    CameraConfig,
    ElasticConfig,
    LightingConfig,
    OcclusionConfig,
    Range,
    StrokeConfig,
    TextureConfig,
    VariationConfig,
)
from synthloop.render.params import RenderParams, TextureParams, identity_params
from synthloop.render.photos import PhotoSource
from synthloop.utils.seeding import make_generator

# High-dimensional random fields (pixel noise, noise-texture lattices, elastic control grids) are
# recorded as a seed: each is drawn from its own generator seeded with it, so the params stay
# small (a params.jsonl line is a few hundred bytes) and still replay exactly.
_SEED_HIGH = 2**53  # seeds stay exact through JSON readers that parse numbers as doubles


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
