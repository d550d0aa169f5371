"""The HTML report of an imitation-training run (``synthloop imitate``): the per-cycle table, AP
and synthetic share per cycle, a failure gallery (each failure's validation image with the missed
objects in red, false positives in orange, poorly localised objects in yellow, beside 2-3 of its
re-simulated scenes with their labels in green) and the resolved config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw

from synthloop.report.contact_sheet import _font
from synthloop.report.html import Block, Figure, Heading, Table, Text, write_html
from synthloop.report.plots import _png, figure_png

KIND_COLORS = {"false_negative": (230, 30, 30), "false_positive": (255, 140, 0), "poor_localisation": (240, 220, 0)}
LABEL_COLOR = (40, 200, 60)
METRICS = ("ap50", "ap80", "ap")


def _tile(image: torch.Tensor, boxes: Sequence[tuple[Sequence[float], tuple[int, int, int], str]], scale: int) -> Image.Image:
    """``image`` ``(3, H, W)`` in [0, 1] enlarged ``scale`` times with each ``(xyxy box, colour, label)`` drawn."""
    array = (image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    array = array.repeat(scale, 0).repeat(scale, 1)
    im = Image.fromarray(np.ascontiguousarray(array))
    draw = ImageDraw.Draw(im)
    font = _font(max(9, 5 * scale))
    for (x0, y0, x1, y1), color, label in boxes:
        draw.rectangle([x0 * scale, y0 * scale, max(x1 * scale - 1, x0 * scale), max(y1 * scale - 1, y0 * scale)], outline=color, width=max(1, scale))
        if label:
            draw.text((x0 * scale + 1, max(y0 * scale - 5 * scale - 2, 0)), label, fill=color, font=font)
    return im


def _row(tiles: Sequence[Image.Image], gap: int = 6) -> bytes:
    h = max(t.height for t in tiles)
    row = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), h), (255, 255, 255))
    x = 0
    for t in tiles:
        row.paste(t, (x, 0))
        x += t.width + gap
    return _png(np.asarray(row))


def failure_row_png(
    val_image: torch.Tensor, failures: Sequence[Mapping[str, Any]], focus: int, scenes: Sequence[Any], names: Mapping[int, str], *, scale: int = 2
) -> bytes:
    """The validation image with every failure of it drawn (kind colours; ``focus``, an index into
    ``failures``, labelled) beside ``scenes`` (:class:`~synthloop.loops.terse_detection_scenes.SyntheticScene`)
    with their labelled boxes in green."""
    marks = [(f["box"], KIND_COLORS[f["kind"]], names.get(f["category_id"], str(f["category_id"])) if i == focus else "") for i, f in enumerate(failures)]
    tiles = [_tile(val_image, marks, scale)]
    for s in scenes:
        labels = s.target["labels"].tolist()
        boxes = s.target["boxes"].reshape(-1, 4).tolist()
        tiles.append(_tile(s.image, [(b, LABEL_COLOR, names.get(c, "")) for b, c in zip(boxes, s.category_ids)] if labels else [], scale))
    return _row(tiles)


def cycles_png(history: Sequence[Mapping[str, Any]]) -> bytes:
    """Val AP50 / AP80 / AP per cycle (cycle 0 = the start) and the synthetic share per cycle."""
    fig = MplFigure(figsize=(8.4, 3.0))
    ax, ax2 = fig.subplots(1, 2)
    cycles = [h["cycle"] for h in history]
    for m in METRICS:
        ax.plot(cycles, [100 * h["val"][m] for h in history], marker="o", label=m.upper())
    ax.set(xlabel="imitation cycle", ylabel="val AP (%)", title="Validation AP per cycle")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    ax2.bar(cycles, [100 * h.get("synthetic_share", 0.0) for h in history], color="#6a8fd0")
    ax2.set(xlabel="imitation cycle", ylabel="synthetic share of batches (%)", title="Synthetic share (measured)", ylim=(0, 100))
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return figure_png(fig)


def cycles_table(history: Sequence[Mapping[str, Any]], selected: int | None) -> Table:
    rows = []
    for h in history:
        f = h.get("failures", {})
        rows.append([
            f"{h['cycle']}{' (selected)' if h['cycle'] == selected else ''}", *(100 * h["val"][m] for m in METRICS), f.get("false_negative", "-"),
            f.get("false_positive", "-"), f.get("poor_localisation", "-"), h.get("scenes_added", 0), h.get("synthetic_images", 0),
            h.get("synthetic_share", 0.0), h.get("seconds", 0.0),
        ])  # fmt: skip
    header = [
        "cycle",
        "val AP50 %",
        "val AP80 %",
        "val AP %",
        "missed",
        "false pos.",
        "poorly loc.",
        "scenes added",
        "synthetic total",
        "synthetic share",
        "seconds",
    ]
    return Table(header, rows, caption="Failures are those of the model entering the cycle; AP after the cycle's training.", float_format="{:.3g}")


def _flat(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out += _flat(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", str(v)))
    return out


def build_imitation_report(
    *,
    history: Sequence[Mapping[str, Any]],
    selected: int | None,
    stop_reason: str,
    failures: Sequence[Sequence[Mapping[str, Any]]],
    scenes: Sequence[Sequence[Any]],
    val_images: torch.Tensor,
    names: Mapping[int, str],
    config: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    gallery: int = 8,
    per_failure: int = 3,
    scale: int = 2,
) -> list[Block]:
    """The report's blocks; ``failures[c]`` / ``scenes[c]`` are cycle ``c + 1``'s failure dicts
    (``Failure.to_dict()``) and scenes (each with ``params.meta["failure"]["index"]``)."""
    blocks: list[Block] = [Heading("Cycles"), Text(f"Stopped: {stop_reason}. Selected (best val AP, never the test): cycle {selected}.")]
    blocks += [cycles_table(history, selected), Figure(cycles_png(history), "Validation AP and the measured synthetic share per cycle")]
    if metrics:
        rows = [[k, *(100 * float(v[m]) for m in METRICS)] for k, v in metrics.items() if isinstance(v, Mapping) and "ap" in v]
        if rows:
            blocks.append(Table(["model", "AP50 %", "AP80 %", "AP %"], rows, caption="AP of the starting and the selected model", float_format="{:.3g}"))
    blocks.append(Heading("Failure gallery"))
    blocks.append(Text("Left: the validation image, missed objects in red, false positives in orange, poorly localised objects in yellow "
                       "(the failure shown is labelled). Right: scenes re-simulated from it (labels in green); no validation pixel is in them."))  # fmt: skip
    for c, (found, made) in enumerate(zip(failures, scenes), start=1):
        by_failure: dict[int, list[Any]] = {}
        for s in made:
            if "failure" in s.params.meta:
                by_failure.setdefault(int(s.params.meta["failure"]["index"]), []).append(s)
        if made and not by_failure:  # resimulate: random, the control
            blocks.append(Text(f"Cycle {c}: {len(found)} failures mined, {len(made)} random scenes (resimulate: random, anchored on no failure)."))
            continue
        shown = [i for i in sorted(by_failure) if i < len(found)][:gallery]
        if not shown:
            continue
        blocks.append(Heading(f"Cycle {c}: {len(found)} failures, {len(made)} scenes", level=3))
        for i in shown:
            f = found[i]
            same = [g for g in found if g["image_index"] == f["image_index"]]
            png = failure_row_png(val_images[f["image_index"]], same, same.index(f), by_failure[i][:per_failure], names, scale=scale)
            cap = f"{f['kind'].replace('_', ' ')}: {names.get(f['category_id'], f['category_id'])} in val image {f['image_id']}, size {f['size'][0]:.0f}x{f['size'][1]:.0f} px, "
            cap += f"score {f['score']:.2f}, IoU {f['iou']:.2f}, occlusion {f['occlusion']:.2f}, truncation {f['truncation']:.2f}"
            blocks.append(Figure(png, cap))
    blocks += [Heading("Resolved config"), Table(["key", "value"], [[k, v] for k, v in _flat(config)], caption="config.resolved.yaml")]
    return blocks


def write_imitation_report(path: str | Path, blocks: Sequence[Block], *, subtitle: str | None = None) -> Path:
    return write_html(path, "synthloop imitate: imitation training for detection", blocks, subtitle=subtitle)


__all__ = ["KIND_COLORS", "build_imitation_report", "cycles_png", "cycles_table", "failure_row_png", "write_imitation_report"]
