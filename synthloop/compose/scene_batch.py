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
