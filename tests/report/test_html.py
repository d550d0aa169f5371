import base64
import io
import re

import pytest
import torch
from PIL import Image

from synthloop.metrics.hardness import hardness_histogram
from synthloop.report.html import Figure, Heading, Table, Text, render_html, write_html
from synthloop.report.plots import accuracy_curves_png, hardness_histogram_png, sample_grid_png


def decode(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png))


def test_page_is_self_contained_and_embeds_the_exact_png(tmp_path):
    png = sample_grid_png(torch.rand(4, 1, 6, 6), nrow=2, scale=1)
    path = write_html(
        tmp_path / "r.html",
        "Run <1>",
        [Heading("Numbers"), Table(["name", "value"], [["acc", 0.123456], ["n", 7], ["none", None]]), Figure(png, "grid & more"), Text("a < b")],
        subtitle="quick",
    )
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "Run &lt;1&gt;" in page and "a &lt; b" in page and "grid &amp; more" in page
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # nothing loaded from elsewhere
    assert "http" not in page.lower()
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == 1 and base64.b64decode(embedded[0]) == png
    assert '<td class="num">0.1235</td>' in page and '<td class="num">7</td>' in page and "&ndash;" in page
    assert not list(tmp_path.glob("*.tmp"))


def test_figure_must_be_png():
    with pytest.raises(ValueError, match="PNG"):
        render_html("x", [Figure(b"GIF89a...", "not a png")])


def test_sample_grid_has_one_row_per_class():
    images = torch.zeros(7, 1, 10, 10)
    images[:, :, 2:8, 2:8] = 1.0
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 2])
    img = decode(sample_grid_png(images, labels, per_class=3, num_classes=3, scale=1))
    # cells 10 px + 2 px padding: 3 columns and 3 rows -> 2 + 3 * 12 = 38
    assert img.size == (38, 38) and img.mode == "L"
    # row of class 1 has one filled cell and two blank ones
    row1 = [img.getpixel((2 + 12 * c + 5, 2 + 12 + 5)) for c in range(3)]
    assert row1 == [255, 0, 0]


def test_plots_render_png():
    curves = {"random": [(0, 0.1), (500, 0.3)], "terse": [(0, 0.1), (500, 0.5)]}
    img = decode(accuracy_curves_png(curves, reference_level=0.1, markers={"match": (500, 0.5)}))
    assert img.format == "PNG" and img.size[0] > 300
    hist = hardness_histogram({"random": torch.rand(50), "terse": torch.rand(50)}, bins=10)
    assert decode(hardness_histogram_png(hist)).format == "PNG"
