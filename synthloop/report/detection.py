"""Report pieces for detection runs (``synthloop terse``): the AP table, images with their boxes
drawn green (detected) or red (missed) as in TERSE's figures, loss curves, and the page itself.

Every drawing function returns PNG bytes for :class:`~synthloop.report.html.Figure`; the page is
written by :func:`write_detection_report` as one self-contained HTML file.

Colours: a box is drawn green when the model's confidence on the object (highest score of a
detection of the object's class with IoU >= 0.5, see
:meth:`~synthloop.models.detection.DetectionTarget.confidence`) is at least the threshold (0.5,
TERSE A.2), red otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw

from synthloop.metrics.hardness import hardness_histogram
from synthloop.report.contact_sheet import _font
from synthloop.report.html import Block, Figure, Heading, Table, Text, write_html
from synthloop.report.plots import _png, figure_png, hardness_histogram_png

AP_COLUMNS: tuple[tuple[str, str], ...] = (("ap50", "AP50"), ("ap60", "AP60"), ("ap70", "AP70"), ("ap80", "AP80"), ("ap", "AP[.5:.95]"))
"""``(result key, column title)`` of the AP table, in the order of TERSE Table 4."""

DETECTED = (40, 200, 60)
MISSED = (230, 40, 40)
GRID_BACKGROUND = (32, 32, 32)


def ap_table(results: Mapping[str, Mapping[str, float] | None], *, caption: str | None = None, reference: str | None = None) -> Table:
    """The AP table: one row per model (``name -> {"ap50", "ap60", "ap70", "ap80", "ap"}`` as
    fractions), values in percent. With ``reference`` (a row name), rows after it get a
    ``dAP80`` column: their AP80 minus the reference's, in points. A ``None`` result is a row of
    dashes (e.g. a baseline that was not evaluated)."""
    header = ["model", *(title for _, title in AP_COLUMNS)]
    ref = results.get(reference) if reference is not None else None
    if ref is not None:
        header.append("dAP80")
    rows: list[list[object]] = []
    for name, r in results.items():
        row: list[object] = [name, *((100.0 * float(r[k]) if r is not None else None) for k, _ in AP_COLUMNS)]
        if ref is not None:
            row.append(None if r is None or name == reference else 100.0 * (float(r["ap80"]) - float(ref["ap80"])))
        rows.append(row)
    return Table(header, rows, caption=caption, float_format="{:.2f}")


def ap_sets_table(sets: Mapping[str, Mapping[str, Mapping[str, float] | None]], *, caption: str | None = None, reference: str = "baseline") -> Table:
    """The AP table of several evaluation sets: one row block per set (``set name -> model name ->
    AP`` as in :func:`ap_table`), each block's ``dAP80`` relative to its own ``reference`` row."""
    header = ["eval set", "model", *(title for _, title in AP_COLUMNS), "dAP80"]
    rows: list[list[object]] = []
    for set_name, results in sets.items():
        block = ap_table(results, reference=reference)
        for row in block.rows:
            cells = list(row) + ([None] if len(row) < len(header) - 1 else [])  # a block without its reference has no dAP80
            rows.append([set_name, *cells])
    return Table(header, rows, caption=caption, float_format="{:.2f}")


