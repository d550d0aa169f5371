import xml.etree.ElementTree as ET

import numpy as np
import pytest
import yaml
from scipy import ndimage
from synth_blobs import CATEGORIES, make_blob_dataset

from synthloop.data.dataset import Annotation, Category, Dataset, ImageEntry
from synthloop.data.images import encode_png, load_image
from synthloop.data.voc import read_voc, write_voc
from synthloop.data.yolo import merge_polygons, read_yolo, write_yolo
from synthloop.errors import InputError

# ---------------------------------------------------------------------------------- YOLO


def test_yolo_segments_round_trip(tmp_path):
    ds = make_blob_dataset(tmp_path / "src", n_images=5, subdir="sub")
    yaml_path = write_yolo(ds, tmp_path / "yolo")
    meta = yaml.safe_load(yaml_path.read_text())
    assert meta["names"] == {0: "disc", 1: "blob", 2: "dot"} and meta["nc"] == 3
    assert meta["train"] == "images" and meta["category_ids"] == [1, 3, 7]
    label = (tmp_path / "yolo" / "labels" / "sub" / "img00.txt").read_text().splitlines()
    assert len(label) == len(ds.images[0].annotations)
    assert all(len(line.split()) >= 7 and len(line.split()) % 2 == 1 for line in label)  # class + polygon
    assert (tmp_path / "yolo" / "images" / "sub" / "img00.png").read_bytes() == (tmp_path / "src" / "sub" / "img00.png").read_bytes()

    back = read_yolo(tmp_path / "yolo")
    assert [(c.id, c.name) for c in back.categories] == [(c.id, c.name) for c in CATEGORIES]
    assert [im.file_name for im in back.images] == [f"images/sub/img{i:02d}.png" for i in range(5)]
    for a_im, b_im in zip(ds.images, back.images, strict=True):
        assert (b_im.width, b_im.height) == (a_im.width, a_im.height)
        for a, b in zip(a_im.annotations, b_im.annotations, strict=True):
            assert b.category_id == a.category_id
            # one polygon per object: holes are filled, everything else is exact
            np.testing.assert_array_equal(b.mask, ndimage.binary_fill_holes(a.mask))
            assert b.bbox == pytest.approx(a.bbox, abs=1e-3)


def test_yolo_boxes_when_any_annotation_lacks_a_mask(tmp_path):
    ds = make_blob_dataset(tmp_path / "src", n_images=3)
    ds.images[0].annotations.append(Annotation(7, (1.5, 2.0, 10.25, 6.0)))
    ds.images[1].annotations[0].iscrowd = 1
    with pytest.warns(UserWarning, match="1 crowd annotation"):
        write_yolo(ds, tmp_path / "yolo")
    line = (tmp_path / "yolo" / "labels" / "img00.txt").read_text().splitlines()[-1].split()
    assert line[0] == "2" and len(line) == 5
    assert [float(v) for v in line[1:]] == pytest.approx([(1.5 + 5.125) / 64, 5.0 / 48, 10.25 / 64, 6.0 / 48], abs=1e-6)
    back = read_yolo(tmp_path / "yolo" / "data.yaml")
    assert back.images[0].annotations[-1].bbox == pytest.approx((1.5, 2.0, 10.25, 6.0), abs=1e-4)
    assert all(a.mask is None for im in back.images for a in im.annotations)
    assert len(back.images[1].annotations) == len(ds.images[1].annotations) - 1


def test_yolo_splits_are_written_as_lists(tmp_path):
    ds = make_blob_dataset(tmp_path / "src", n_images=4)
    for im, split in zip(ds.images, ["train", "train", "val", "test"], strict=True):
        im.attributes["split"] = split
    write_yolo(ds, tmp_path / "yolo")
    meta = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert (meta["train"], meta["val"], meta["test"]) == ("train.txt", "val.txt", "test.txt")
    assert (tmp_path / "yolo" / "val.txt").read_text() == "./images/img02.png\n"
    back = read_yolo(tmp_path / "yolo")
    assert [im.attributes.get("split") for im in back.images] == ["train", "train", "val", "test"]


