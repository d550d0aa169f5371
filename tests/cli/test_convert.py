import json
import struct
import zlib

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from synthloop.cli import app
from synthloop.data.coco import mask_bbox, mask_to_rle, read_coco
from synthloop.data.images import encode_png
from synthloop.data.voc import read_voc
from synthloop.data.yolo import read_yolo

runner = CliRunner()


def _make_coco(root, n=3, h=40, w=56):
    """A few PNGs with filled-ellipse blobs and their COCO file (RLE masks)."""
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        img = (rng.uniform(0, 50, (h, w, 3))).astype(np.uint8)
        for j in range(2):
            m = np.zeros((h, w), np.uint8)
            cv2.ellipse(m, (int(rng.integers(12, w - 12)), int(rng.integers(10, h - 10))), (int(rng.integers(4, 10)), int(rng.integers(4, 9))), 0.0, 0, 360, 1, -1)
            img[m > 0] = rng.integers(100, 255, 3)
            mb = m.astype(bool)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1 + j, "bbox": list(mask_bbox(mb)), "segmentation": mask_to_rle(mb), "iscrowd": 0})
        (root / "imgs" / f"im{i}.png").write_bytes(encode_png(img))
        images.append({"id": i + 1, "file_name": f"imgs/im{i}.png", "width": w, "height": h})
    doc = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "apple"}, {"id": 2, "name": "pear"}]}
    (root / "annotations.json").write_text(json.dumps(doc))
    return root


def _convert(*args):
    return runner.invoke(app, ["convert", *map(str, args)])


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


def test_coco_yolo_voc_coco_chain(tmp_path):
    src = _make_coco(tmp_path / "src")
    r = _convert(src, tmp_path / "yolo", "--from", "coco", "--to", "yolo")
    assert r.exit_code == 0, r.output
    assert "wrote 3 images, 6 annotations (coco -> yolo)" in r.output
    y = read_yolo(tmp_path / "yolo")
    assert len(y.images) == 3 and y.num_annotations == 6 and all(a.has_mask for im in y.images for a in im.annotations)

    r = _convert(tmp_path / "yolo", tmp_path / "coco_poly", "--from", "yolo", "--to", "coco", "--mask-format", "polygon")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "coco_poly" / "annotations.json").read_text())
    assert all(isinstance(a["segmentation"], list) for a in doc["annotations"])
    back = read_coco(tmp_path / "coco_poly" / "annotations.json", check_images=True)
    orig = read_coco(src / "annotations.json")
    for a_im, b_im in zip(orig.images, back.images, strict=True):
        for a, b in zip(a_im.annotations, b_im.annotations, strict=True):
            np.testing.assert_array_equal(a.mask, b.mask)  # filled ellipses survive every step exactly

    r = _convert(tmp_path / "coco_poly", tmp_path / "voc", "--from", "coco", "--to", "voc")
    assert r.exit_code == 0, r.output
    v = read_voc(tmp_path / "voc", categories=["apple", "pear"])
    assert v.num_annotations == 6
    assert [a.bbox for a in v.images[0].annotations] == [a.bbox for a in orig.images[0].annotations]  # whole-pixel boxes
    assert _siblings(tmp_path / "voc") == ["coco_poly", "src", "voc", "yolo"]  # no temporary folders left


def test_refuses_non_empty_destination_unless_overwrite(tmp_path):
    src = _make_coco(tmp_path / "src")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    r = _convert(src, dst, "--from", "coco", "--to", "yolo")
    assert r.exit_code == 2 and "not empty" in r.output and "--overwrite" in r.output
    assert (dst / "keep.txt").read_text() == "mine"
    r = _convert(src, dst, "--from", "coco", "--to", "yolo", "--overwrite")
    assert r.exit_code == 0, r.output
    assert not (dst / "keep.txt").exists() and (dst / "data.yaml").is_file()
    assert _siblings(dst) == ["dst", "src"]
    r = _convert(src, src, "--from", "coco", "--to", "coco", "--overwrite")
    assert r.exit_code == 2 and "would delete the input" in r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _convert(src, empty, "--from", "coco", "--to", "coco").exit_code == 0


def test_image_root_option(tmp_path):
    src = _make_coco(tmp_path / "src")
    ann = tmp_path / "ann" / "instances.json"
    ann.parent.mkdir()
    (src / "annotations.json").rename(ann)
    r = _convert(ann, tmp_path / "out", "--from", "coco", "--to", "coco")
    assert r.exit_code == 2 and "images[0].file_name" in r.output
    r = _convert(ann, tmp_path / "out", "--from", "coco", "--to", "coco", "--image-root", src)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "images" / "imgs" / "im0.png").is_file()


def _png_claiming(width, height):
    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _corrupt(root):
    (root / "imgs" / "im1.png").write_bytes(b"\x89PNG garbage" * 20)
    return "imgs/im1.png", "not a readable image"


def _truncated(root):
    data = (root / "imgs" / "im2.png").read_bytes()
    (root / "imgs" / "im2.png").write_bytes(data[: len(data) // 2])
    return "imgs/im2.png", "truncated"


def _huge(root):
    (root / "imgs" / "im0.png").write_bytes(_png_claiming(40_000, 40_000))
    return "imgs/im0.png", "field size"


def _json_edit(fn, expect_file, expect):
    def edit(root):
        doc = json.loads((root / "annotations.json").read_text())
        fn(doc)
        (root / "annotations.json").write_text(json.dumps(doc))
        return expect_file, expect

    return edit


BAD = {
    "corrupt image": _corrupt,
    "truncated image": _truncated,
    "over the pixel limit": _huge,
    "unknown category": _json_edit(lambda d: d["annotations"][3].update(category_id=9), "annotations.json", "annotations[3].category_id"),
    "missing field": _json_edit(lambda d: d["images"][1].pop("height"), "annotations.json", "images[1].height: missing"),
    "escaping file_name": _json_edit(lambda d: d["images"][0].update(file_name="../../etc/x.png"), "annotations.json", "images[0].file_name"),
    "mask of the wrong size": _json_edit(lambda d: d["annotations"][0]["segmentation"].update(size=[10, 10]), "annotations.json", "annotations[0].segmentation.size"),
}


@pytest.mark.parametrize("to", ["coco", "yolo", "voc"])
@pytest.mark.parametrize("problem", list(BAD), ids=list(BAD))
def test_failed_conversion_leaves_no_output(tmp_path, problem, to):
    src = _make_coco(tmp_path / "src")
    bad_file, expect = BAD[problem](src)
    dst = tmp_path / "out" / "dst"
    r = _convert(src, dst, "--from", "coco", "--to", to)
    assert r.exit_code == 2, r.output
    text = " ".join(r.output.split())  # undo console wrapping
    assert "error:" in text and bad_file in text and expect in text
    assert "Traceback" not in r.output
    assert not dst.exists()
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_failed_overwrite_keeps_the_old_output(tmp_path):
    src = _make_coco(tmp_path / "src")
    dst = tmp_path / "dst"
    assert _convert(src, dst, "--from", "coco", "--to", "coco").exit_code == 0
    before = (dst / "annotations.json").read_text()
    _truncated(src)
    r = _convert(src, dst, "--from", "coco", "--to", "coco", "--overwrite")
    assert r.exit_code == 2
    assert (dst / "annotations.json").read_text() == before
    assert _siblings(dst) == ["dst", "src"]


def test_bad_format_name_is_a_usage_error(tmp_path):
    r = _convert(tmp_path, tmp_path / "x", "--from", "kitti", "--to", "coco")
    assert r.exit_code != 0 and not (tmp_path / "x").exists()