def plausibility_scatter_png(confidence: torch.Tensor, reference_confidence: torch.Tensor, *, threshold: float = 0.5, title: str | None = None) -> bytes:
    """Per pasted object, the baseline's confidence (x) against the plausibility reference's (y), with
    the ``threshold`` lines and each quadrant's share: top left = hard and plausible (the baseline
    misses it, the reference still detects it), bottom = implausible (the reference misses it too)."""
    x = confidence.detach().double().flatten().cpu().clamp(0.0, 1.0).numpy()
    y = reference_confidence.detach().double().flatten().cpu().clamp(0.0, 1.0).numpy()
    if x.shape != y.shape or not x.size:
        raise ValueError(f"{x.size} confidences against {y.size} reference confidences (need the same, non-zero count)")
    fig = MplFigure(figsize=(5.2, 4.8))
    ax = fig.add_subplot()
    ax.scatter(x, y, s=9, alpha=min(1.0, max(0.15, 60.0 / x.size)), color="tab:blue", edgecolors="none")
    ax.axvline(threshold, color="0.4", linestyle="--", linewidth=1)
    ax.axhline(threshold, color="0.4", linestyle="--", linewidth=1)
    hard, plausible = x < threshold, y >= threshold
    quadrants = (
        (hard & plausible, 0.02, 0.98, "hard + plausible", "left", "top"),
        (~hard & plausible, 0.98, 0.98, "easy + plausible", "right", "top"),
        (hard & ~plausible, 0.02, 0.02, "hard, implausible", "left", "bottom"),
        (~hard & ~plausible, 0.98, 0.02, "easy, implausible", "right", "bottom"),
    )
    for mask, tx, ty, label, ha, va in quadrants:
        ax.text(
            tx,
            ty,
            f"{label}: {100.0 * mask.mean():.1f} %",
            transform=ax.transAxes,
            ha=ha,
            va=va,
            fontsize=8,
            bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0},
        )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("baseline confidence (hard: < threshold)")
    ax.set_ylabel("reference confidence (plausible: >= threshold)")
    ax.set_title(title or f"Hardness vs plausibility, {x.size} pasted objects")
    ax.grid(True, alpha=0.3)
    return figure_png(fig)


def detection_tile(
    image: torch.Tensor,
    boxes: torch.Tensor,
    detected: Sequence[bool],
    *,
    names: Sequence[str] | None = None,
    scale: int = 2,
) -> Image.Image:
    """One image ``Tensor[3, H, W]`` in [0, 1] enlarged ``scale`` times (nearest neighbour) with
    its ``boxes`` ``Tensor[N, 4]`` (xyxy px) drawn green where ``detected[i]`` else red, and
    ``names[i]`` written on each box when given."""
    array = (image.detach().float().cpu().clamp(0.0, 1.0).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    if scale > 1:
        array = array.repeat(scale, 0).repeat(scale, 1)
    im = Image.fromarray(np.ascontiguousarray(array))
    draw = ImageDraw.Draw(im)
    font = _font(max(9, 5 * scale))
    width = max(1, scale)
    for k, (x0, y0, x1, y1) in enumerate(boxes.detach().float().cpu().reshape(-1, 4).tolist()):
        color = DETECTED if bool(detected[k]) else MISSED
        draw.rectangle([x0 * scale, y0 * scale, max(x1 * scale - 1, x0 * scale), max(y1 * scale - 1, y0 * scale)], outline=color, width=width)
        if names is not None:
            label = str(names[k])
            tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), label, font=font)
            tx, ty = x0 * scale, max(y0 * scale - (ty1 - ty0) - 2, 0)
            draw.rectangle([tx, ty, tx + (tx1 - tx0) + 3, ty + (ty1 - ty0) + 2], fill=color)
            draw.text((tx + 1 - tx0, ty + 1 - ty0), label, fill=(255, 255, 255), font=font)
    return im


def detection_grid_png(
    images: Sequence[torch.Tensor] | torch.Tensor,
    boxes: Sequence[torch.Tensor],
    detected: Sequence[Sequence[bool]],
    *,
    names: Sequence[Sequence[str]] | None = None,
    columns: int | None = None,
    scale: int = 2,
) -> bytes:
    """A grid of :func:`detection_tile` s (TERSE Fig. 4/9 style: green = detected, red = missed).

    Args:
        images: ``N`` images ``Tensor[3, H, W]`` in [0, 1] (or one ``Tensor[N, 3, H, W]``); they may differ in size.
        boxes: per image ``Tensor[K_i, 4]`` xyxy pixels.
        detected: per image ``K_i`` booleans.
        names: optional per image ``K_i`` labels written on the boxes.
        columns: tiles per row (default about ``sqrt(N)``).
    """
    images = list(images)
    if not images:
        raise ValueError("no images to draw")
    if not (len(boxes) == len(detected) == len(images)) or (names is not None and len(names) != len(images)):
        raise ValueError(f"{len(images)} images but {len(boxes)} box sets and {len(detected)} detected flags")
    tiles = [detection_tile(im, b, d, names=None if names is None else names[i], scale=scale) for i, (im, b, d) in enumerate(zip(images, boxes, detected))]
    cols = columns or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    pad = 4
    cw, ch = max(t.width for t in tiles) + pad, max(t.height for t in tiles) + pad
    sheet = Image.new("RGB", (cols * cw + pad, rows * ch + pad), GRID_BACKGROUND)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet.paste(t, (pad + c * cw, pad + r * ch))
    return _png(np.asarray(sheet))