def test_merge_polygons_has_zero_area_bridges():
    a = [0.0, 0.0, 4.0, 0.0, 4.0, 4.0, 0.0, 4.0]
    b = [10.0, 0.0, 14.0, 0.0, 14.0, 4.0, 10.0, 4.0]
    merged = np.asarray(merge_polygons([a, b])).reshape(-1, 2)
    x, y = merged[:, 0], merged[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    assert area == pytest.approx(32.0)
    assert merge_polygons([a]) == a


def _yolo_dir(tmp_path, label: str, names="[a, b]"):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "images" / "x.png").write_bytes(encode_png(np.zeros((20, 30, 3), np.uint8)))
    (tmp_path / "labels" / "x.txt").write_text(label)
    (tmp_path / "data.yaml").write_text(f"train: images\nval: images\nnames: {names}\n")
    return tmp_path


@pytest.mark.parametrize(
    "label,pattern",
    [
        ("2 0.5 0.5 0.1 0.1\n", r"line 1: class 2 is not in 0..1"),
        ("0 0.5 0.5 0.1\n", r"line 1: expected 4 box values"),
        ("0 0.5 0.5 0.1 0.1\n1 0.5 1.5 0.1 0.1\n", r"line 2: coordinates must be normalised"),
        ("0 0.5 x 0.1 0.1\n", r"line 1: expected 'class x y"),
        ("0 0.1 0.1 0.5 0.1 0.5 0.5 0.2\n", r"line 1: expected 4 box values or an even number"),
    ],
)
def test_yolo_label_errors_name_file_and_line(tmp_path, label, pattern):
    root = _yolo_dir(tmp_path, label)
    with pytest.raises(InputError, match=pattern) as ei:
        read_yolo(root)
    assert ei.value.file == str(root / "labels" / "x.txt")


def test_yolo_yaml_errors(tmp_path):
    root = _yolo_dir(tmp_path, "0 0.5 0.5 0.2 0.2\n", names="{0: a, 2: b}")
    with pytest.raises(InputError, match=r"data.yaml: field names: class indices"):
        read_yolo(root)
    (root / "data.yaml").write_text("train: ../elsewhere\nnames: [a]\n")
    with pytest.raises(InputError, match=r"field train: .*escapes"):
        read_yolo(root)
    (root / "data.yaml").write_text("train: images\nnames: [a, b]\n")
    ds = read_yolo(root)  # names as a list, ids default to index + 1
    assert [(c.id, c.name) for c in ds.categories] == [(1, "a"), (2, "b")]
    assert ds.images[0].annotations[0].bbox == pytest.approx((12.0, 8.0, 6.0, 4.0))


