"""PNG figures for reports: accuracy curves (TERSE Fig. 7), hardness histograms (Fig. 8 analogue)
and sample grids (Fig. 4 analogue).

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend
switch), so this works headless and from worker threads. Every function returns PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torchvision.utils import make_grid

from synthloop.metrics.hardness import HardnessHistogram

Curve = Sequence[tuple[float, float]]


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """Render a matplotlib ``Figure`` to PNG bytes with the Agg canvas."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def sample_grid_png(
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    per_class: int = 10,
    num_classes: int = 10,
    nrow: int = 10,
    scale: int = 2,
) -> bytes:
    """A grid of ``images`` ``Tensor[N, C, H, W]`` in [0, 1] as PNG bytes.

    With ``labels`` ``Tensor[N]``: one row per class, its first ``per_class`` samples (blank
    cells where a class has fewer). Without: the first ``nrow * nrow`` images, ``nrow`` per row.
    Cells are separated by grey lines; the image is enlarged ``scale`` times (nearest neighbour).
    """
    images = images.detach().float().cpu().clamp(0.0, 1.0)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got {tuple(images.shape)}")
    if labels is not None:
        labels = labels.detach().cpu().long()
        cells = torch.zeros(num_classes * per_class, *images.shape[1:])
        for c in range(num_classes):
            rows = (labels == c).nonzero().flatten()[:per_class]
            cells[c * per_class : c * per_class + rows.numel()] = images[rows]
        grid = make_grid(cells, nrow=per_class, padding=2, pad_value=0.5)
    else:
        grid = make_grid(images[: nrow * nrow], nrow=nrow, padding=2, pad_value=0.5)
    if images.shape[1] == 1:
        grid = grid[:1]  # make_grid repeats a single channel to RGB; keep grey PNGs grey
    array = (grid.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    if array.shape[2] == 1:
        array = array[..., 0]
    if scale > 1:
        array = array.repeat(scale, 0).repeat(scale, 1)
    return _png(array)


def accuracy_curves_png(
    curves: Mapping[str, Curve],
    *,
    reference_level: float | None = None,
    reference_label: str = "MNIST only",
    markers: Mapping[str, tuple[float, float]] | None = None,
    title: str = "Accuracy on the AffNIST-style test set",
    xlabel: str = "added training samples",
    ylabel: str = "test accuracy",
) -> bytes:
    """Line plot of ``name -> [(x, y), ...]`` curves (TERSE Fig. 7 style), an optional horizontal
    reference line and optional labelled points ``markers`` (``label -> (x, y)``)."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    colours = {"random": "tab:red", "terse": "tab:green"}
    for name, points in curves.items():
        if not points:
            continue
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", markersize=3, label=name, color=colours.get(name.lower()))
    if reference_level is not None:
        ax.axhline(reference_level, color="grey", linestyle="--", linewidth=1, label=reference_label)
    for label, (x, y) in (markers or {}).items():
        ax.plot([x], [y], marker="*", markersize=11, color="black", linestyle="none")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, -12), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0.0, 1.0)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return figure_png(fig)


def hardness_histogram_png(hist: HardnessHistogram, *, title: str = "Hardness 1 - p(true class)") -> bytes:
    """Side-by-side bars of the fraction of each set's samples per hardness bin (TERSE Fig. 8 style)."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    edges = np.asarray(hist.edges)
    width = (edges[1] - edges[0]) / max(len(hist.fractions), 1)
    colours = {"random": "tab:red", "terse": "tab:green"}
    for k, (name, fractions) in enumerate(hist.fractions.items()):
        label = f"{name} (mean {hist.means[name]:.2f}, n={hist.counts[name]})"
        ax.bar(edges[:-1] + k * width, fractions, width=width, align="edge", label=label, color=colours.get(name.lower()), alpha=0.85)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("hardness under the target")
    ax.set_ylabel("fraction of samples")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper center")
    return figure_png(fig)


def write_cache_grid(cycle: int, cache: Any, folder: Path) -> dict[str, str]:
    """``folder/grid.png``: a TERSE hard-example cache's samples, ten per class (a loop's ``on_cycle`` hook)."""
    from synthloop.utils.atomic import atomic_write_bytes

    path = Path(folder) / "grid.png"
    atomic_write_bytes(path, sample_grid_png(cache.images, cache.labels, per_class=10, num_classes=cache.num_classes))
    return {"grid": str(path)}
