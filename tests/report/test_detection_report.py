"""Detection report pieces: AP table (one or several eval sets), green/red box grids, loss curves,
hardness histogram, the hardness-vs-plausibility scatter."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from synthloop.errors import InputError
from synthloop.report.detection import (
    DETECTED,
    MISSED,
    ap_sets_table,
    ap_table,
    build_detection_report,
    confidence_histogram_png,
    detection_grid_png,
    detection_tile,
    history_table,
    loss_curves_png,
    plausibility_scatter_png,
    write_detection_report,
)
from synthloop.report.html import Figure, render_html


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_ap_table_in_points_with_delta():
    base = {"ap50": 0.5, "ap60": 0.4, "ap70": 0.3, "ap80": 0.2, "ap": 0.25}
    tuned = {"ap50": 0.6, "ap60": 0.5, "ap70": 0.4, "ap80": 0.35, "ap": 0.3}
    t = ap_table({"baseline": base, "fine-tuned": tuned}, reference="baseline")
    assert list(t.header) == ["model", "AP50", "AP60", "AP70", "AP80", "AP[.5:.95]", "dAP80"]
    assert t.rows[0][1] == pytest.approx(50.0) and t.rows[0][-1] is None
    assert t.rows[1][4] == pytest.approx(35.0) and t.rows[1][-1] == pytest.approx(15.0)
    page = render_html("r", [t])
    assert "AP[.5:.95]" in page and "15.00" in page


def test_ap_table_missing_row_is_dashes():
    t = ap_table({"baseline": None, "fine-tuned": {"ap50": 1.0, "ap60": 1.0, "ap70": 1.0, "ap80": 1.0, "ap": 1.0}}, reference="baseline")
    assert t.rows[0][1:] == [None] * 5 and "dAP80" not in t.header  # no reference values, no delta column
    assert "&ndash;" in render_html("r", [t])


def test_tile_colours_follow_detected_flags():
    img = torch.zeros(3, 32, 32)
    boxes = torch.tensor([[2.0, 2.0, 12.0, 12.0], [16.0, 16.0, 30.0, 30.0]])
    tile = np.asarray(detection_tile(img, boxes, [True, False], scale=2))
    assert tile.shape == (64, 64, 3)
    assert tuple(tile[4, 10]) == DETECTED  # top edge of box 0 (y0 = 2 -> row 4)
    assert tuple(tile[32, 40]) == MISSED  # top edge of box 1
    assert tuple(tile[20, 60]) == (0, 0, 0)  # outside every box: the image


def test_grid_holds_every_tile_and_both_colours():
    imgs = torch.rand(5, 3, 20, 24) * 0.3
    boxes = [torch.tensor([[1.0, 1.0, 10.0, 10.0]]) for _ in range(5)]
    flags = [[i % 2 == 0] for i in range(5)]
    arr = _decode(detection_grid_png(imgs, boxes, flags, names=[["a"]] * 5, columns=3, scale=1))
    assert arr.shape[1] == 3 * (24 + 4) + 4 and arr.shape[0] == 2 * (20 + 4) + 4
    colours = {tuple(p) for p in arr.reshape(-1, 3)}
    assert DETECTED in colours and MISSED in colours
    with pytest.raises(ValueError):
        detection_grid_png(imgs, boxes[:2], flags)


def test_grid_with_an_image_without_boxes():
    arr = _decode(detection_grid_png([torch.ones(3, 8, 8)], [torch.empty(0, 4)], [[]], scale=1))
    assert arr.shape == (16, 16, 3)


def test_loss_curves_and_histogram_are_png():
    png = loss_curves_png({"baseline": [3.0, 2.0, 1.5], "cycle T": [], "S": [0.1, 5.0]})
    assert png.startswith(b"\x89PNG")
    hist = confidence_histogram_png({"at generation": torch.tensor([0.1, 0.2, 0.9]), "empty": torch.empty(0)})
    assert _decode(hist).ndim == 3
    with pytest.raises(InputError):
        confidence_histogram_png({"empty": torch.empty(0)})


def test_history_table_and_page(tmp_path):
    t = history_table([{"t_loss": 1.0, "kept": 3, "note": "x"}, {"t_loss": 0.5, "kept": 4, "s_loss": 2.0}])
    assert list(t.header) == ["cycle", "t_loss", "kept", "s_loss"]
    assert t.rows[0] == [1, 1.0, 3, None]
    path = write_detection_report(tmp_path / "r.html", "run", [t, Figure(loss_curves_png({"a": [1.0]}), "loss")])
    text = path.read_text()
    assert "data:image/png;base64," in text and "http" not in text.replace("http-equiv", "")


def _ap(ap80: float) -> dict[str, float]:
    return {"ap50": 0.9, "ap60": 0.8, "ap70": 0.7, "ap80": ap80, "ap": 0.5}


def test_ap_sets_table_has_a_row_block_per_set_with_its_own_delta():
    t = ap_sets_table({"val": {"baseline": _ap(0.40), "fine-tuned": _ap(0.45)}, "shifted": {"baseline": _ap(0.10), "fine-tuned": _ap(0.30)}})
    assert list(t.header) == ["eval set", "model", "AP50", "AP60", "AP70", "AP80", "AP[.5:.95]", "dAP80"]
    assert [r[:2] for r in t.rows] == [["val", "baseline"], ["val", "fine-tuned"], ["shifted", "baseline"], ["shifted", "fine-tuned"]]
    assert t.rows[1][-1] == pytest.approx(5.0) and t.rows[3][-1] == pytest.approx(20.0)  # each against its own set's baseline
    assert t.rows[0][-1] is None and t.rows[2][-1] is None
    no_ref = ap_sets_table({"x": {"baseline": None, "fine-tuned": _ap(0.2)}})  # a block without a baseline: no delta, same width
    assert len(no_ref.rows[1]) == len(no_ref.header) and no_ref.rows[1][-1] is None


def test_plausibility_scatter_counts_each_quadrant():
    base = torch.tensor([0.1, 0.2, 0.9, 0.8, 0.3])
    ref = torch.tensor([0.9, 0.7, 0.9, 0.1, 0.2])
    png = plausibility_scatter_png(base, ref, threshold=0.5)
    assert _decode(png).ndim == 3
    with pytest.raises(ValueError, match="3 confidences against 2"):
        plausibility_scatter_png(torch.rand(3), torch.rand(2))
    with pytest.raises(ValueError):
        plausibility_scatter_png(torch.empty(0), torch.empty(0))


class _Cfg:
    class loop:
        hard_threshold = 0.5
        real_ratio = "1:1"

    class report:
        samples_per_cycle = 0
        scale = 1


class _LabelMap:
    category_ids = (1,)
    names = ("a",)


def _metrics(**extra):
    return {
        "baseline": {"ap": _ap(0.4), "epochs": 1, "epoch_losses": []},
        "final_ap": _ap(0.45),
        "eval_set": "val.json",
        "eval_set_kind": "val",
        "eval_images": 5,
        "history": [],
        "synthetic_images": 2,
        "hardness": {"objects": 4, "hard_positive_fraction_under_baseline": 0.5},
        **extra,
    }


def test_report_shows_every_eval_set_and_plausibility_next_to_hardness():
    conf = {"under the baseline": torch.tensor([0.1, 0.9, 0.2, 0.8])}
    sets = {"val": {"file": "val.json", "images": 5, "baseline": _ap(0.4), "finetuned": _ap(0.45)},
            "shifted": {"file": "s.json", "images": 7, "baseline": _ap(0.1), "finetuned": _ap(0.3)}}  # fmt: skip
    plaus = {"reference": "teacher", "description": "teacher: an EMA", "objects": 4, "plausible_fraction": 0.75, "hard_plausible_fraction": 0.25,
             "hard_plausible_fraction_at_generation": 0.5}  # fmt: skip
    blocks = build_detection_report(
        cfg=_Cfg, metrics=_metrics(eval_sets=sets, plausibility=plaus), scenes=[], confidences=conf, label_map=_LabelMap,
        plausibility_confidence=(conf["under the baseline"], torch.tensor([0.9, 0.9, 0.1, 0.1])),
    )  # fmt: skip
    page = render_html("r", blocks)
    assert "shifted" in page and "s.json" in page and "20.00" in page  # the shifted block's dAP80
    assert "Plausible: 75.0 %" in page and "hard for the baseline and plausible: 25.0 %" in page
    assert 'alt="hardness vs plausibility"' in page
    page = render_html("r", build_detection_report(cfg=_Cfg, metrics=_metrics(), scenes=[], confidences=conf, label_map=_LabelMap))
    assert "Plausib" not in page and "<th>eval set</th>" not in page  # not measured: no plausibility; one set: the plain table