def loss_curves_png(curves: Mapping[str, Sequence[float]], *, title: str = "Training losses", xlabel: str = "epoch", ylabel: str = "loss") -> bytes:
    """Line plot of ``name -> values`` (x = 1, 2, ...); empty curves are skipped. Log y-axis when
    every value is positive and they span more than a factor of 20."""
    fig = MplFigure(figsize=(6.4, 3.8))
    ax = fig.add_subplot()
    values = []
    for name, ys in curves.items():
        ys = [float(v) for v in ys]
        if not ys:
            continue
        values += ys
        ax.plot(range(1, len(ys) + 1), ys, marker="o", markersize=3, label=name)
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 20:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if values:
        ax.legend(loc="upper right", fontsize=8)
    return figure_png(fig)


def confidence_histogram_png(confidences: Mapping[str, torch.Tensor], *, bins: int = 20, title: str = "Hardness of the generated objects") -> bytes:
    """Histogram of per-object hardness ``1 - confidence`` for each named set (TERSE Fig. 8
    analogue; hard positives are the objects right of 0.5). Empty sets are left out; raises
    :class:`~synthloop.errors.InputError` when every set is empty."""
    scores = {name: 1.0 - c.detach().float().flatten().cpu().clamp(0.0, 1.0) for name, c in confidences.items() if c.numel()}
    return hardness_histogram_png(hardness_histogram(scores, bins=bins), title=title)


def history_table(history: Sequence[Mapping[str, Any]], *, caption: str | None = None) -> Table:
    """One row per cycle with every numeric value the loop logged (columns in first-seen order)."""
    keys: list[str] = []
    for h in history:
        keys += [k for k, v in h.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in keys and k != "cycle"]
    rows = [[i + 1, *(h.get(k) for k in keys)] for i, h in enumerate(history)]
    return Table(["cycle", *keys], rows, caption=caption)


LOOP_LOSS_KEYS = ("t_loss", "s_loss", "s_target_loss", "s_adv_loss", "d_loss")
"""Per-cycle values of the scene loop's history drawn as loss curves (those present)."""


def _detected(confidence: torch.Tensor, n: int, threshold: float) -> list[bool]:
    c = confidence.detach().float().reshape(-1)
    if c.numel() != n:
        return [False] * n
    return [bool(v >= threshold) for v in c.tolist()]


def scene_grid_png(scenes: Sequence[Any], names: Mapping[int, str], *, threshold: float = 0.5, columns: int | None = None, scale: int = 2) -> bytes:
    """Composites (:class:`~synthloop.loops.terse_detection.SyntheticScene`) with their labelled
    objects boxed green where the model of their cycle detected them (generation confidence >=
    ``threshold``) and red where it missed them; the category name is written on each box."""
    return detection_grid_png(
        [s.image for s in scenes],
        [s.target["boxes"] for s in scenes],
        [_detected(s.confidence, int(s.target["boxes"].reshape(-1, 4).shape[0]), threshold) for s in scenes],
        names=[[names.get(int(c), str(c)) for c in s.category_ids] for s in scenes],
        columns=columns,
        scale=scale,
    )


