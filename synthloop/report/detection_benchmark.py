"""Figures and the text table of the detection benchmark (:mod:`synthloop.experiments.detection`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HARD_THRESHOLD = 0.5
AP_KEYS = ("ap50", "ap60", "ap70", "ap80", "ap")


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_line_plot(plt: Any, fig: Any, ax: Any, xlabel: str, ylabel: str, title: str, path: Path) -> None:
    """Label ``ax``, add its legend, write ``fig`` to ``path`` and close it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_samples(rows: Sequence[tuple[str, Mapping[str, Any]]], path: Path) -> bool:
    """Grid of kept composites per method, boxes green where the baseline finds the object
    (confidence >= 0.5) and red where it misses it (as in the paper's figures)."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    if not rows:
        return False
    cols = max(len(r[1]["images"]) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.75 * len(rows)), squeeze=False)
    for i, (nm, doc) in enumerate(rows):
        for j in range(cols):
            ax = axes[i][j]
            ax.axis("off")
            if j >= len(doc["images"]):
                continue
            ax.imshow(doc["images"][j].permute(1, 2, 0).numpy())
            for box, c in zip(doc["boxes"][j].tolist(), doc["confidence"][j].tolist()):
                colour = "lime" if c >= HARD_THRESHOLD else "red"
                ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, ec=colour, lw=1))
            if j == 0:
                ax.set_title(nm, fontsize=7, loc="left")
    fig.suptitle("Kept synthetic images; green: found by the baseline (conf >= 0.5), red: missed", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_hardness(methods: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, m in methods.items():
        h = m.get("histogram")
        if not h:
            continue
        edges = h["bin_edges"]
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        ax.plot(centres, h["fractions"], marker="o", ms=3, label=f"{name} (hard {m['hard_positive_fraction']:.2f})")
    ax.axvline(HARD_THRESHOLD, color="grey", ls="--", lw=1)
    xlabel = "baseline detector confidence on the pasted object"
    title = "Hardness of the synthetic data under the baseline (TERSE Fig. 8 analogue)"
    _save_line_plot(plt, fig, ax, xlabel, "fraction of pasted objects", title, path)


def plot_ap(methods: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    plt = _pyplot()
    ious = [0.5, 0.6, 0.7, 0.8]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, m in methods.items():
        ax.plot(ious, [100 * m[k] for k in AP_KEYS[:4]], marker="o", label=f"{name} (AP {100 * m['ap']:.1f})")
    _save_line_plot(plt, fig, ax, "IoU threshold", "AP (%) on test", "Digits in scenes: AP by IoU (TERSE Table 4 analogue)", path)


def table(methods: Mapping[str, Mapping[str, Any]], baseline_ap: Mapping[str, float]) -> str:
    head = f"{'method':<24} {'AP50':>6} {'AP60':>6} {'AP70':>6} {'AP80':>6} {'AP':>6} {'dAP80':>6} {'hard+':>6}"
    rows = [head, "-" * len(head)]
    for name, m in methods.items():
        hard = m.get("hard_positive_fraction")
        rows.append(
            f"{name:<24} " + " ".join(f"{100 * m[k]:6.2f}" for k in AP_KEYS) + f" {100 * (m['ap80'] - baseline_ap['ap80']):+6.2f} " + (f"{hard:6.3f}" if hard is not None else f"{'-':>6}")
        )
    return "\n".join(rows)
