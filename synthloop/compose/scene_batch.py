"""Batched torch compositing of :class:`~synthloop.compose.params.SceneParams` with a ``frame``
(the TERSE scene loop's scenes): differentiable in the placements, deterministic, no RNG.

A background is rendered at the canvas size; each artefact pastes a region of
``artefact_background`` into it through a cut-out-shaped mask (TERSE section 3.1, so seams carry
no label information); then the cut-outs, each letterboxed to ``frame.size``
(:func:`~synthloop.compose.batch.letterbox`), are warped on one after another
(:func:`~synthloop.compose.batch.paste_objects_batch`) with the A.2 mask clean-up for objects with
``cleanup``. Clean-up level: A.2 subtracts ``mu = 1 - 1e-7`` from the warped *binary* mask; on
soft-alpha cut-outs (MNIST digits; any cut-out after the antialiased letterbox resize) that erodes
every edge by up to a pixel and erased most of a digit's 3-4 px strokes, so the loop's default
``frame.cleanup_mu = 0.5`` cuts at the mask's 0.5 iso-line (the boundary a resampled binary mask
really has), then renormalises and blurs as in A.2.

Labels come from the *visible* part of each warped mask (later pastes occlude earlier ones): an
object less visible than the scene's ``min_visibility`` of its full warped area, or whose visible
box is thinner than ``min_box_size``, is left out of the labels (it stays in the image)
(:func:`labelled_objects`).

Scenes are composited one at a time (a batch of 1) when they are generated and replayed alike, so
a replayed image is the very computation that made the kept one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from synthloop.compose.batch import SceneComposite, letterbox, paste_artefacts_batch, paste_objects_batch
from synthloop.compose.params import SceneParams
from synthloop.errors import InputError


def background_tensor(backgrounds: Any, params: dict[str, Any], canvas: tuple[int, int]) -> torch.Tensor:
    """Render a background's params at ``canvas`` as ``(3, H, W)`` float32 in [0, 1]; a source that
    returns another size is resized (bilinear, antialiased) to the canvas."""
    arr = np.asarray(backgrounds.render_one(params, canvas))
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputError(f"background source returned an array of shape {arr.shape}, expected (H, W, 3)", field="backgrounds")
    t = torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1)
    t = t.float().div(255.0) if arr.dtype == np.uint8 else t.float()
    if tuple(t.shape[-2:]) != tuple(canvas):
        t = F.interpolate(t.unsqueeze(0), size=tuple(canvas), mode="bilinear", align_corners=False, antialias=True)[0]
    return t.clamp(0.0, 1.0)


def cutout(foregrounds: Any, index: int, size: int, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut-out ``index`` letterboxed: RGB float in [0, 1] (uint8 is scaled; grey is repeated to RGB)."""
    rgb, alpha = (torch.as_tensor(v) for v in foregrounds.tensor(int(index)))
    rgb = rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
    alpha = alpha.float() / 255.0 if alpha.dtype == torch.uint8 else alpha.float()
    if rgb.ndim == 3 and rgb.shape[0] == 1:
        rgb = rgb.expand(3, -1, -1)
    if alpha.ndim == 2:
        alpha = alpha.unsqueeze(0)
    return letterbox(rgb, alpha, size, fill)


def _frame(scene: SceneParams):
    if scene.frame is None:
        raise InputError("these scene params have no frame: composite them with synthloop.compose.apply.apply_scene", field="frame")
    return scene.frame


def blend_mode(scene: SceneParams) -> str:
    """The scene's one blend mode (the batched compositor blends a scene's objects alike)."""
    modes = {o.blend.mode for o in scene.objects} | {a.blend.mode for a in scene.artefacts}
    if len(modes) != 1:
        raise InputError(f"a batched scene needs one blend mode for all its pastes, got {sorted(modes)}", field="objects.blend")
    return modes.pop()