def test_yolo_writer_leaves_nothing_on_error(tmp_path):
    ds = make_blob_dataset(tmp_path / "src", n_images=3)
    ds.images[2].annotations[0].mask = np.zeros((5, 5), bool)
    with pytest.raises(InputError, match=r"images\[2\]\.annotations\[0\]\.mask"):
        write_yolo(ds, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


# ---------------------------------------------------------------------------------- VOC


def test_voc_layout_and_xml_are_standard(tmp_path):
    ds = make_blob_dataset(tmp_path / "src", n_images=3, ext=".jpg")
    ds.images[0].annotations = [Annotation(3, (0.0, 0.0, 10.0, 5.0), attributes={"truncation": 0.4, "difficult": True})]
    write_voc(ds, tmp_path / "voc")
    assert (tmp_path / "voc" / "ImageSets" / "Main" / "train.txt").read_text() == "img00\nimg01\nimg02\n"
    assert (tmp_path / "voc" / "ImageSets" / "Main" / "trainval.txt").is_file()
    assert (tmp_path / "voc" / "JPEGImages" / "img00.jpg").read_bytes() == (tmp_path / "src" / "img00.jpg").read_bytes()
    root = ET.parse(tmp_path / "voc" / "Annotations" / "img00.xml").getroot()
    assert [c.tag for c in root] == ["folder", "filename", "source", "size", "segmented", "object"]
    assert [c.tag for c in root.find("size")] == ["width", "height", "depth"]
    obj = root.find("object")
    assert [c.tag for c in obj] == ["name", "pose", "truncated", "difficult", "bndbox"]
    assert [c.tag for c in obj.find("bndbox")] == ["xmin", "ymin", "xmax", "ymax"]
    assert obj.findtext("name") == "blob" and obj.findtext("truncated") == "1" and obj.findtext("difficult") == "1"
    # COCO (0, 0, 10, 5) covers pixels 0..9 x 0..4: VOC 1-based inclusive 1..10 x 1..5
    assert [int(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")] == [1, 1, 10, 5]


def test_voc_round_trip_keeps_whole_pixel_boxes(tmp_path):
    ds = make_blob_dataset(tmp_path / "src", n_images=4)
    ds.images[3].attributes["split"] = "val"
    write_voc(ds, tmp_path / "voc")
    # PNG sources are re-encoded as JPEG under their VOC id
    assert load_image(tmp_path / "voc" / "JPEGImages" / "img00.jpg").shape == (48, 64, 3)
    back = read_voc(tmp_path / "voc", categories=[c.name for c in CATEGORIES])
    assert [im.attributes["split"] for im in back.images] == ["train", "train", "train", "val"]
    by_name = {c.id: c.name for c in CATEGORIES}
    back_names = {c.id: c.name for c in back.categories}
    for a_im, b_im in zip(ds.images, back.images, strict=True):
        assert b_im.file_name == f"JPEGImages/{a_im.file_name.rsplit('.', 1)[0]}.jpg"
        assert (b_im.width, b_im.height) == (a_im.width, a_im.height)
        for a, b in zip(a_im.annotations, b_im.annotations, strict=True):
            assert back_names[b.category_id] == by_name[a.category_id]
            assert b.bbox == pytest.approx(a.bbox)  # mask boxes are whole pixels
            assert b.mask is None
    only_val = read_voc(tmp_path / "voc", split="val")
    assert [im.file_name for im in only_val.images] == ["JPEGImages/img03.jpg"]


def test_voc_ids_are_unique_across_folders(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / "src" / sub).mkdir(parents=True)
        (tmp_path / "src" / sub / "x.png").write_bytes(encode_png(np.zeros((8, 8, 3), np.uint8)))
    ds = Dataset(tmp_path / "src", [Category(1, "c")], [ImageEntry(1, "a/x.png", 8, 8), ImageEntry(2, "b/x.png", 8, 8)])
    write_voc(ds, tmp_path / "voc")
    assert sorted(p.name for p in (tmp_path / "voc" / "Annotations").iterdir()) == ["a_x.xml", "b_x.xml"]


def _voc_dir(tmp_path, xml: str):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "x.xml").write_text(xml)
    return tmp_path


GOOD_XML = (
    "<annotation><filename>x.jpg</filename><size><width>30</width><height>20</height><depth>3</depth></size>"
    "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object></annotation>"
)


@pytest.mark.parametrize(
    "xml,pattern",
    [
        (GOOD_XML.replace("<name>dog</name>", ""), r"annotation/object\[0\]/name: missing"),
        (GOOD_XML.replace("<xmax>10</xmax>", ""), r"annotation/object\[0\]/bndbox/xmax: missing"),
        (GOOD_XML.replace("<xmax>10</xmax>", "<xmax>ten</xmax>"), r"bndbox/xmax: must be a number"),
        (GOOD_XML.replace("<ymax>20</ymax>", "<ymax>25</ymax>"), r"annotation/object\[0\]/bndbox: box .* not inside"),
        (GOOD_XML.replace("<width>30</width>", ""), r"annotation/size/width: missing"),
        (GOOD_XML.replace("x.jpg", "../../x.jpg"), r"annotation/filename: .*escapes"),
        (GOOD_XML[:-5], r"invalid XML"),
    ],
)
def test_voc_errors_name_file_and_element(tmp_path, xml, pattern):
    root = _voc_dir(tmp_path, xml)
    with pytest.raises(InputError, match=pattern) as ei:
        read_voc(root)
    assert ei.value.file == str(root / "Annotations" / "x.xml")


def test_voc_reads_minimal_xml(tmp_path):
    ds = read_voc(_voc_dir(tmp_path, GOOD_XML))
    (ann,) = ds.images[0].annotations
    assert ann.bbox == (0.0, 1.0, 10.0, 19.0)
    assert ds.categories == [Category(1, "dog")]
    with pytest.raises(InputError, match="not one of the categories"):
        read_voc(tmp_path, categories=["cat"])
