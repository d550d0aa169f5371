"""The pure batched :func:`apply`: :class:`~synthloop.render.params.RenderParams` to images and
masks, with no RNG (high-dimensional random fields are replayed from their recorded seeds).

Coordinates. Output pixel ``(x, y)`` covers ``[x, x+1) x [y, y+1)`` in *output pixels*. The 2D
augmentation's crop and shear map output pixels to *scene* coordinates (same units); the glyph,
the background and the occluders live in scene coordinates. The glyph tile (``G x G``, see
:meth:`~synthloop.render.glyphs.GlyphSet.atlas`) maps to the scene through the camera homography
about the glyph's centre of mass, then a scale that makes the glyph's longer side
``glyph_size * min(H, W)`` output pixels, with the centre of mass on the canvas centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from synthloop.errors import InputError
from synthloop.functional.color import LUMA
from synthloop.functional.exact_blur import gaussian_blur_exact
from synthloop.render.config import BACKGROUND_KINDS, OCCLUDER_SHAPES, TEXTURE_KINDS
from synthloop.render.params import RenderParams, Stage, TextureParams
from synthloop.render.photos import PhotoSource

NOISE_LATTICE = 5
"""Side of the value-noise lattice of the ``noise`` texture."""
ELASTIC_GRID = 5
"""Control points per side of the elastic displacement grid (spanning the glyph tile)."""


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
