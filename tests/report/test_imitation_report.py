"""The imitation report: failure boxes drawn in their kind's colour beside the re-simulated scenes,
the per-cycle table and plot, the resolved config; the page is self-contained HTML."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from synthloop.compose.params import SceneParams
from synthloop.loops.terse_detection_scenes import SyntheticScene
from synthloop.report.html import Figure, Table, render_html
from synthloop.report.imitation import KIND_COLORS, LABEL_COLOR, build_imitation_report, failure_row_png


def _failure(kind: str, box, index: int = 0) -> dict:
    return {"index": index, "image_index": 0, "image_id": 5, "kind": kind, "category_id": 7, "box": box, "score": 0.0, "iou": 0.0, "size": [10.0, 12.0],
            "occlusion": 0.0, "truncation": 0.0}  # fmt: skip


def _scene(failure_index: int) -> SyntheticScene:
    params = SceneParams(canvas=(32, 32), background={}, meta={"failure": {"index": failure_index}})
    target = {"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0]]), "labels": torch.tensor([2])}
    return SyntheticScene(torch.full((3, 32, 32), 0.5), target, [7], torch.tensor([float("nan")]), params)


def _colors(png: bytes) -> set[tuple[int, int, int]]:
    arr = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    return {tuple(int(v) for v in c) for c in np.unique(arr, axis=0)}


@pytest.mark.parametrize("kind", sorted(KIND_COLORS))
def test_failure_boxes_in_their_kind_colour_beside_the_scenes(kind):
    image = torch.zeros(3, 32, 32)
    png = failure_row_png(image, [_failure(kind, [4.0, 4.0, 20.0, 24.0])], 0, [_scene(0), _scene(0)], {7: "seven"}, scale=2)
    im = Image.open(io.BytesIO(png))
    assert im.width == 3 * 64 + 2 * 6 and im.height == 64  # the val image and two scenes side by side
    colors = _colors(png)
    assert KIND_COLORS[kind] in colors and LABEL_COLOR in colors
    assert all(KIND_COLORS[k] not in colors for k in KIND_COLORS if k != kind)


def test_report_blocks_and_page():
    history = [
        {"cycle": 0, "val": {"ap50": 0.5, "ap80": 0.2, "ap": 0.25}, "failures": {}, "scenes_added": 0, "synthetic_images": 0, "synthetic_share": 0.0},
        {"cycle": 1, "val": {"ap50": 0.6, "ap80": 0.3, "ap": 0.3}, "failures": {"false_negative": 1, "false_positive": 1}, "scenes_added": 2,
         "synthetic_images": 2, "synthetic_share": 0.5, "seconds": 3.0},
    ]  # fmt: skip
    failures = [[_failure("false_negative", [1.0, 1.0, 9.0, 9.0], 0), _failure("false_positive", [15.0, 15.0, 30.0, 30.0], 1)]]
    blocks = build_imitation_report(
        history=history, selected=1, stop_reason="max_cycles (1) reached", failures=failures, scenes=[[_scene(0), _scene(1)]],
        val_images=torch.zeros(1, 3, 32, 32), names={7: "seven"}, config={"seed": 0, "loop": {"max_synthetic_share": 0.5}},
    )  # fmt: skip
    figures = [b for b in blocks if isinstance(b, Figure)]
    assert len(figures) == 3  # the cycle plot and one row per failure
    assert "false negative" in figures[1].caption and "false positive" in figures[2].caption
    tables = [b for b in blocks if isinstance(b, Table)]
    assert tables[0].rows[1][0] == "1 (selected)" and tables[0].rows[1][-2] == 0.5
    assert ["loop.max_synthetic_share", "0.5"] in [list(r) for r in tables[-1].rows]
    page = render_html("t", blocks)
    assert page.count("data:image/png;base64") == 3 and "http" not in page.replace("http-equiv", "")


def test_random_control_scenes_are_counted_not_matched_to_failures():
    history = [
        {"cycle": 0, "val": {"ap50": 0.5, "ap80": 0.2, "ap": 0.25}, "failures": {}, "scenes_added": 0, "synthetic_images": 0, "synthetic_share": 0.0},
        {"cycle": 1, "val": {"ap50": 0.6, "ap80": 0.3, "ap": 0.3}, "failures": {"false_negative": 1}, "scenes_added": 2, "synthetic_images": 2,
         "synthetic_share": 0.5, "seconds": 3.0},
    ]  # fmt: skip
    scenes = [_scene(0), _scene(0)]
    for s in scenes:
        s.params.meta = {"random": {"objects": 1}}
    blocks = build_imitation_report(
        history=history, selected=1, stop_reason="max_cycles (1) reached", failures=[[_failure("false_negative", [1.0, 1.0, 9.0, 9.0])]], scenes=[scenes],
        val_images=torch.zeros(1, 3, 32, 32), names={7: "seven"}, config={"seed": 0, "loop": {"resimulate": "random"}},
    )  # fmt: skip
    assert len([b for b in blocks if isinstance(b, Figure)]) == 1  # the cycle plot only: no failure row pretends to be re-simulated
    assert any("1 failures mined, 2 random scenes" in getattr(b, "text", "") for b in blocks)