def build_detection_report(
    *,
    cfg: Any,
    metrics: Mapping[str, Any],
    scenes: Sequence[Any],
    confidences: Mapping[str, torch.Tensor],
    label_map: Any,
    real_images: torch.Tensor | None = None,
    real_targets: Sequence[Mapping[str, torch.Tensor]] | None = None,
    real_confidence: Sequence[torch.Tensor] | None = None,
    plausibility_confidence: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> list[Block]:
    """The blocks of a ``synthloop terse`` report: AP table (baseline vs fine-tuned; one row block
    per evaluation set when there are several), hardness histogram of the generated objects with
    their plausibility (when measured: the plausible and hard-and-plausible fractions and the
    baseline-vs-reference confidence scatter), per-cycle sample grids (green = detected, red =
    missed), the fine-tuned model on evaluation images, loss curves and the per-cycle history.

    ``cfg`` is the job's :class:`~synthloop.jobs.terse_detection_config.TerseDetectionJobConfig`,
    ``metrics`` what the job writes to ``metrics.json``; ``plausibility_confidence`` is ``(baseline,
    reference)`` confidence per kept object."""
    thr = float(cfg.loop.hard_threshold)
    names = dict(zip(label_map.category_ids, label_map.names))
    baseline = metrics["baseline"]
    blocks: list[Block] = [
        Heading("Average precision"),
        Text(
            f"COCO box AP (pycocotools) on {metrics['eval_set_kind']} set {metrics['eval_set']} ({metrics.get('eval_images', '?')} images). Baseline: the model "
            + (f"after {baseline['epochs']} epochs on the real set" if baseline.get("epochs") else "as it started the loop")
            + (f" (from {baseline['from_checkpoint']})" if baseline.get("from_checkpoint") else "")
            + f"; fine-tuned: after {len(metrics['history'])} TERSE cycles (real:synthetic {cfg.loop.real_ratio} in each batch)."
        ),
        _ap_block(metrics),
    ]
    h = metrics.get("hardness", {})
    blocks += [Heading("Hardness of the generated objects")]
    if any(c.numel() for c in confidences.values()):
        fr_gen, fr_base = h.get("hard_positive_fraction_at_generation"), h.get("hard_positive_fraction_under_baseline")
        blocks += [
            Text(
                f"{metrics['synthetic_images']} kept composites with {h.get('objects', 0)} labelled objects. Hardness = 1 - the "
                f"detector's confidence on the object (highest score of a detection of its class with IoU >= 0.5); hard positives "
                f"have confidence < {thr:g}: "
                + (f"{100 * fr_gen:.1f} % at generation" if fr_gen is not None else "-")
                + (f", {100 * fr_base:.1f} % under the baseline" if fr_base is not None else "")
                + " (TERSE Fig. 8 analogue)."
            ),
            Figure(confidence_histogram_png(confidences), "Hardness of the pasted objects of the kept composites", alt="hardness histogram"),
        ]
        blocks += _plausibility_blocks(metrics.get("plausibility"), plausibility_confidence, thr)
    else:
        blocks.append(Text("No composite was kept, so there is nothing to histogram."))
    blocks.append(Heading("Generated hard examples per cycle"))
    per_cycle: dict[int, list[Any]] = {}
    for s in scenes:
        per_cycle.setdefault(int(s.params.meta.get("cycle", 0)), []).append(s)
    n = int(cfg.report.samples_per_cycle)
    if n and per_cycle:
        for cycle in sorted(per_cycle):
            chosen = per_cycle[cycle][:n]
            blocks.append(
                Figure(
                    scene_grid_png(chosen, names, threshold=thr, columns=min(len(chosen), 4), scale=cfg.report.scale),
                    f"Cycle {cycle}: {len(chosen)} of {len(per_cycle[cycle])} kept composites; green = detected by the model of that "
                    f"cycle (confidence >= {thr:g}), red = missed",
                    alt=f"cycle {cycle} samples",
                )
            )
    else:
        blocks.append(Text("No composites to show."))
    if real_images is not None and real_targets is not None and real_confidence is not None and len(real_images):
        blocks += [
            Heading("Fine-tuned model on evaluation images"),
            Figure(
                detection_grid_png(
                    list(real_images),
                    [t["boxes"] for t in real_targets],
                    [_detected(c, int(t["boxes"].reshape(-1, 4).shape[0]), thr) for c, t in zip(real_confidence, real_targets)],
                    names=[[names.get(label_map.category_ids[int(lb) - 1], str(int(lb))) for lb in t["labels"].tolist()] for t in real_targets],
                    columns=min(len(real_images), 4),
                    scale=cfg.report.scale,
                ),
                f"Ground-truth boxes of the first {len(real_images)} evaluation images (at the job's image size): green = "
                f"detected by the fine-tuned model, red = missed",
                alt="evaluation images",
            ),
        ]
    blocks.append(Heading("Losses"))
    if baseline.get("epoch_losses"):
        blocks.append(
            Figure(loss_curves_png({"baseline (real set)": baseline["epoch_losses"]}, title="Baseline training loss"), "Mean detection loss per baseline epoch")
        )
    loop_curves = {k: [row.get(k, float("nan")) for row in metrics["history"]] for k in LOOP_LOSS_KEYS if any(k in row for row in metrics["history"])}
    if loop_curves:
        blocks.append(
            Figure(
                loss_curves_png(loop_curves, title="Scene loop losses per cycle", xlabel="cycle"),
                "Per cycle: T's last-epoch loss (t_loss), S's mean objective and its parts, D's mean loss",
            )
        )
    if metrics["history"]:
        blocks += [Heading("Per-cycle history"), history_table(metrics["history"])]
    blocks += [Heading("Run"), Text(f"Foregrounds: {metrics.get('foregrounds', '')}. Wall time {metrics.get('seconds', 0):.0f} s.")]
    return blocks


def _ap_block(metrics: Mapping[str, Any]) -> Table:
    """One AP table: baseline vs fine-tuned, with a row block per evaluation set when there are several."""
    sets = metrics.get("eval_sets") or {}
    if len(sets) > 1:
        return ap_sets_table(
            {name: {"baseline": s.get("baseline"), "fine-tuned": s.get("finetuned")} for name, s in sets.items()},
            caption="AP in points, per evaluation set ("
            + "; ".join(f"{name}: {s.get('images', '?')} images of {s.get('file', '?')}" for name, s in sets.items())
            + ")",
        )
    return ap_table({"baseline": metrics["baseline"].get("ap"), "fine-tuned": metrics["final_ap"]}, reference="baseline", caption="AP in points")


def _plausibility_blocks(p: Mapping[str, Any] | None, confidence: tuple[torch.Tensor, torch.Tensor] | None, thr: float) -> list[Block]:
    """Plausibility next to hardness: the fractions, and the scatter of baseline vs reference confidence."""
    if not p:
        return []
    pct = lambda v: "-" if v is None else f"{100.0 * float(v):.1f} %"
    blocks: list[Block] = [
        Text(
            f"Plausibility (reference {p.get('description', p.get('reference'))}): an object is plausible when the reference still detects it "
            f"(confidence >= {thr:g}). Plausible: {pct(p.get('plausible_fraction'))} of {p.get('objects', 0)} objects; hard for the baseline "
            f"and plausible: {pct(p.get('hard_plausible_fraction'))}; hard for the model of its cycle and plausible: "
            f"{pct(p.get('hard_plausible_fraction_at_generation'))}."
            + (
                " The frozen teacher is a copy of the baseline, so no object is both hard for the baseline and plausible to it."
                if "copy of the baseline" in str(p.get("description"))
                else ""
            )
        )
    ]
    if confidence is not None and confidence[0].numel() and confidence[0].numel() == confidence[1].numel():
        blocks.append(
            Figure(
                plausibility_scatter_png(confidence[0], confidence[1], threshold=thr),
                "Per pasted object: baseline confidence vs the plausibility reference's",
                alt="hardness vs plausibility",
            )
        )
    return blocks


def write_detection_report(path: str | Path, title: str, blocks: Sequence[Block], *, subtitle: str | None = None) -> Path:
    """Write the report page (a thin alias of :func:`~synthloop.report.html.write_html`, so
    callers need one import)."""
    return write_html(path, title, blocks, subtitle=subtitle)


__all__ = [
    "AP_COLUMNS",
    "DETECTED",
    "MISSED",
    "Figure",
    "Heading",
    "Table",
    "Text",
    "ap_sets_table",
    "ap_table",
    "build_detection_report",
    "confidence_histogram_png",
    "detection_grid_png",
    "detection_tile",
    "history_table",
    "loss_curves_png",
    "plausibility_scatter_png",
    "scene_grid_png",
    "write_detection_report",
]