def cutouts(scenes: Sequence[SceneParams], foregrounds: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The scenes' framed cut-outs: RGB ``(B, K, 3, s, s)`` and alpha ``(B, K, 1, s, s)``."""
    fgs, alphas = [], []
    for p in scenes:
        fr = _frame(p)
        pairs = [cutout(foregrounds, o.instance, fr.size, fr.fill) for o in p.objects]
        fgs.append(torch.stack([r for r, _ in pairs]))
        alphas.append(torch.stack([a for _, a in pairs]))
    return torch.stack(fgs), torch.stack(alphas)


def canvas_batch(scenes: Sequence[SceneParams], foregrounds: Any, backgrounds: Any, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """Backgrounds with their artefacts, ``(B, 3, H, W)``; no gradient needed (nothing learned)."""
    out = []
    for p in scenes:
        fr = _frame(p)
        bg = background_tensor(backgrounds, p.background, p.canvas).to(device).unsqueeze(0)
        for art in p.artefacts:
            other = background_tensor(backgrounds, p.artefact_background, p.canvas).to(device).unsqueeze(0)
            _, shape = cutout(foregrounds, art.instance, fr.size, fr.fill)
            affine = torch.tensor([art.affine], dtype=torch.float32, device=device)
            bg = paste_artefacts_batch(bg, other, shape.unsqueeze(0).to(device), affine, blend_mode=art.blend.mode)
        out.append(bg)
    return torch.cat(out)


def composite_batch(
    scenes: Sequence[SceneParams],
    foregrounds: Any,
    backgrounds: Any,
    *,
    affine: torch.Tensor | None = None,
    photometric: torch.Tensor | None = None,
    canvas_in: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, SceneComposite]:
    """Composite ``scenes`` (all with the same number of objects, canvas and frame).

    ``affine`` ``(B, K, 6)`` / ``photometric`` ``(B, K, 4)`` override the numbers in the params (a
    synthesizer's differentiable outputs); ``canvas_in`` ``(B, 3, H, W)`` is the background with
    artefacts when already rendered (:func:`canvas_batch`). Returns ``(canvas, composite)``;
    scenes are grouped by blend mode.
    """
    first = scenes[0]
    fr = _frame(first)
    if canvas_in is None:
        canvas_in = canvas_batch(scenes, foregrounds, backgrounds, device=device)
    fg, fa = (t.to(device) for t in cutouts(scenes, foregrounds))
    if affine is None:
        affine = torch.tensor([[o.affine for o in p.objects] for p in scenes], dtype=torch.float32, device=device)
    if photometric is None and first.objects and first.objects[0].photometric is not None:
        photometric = torch.tensor([[o.photometric for o in p.objects] for p in scenes], dtype=torch.float32, device=device)
    cleanup = bool(first.objects[0].cleanup) if first.objects else False
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(scenes):
        groups.setdefault(blend_mode(p), []).append(i)
    parts: list[tuple[list[int], SceneComposite]] = []
    for mode, idx in groups.items():
        sel = torch.tensor(idx, device=device)
        comp = paste_objects_batch(
            fg[sel], fa[sel], canvas_in[sel], affine[sel],
            photometric_params=None if photometric is None else photometric[sel],
            blend_mode=mode, cleanup=cleanup, cleanup_sigma=float(fr.cleanup_sigma), cleanup_mu=float(fr.cleanup_mu),
        )  # fmt: skip
        parts.append((idx, comp))
    if len(parts) == 1:
        return canvas_in, parts[0][1]
    order = torch.tensor([i for idx, _ in parts for i in idx], device=device)
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel(), device=device)
    cat = {name: torch.cat([getattr(c, name) for _, c in parts])[inv] for name in ("image", "alphas", "visible", "boxes", "visibility")}
    return canvas_in, SceneComposite(**cat)


def labelled_objects(comp: SceneComposite, i: int, scene: SceneParams, min_box_size: float) -> tuple[torch.Tensor, list[int]]:
    """Of composite ``i``: the boxes ``(N, 4)`` (xyxy px, visible mask, detached) of the objects
    visible enough to be labelled, and their positions ``k`` in ``scene.objects``."""
    boxes = comp.boxes[i].detach().float().cpu()
    vis = comp.visibility[i].detach().cpu()
    min_vis = float(scene.min_visibility or 0.0)
    keep = []
    for k in range(len(scene.objects)):
        w, h = float(boxes[k, 2] - boxes[k, 0]), float(boxes[k, 3] - boxes[k, 1])
        if float(vis[k]) >= min_vis and float(vis[k]) > 0 and w >= min_box_size and h >= min_box_size:
            keep.append(k)
    return boxes[keep].reshape(-1, 4), keep


__all__ = ["background_tensor", "blend_mode", "canvas_batch", "composite_batch", "cutout", "cutouts", "labelled_objects"]


# --------------------------------------------------------------------------------------------
# frameless scenes (the paste job's params), batched on any device


@dataclass
class NativeComposite:
    """Scenes without a ``frame`` composited by :func:`composite_native_batch`.

    Attributes:
        image: ``(B, 3, H, W)`` in [0, 1] (clamped once at the end, as ``apply_scene``).
        visible: ``(B, K, H, W)`` bool: each object's visible pixels (its warped alpha > 0.5 less
            what the objects above it cover); ``K`` is the most objects of a scene.
        present: ``(B, K)`` bool: whether scene ``b`` has an object ``k``.
        full_area, in_canvas_area, visible_area: ``(B, K)`` pixels, as in
            :class:`~synthloop.compose.apply.PastedObject`.
    """

    image: torch.Tensor
    visible: torch.Tensor
    present: torch.Tensor
    full_area: torch.Tensor
    in_canvas_area: torch.Tensor
    visible_area: torch.Tensor


_PER_SAMPLE_OPTIONS = frozenset({"sigma", "angle", "direction"})
"""Blend options the torch filters take per sample (a ``(n,)`` tensor): scenes that differ only in
these share one batched blend call."""


def _native_rgba(instances: Any, index: int, device: torch.device) -> torch.Tensor:
    """Cut-out ``index`` as ``(4, h, w)`` float32 RGBA on ``device``, cached on the source object."""
    from synthloop.compose.apply import rgba_of

    cache = instances.__dict__.setdefault("_torch_rgba_cache", {})
    key = (str(device), int(index))
    hit = cache.get(key)
    if hit is None:
        hit = cache[key] = torch.tensor(rgba_of(instances, index), dtype=torch.float32).permute(2, 0, 1).contiguous().to(device)
    return hit


def _warped_sources(
    instances: Any, items: Sequence[tuple[int, list[float], list[float] | None]], canvas: tuple[int, int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cut-outs of ``items`` ``(instance, affine, photometric)``, colour-mapped as ``apply_scene``
    maps them, warped onto the canvas: ``(n, 4, H, W)`` RGBA, and each one's source area (alpha >
    0.5) in pixels. Cut-outs of one size are warped in one call; every result depends on its own
    item only (not on the others in the batch), so a scene's pixels do not depend on the batch."""
    from synthloop.compose.apply import IDENTITY_PHOTOMETRIC, _instance_mean_gray, color_maps
    from synthloop.functional.geometry import warp

    srcs = [_native_rgba(instances, i, device) for i, _, _ in items]
    means = [_instance_mean_gray(instances, i) if ph is not None and list(ph) != IDENTITY_PHOTOMETRIC else 0.0 for i, _, ph in items]
    maps = color_maps([ph if ph is not None else IDENTITY_PHOTOMETRIC for _, _, ph in items], means)
    params = torch.tensor([a for _, a, _ in items], dtype=torch.float32, device=device).reshape(-1, 6)
    out = torch.empty(len(items), 4, canvas[0], canvas[1], device=device)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for n, s in enumerate(srcs):
        by_shape.setdefault(tuple(s.shape[1:]), []).append(n)
    for members in by_shape.values():
        src = torch.stack([srcs[n] for n in members])
        mapped = [k for k, n in enumerate(members) if maps[n] is not None]
        if mapped:
            M = torch.tensor(np.stack([maps[members[k]][0] for k in mapped]), dtype=torch.float32, device=device)
            c = torch.tensor(np.stack([maps[members[k]][1] for k in mapped]), dtype=torch.float32, device=device)
            sel = torch.tensor(mapped, device=device)
            src[sel, :3] = (torch.einsum("nij,njhw->nihw", M, src[sel, :3]) + c[:, :, None, None]).clamp_(0.0, 1.0)
        idx = torch.tensor(members, device=device)
        out[idx] = warp(src, params[idx], canvas)
    area = torch.stack([(s[3] > 0.5).sum() for s in srcs]).to(torch.float32)
    return out, area


def _group_by_blend(specs: Sequence[Any]) -> dict[tuple, list[int]]:
    """Blends that can share one call: same mode, same options except the per-sample ones. A Gaussian's
    kernel size is part of the key: the batched blur sizes its kernel for the widest sigma, which
    changes the last float bit of the others, so a scene would depend on the batch it is in."""
    from synthloop.functional.filters import gaussian_kernel_size

    groups: dict[tuple, list[int]] = {}
    for n, spec in enumerate(specs):
        key = (spec.mode, tuple(sorted((k, v) for k, v in spec.options.items() if k not in _PER_SAMPLE_OPTIONS)))
        if "sigma" in spec.options:
            key += (gaussian_kernel_size(float(spec.options["sigma"])),)
        groups.setdefault(key, []).append(n)
    return groups


def _blend_rows(canvas: torch.Tensor, rows: list[int], fg: torch.Tensor, alpha: torch.Tensor, specs: Sequence[Any]) -> None:
    """Blend ``fg``/``alpha`` ``(n, ...)`` into ``canvas[rows]`` in place, one call per blend group."""
    from synthloop.functional.blend import blend, blend_np

    for (mode, fixed, *_), members in _group_by_blend(specs).items():
        sel = torch.tensor(members, device=canvas.device)
        target = torch.tensor([rows[m] for m in members], device=canvas.device)
        if mode == "poisson":  # OpenCV on the CPU either way; the NumPy op also handles masks < 3 px wide
            for m in members:
                hwc = [t.permute(1, 2, 0).contiguous().cpu().numpy() for t in (fg[m], alpha[m], canvas[rows[m]])]
                out = blend_np(hwc[0], hwc[1][..., 0], hwc[2], mode, specs[m].options)
                canvas[rows[m]] = torch.from_numpy(np.ascontiguousarray(out)).to(canvas.device).permute(2, 0, 1)
            continue
        opts = dict(fixed)
        for name in _PER_SAMPLE_OPTIONS & {k for m in members for k in specs[m].options}:
            opts[name] = torch.tensor([float(specs[m].options[name]) for m in members], dtype=canvas.dtype, device=canvas.device)
        canvas[target] = blend(fg[sel], alpha[sel], canvas[target], mode, **opts)


def _support_inside(instances: Any, items: Sequence[tuple[int, list[float]]], canvas: tuple[int, int]) -> list[bool]:
    """Whether each warped cut-out's alpha support lies inside the canvas (then all of its mask is seen)."""
    from synthloop.compose.apply import instance_shape, instance_support, window_of
    from synthloop.functional.numpy_ops import affine_matrices

    shapes = np.asarray([instance_shape(instances, i) for i, _ in items], dtype=np.float64).reshape(-1, 2)
    mats = affine_matrices(np.asarray([a for _, a in items], dtype=np.float64).reshape(-1, 6), shapes, canvas)
    H, W = canvas
    out = []
    for (i, _), A in zip(items, mats):
        x0, y0, x1, y1 = window_of(A, instance_shape(instances, i), 0, instance_support(instances, i))
        out.append(x0 >= 0 and y0 >= 0 and x1 <= W and y1 <= H)
    return out


@torch.no_grad()
def composite_native_batch(scenes: Sequence[SceneParams], instances: Any, backgrounds: Any, *, device: torch.device | str = "cpu") -> NativeComposite:
    """Composite frameless scenes (what :func:`~synthloop.compose.apply.apply_scene` composites:
    the paste job's params, cut-outs at their own size) as one batch on ``device`` with the torch
    ops of :mod:`synthloop.functional` (all scenes with the same canvas).

    The same scene as ``apply_scene``, not the same pixels: the warp is ``grid_sample`` in float32
    where OpenCV's ``warpAffine`` rounds its bilinear weights to 1/32, the blurs are kornia's, and
    a whole canvas is filtered where ``apply_scene`` filters a window around each object (the
    results differ by a few grey levels along edges; see tests/jobs/test_paste_torch.py). Object
    ``k`` of every scene is warped in one call, its blends grouped by mode (options such as
    ``sigma`` or ``angle`` are per sample). ``full_area`` is exact for an object whose support
    lies inside the canvas; for one cut by the border it is its source area times the placement's
    ``sx * sy`` (OpenCV's count outside the canvas is not computed).
    """
    device = torch.device(device)
    canvas = (int(scenes[0].canvas[0]), int(scenes[0].canvas[1]))
    if any(tuple(p.canvas) != canvas for p in scenes):
        raise InputError("a batch of scenes needs one canvas size", field="canvas")
    image = torch.stack([_background(backgrounds, p.background, canvas, device) for p in scenes])
    arts = [(b, a) for b, p in enumerate(scenes) for a in p.artefacts]
    if arts:
        others = {b: _background(backgrounds, scenes[b].artefact_background, canvas, device) for b in {b for b, _ in arts}}
        for j in range(max(len(p.artefacts) for p in scenes)):  # artefact j of every scene, in order
            here = [(b, p.artefacts[j]) for b, p in enumerate(scenes) if len(p.artefacts) > j]
            warped, _ = _warped_sources(instances, [(a.instance, a.affine, None) for _, a in here], canvas, device)
            alpha = warped[:, 3:]
            rows = [b for b, _ in here]
            _blend_rows(image, rows, torch.stack([others[b] for b in rows]), alpha, [a.blend for _, a in here])
    K = max((len(p.objects) for p in scenes), default=0)
    B, (H, W) = len(scenes), canvas
    hard = torch.zeros(B, K, H, W, dtype=torch.bool, device=device)
    full = torch.zeros(B, K, device=device)
    for j in range(K):
        here = [(b, p.objects[j]) for b, p in enumerate(scenes) if len(p.objects) > j]
        rows = [b for b, _ in here]
        warped, area = _warped_sources(instances, [(o.instance, o.affine, o.photometric) for _, o in here], canvas, device)
        w_alpha = warped[:, 3:]
        idx = torch.tensor(rows, device=device)
        hard[idx, j] = w_alpha[:, 0] > 0.5
        cleanup = torch.tensor([bool(o.cleanup) for _, o in here], device=device)[:, None, None, None]
        alpha = torch.where(cleanup, (w_alpha >= 1.0 - 1e-3).to(w_alpha.dtype), w_alpha)  # TERSE A.2 as apply_scene
        _blend_rows(image, rows, warped[:, :3], alpha, [o.blend for _, o in here])
        inside = torch.tensor(_support_inside(instances, [(o.instance, o.affine) for _, o in here], canvas), device=device)
        seen = hard[idx, j].flatten(1).sum(1).to(full.dtype)
        det = torch.tensor([abs(o.affine[4] * o.affine[5]) for _, o in here], device=device)
        full[idx, j] = torch.where(inside, seen, torch.maximum(seen, area * det))
    visible = torch.zeros_like(hard)
    covered = torch.zeros(B, H, W, dtype=torch.bool, device=device)
    for j in reversed(range(K)):
        visible[:, j] = hard[:, j] & ~covered
        covered |= hard[:, j]
    present = torch.tensor([[len(p.objects) > j for j in range(K)] for p in scenes], dtype=torch.bool, device=device).reshape(B, K)
    return NativeComposite(
        image=image.clamp_(0.0, 1.0),
        visible=visible,
        present=present,
        full_area=full,
        in_canvas_area=hard.flatten(2).sum(2).to(full.dtype),
        visible_area=visible.flatten(2).sum(2).to(full.dtype),
    )


def _background(backgrounds: Any, params: dict[str, Any], canvas: tuple[int, int], device: torch.device) -> torch.Tensor:
    """A background's params rendered at ``canvas`` as ``(3, H, W)`` float32 on ``device`` (uint8
    sources go over as bytes and are scaled there, as ``apply_scene`` scales them)."""
    arr = np.asarray(backgrounds.render_one(params, canvas))
    if arr.shape != (canvas[0], canvas[1], 3):
        raise InputError(f"background source rendered an image of shape {arr.shape}, expected {(canvas[0], canvas[1], 3)}", field="backgrounds")
    t = torch.from_numpy(arr if arr.flags.writeable and arr.flags.c_contiguous else arr.copy()).to(device).permute(2, 0, 1)
    return t.float() * np.float32(1.0 / 255.0) if t.dtype == torch.uint8 else t.float().clamp(0.0, 1.0)


__all__ += ["NativeComposite", "composite_native_batch"]
