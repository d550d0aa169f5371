import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import ndimage
from synth_blobs import CATEGORIES, blob_mask, make_blob_dataset

from synthloop import __version__
from synthloop.data.coco import coco_json, mask_bbox, mask_to_polygons, mask_to_rle, read_coco, rle_to_mask, write_coco, write_coco_json
from synthloop.data.dataset import Annotation, ImageEntry
from synthloop.errors import InputError

# pycocotools' own decoder (called by COCOeval here) trips a numpy 2 deprecation
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

KINDS = ["random", "hole", "edge", "pixel"]


def _masks(n=40, h=37, w=53, seed=0):
    rng = np.random.default_rng(seed)
    out = [blob_mask(rng, h, w, KINDS[i % len(KINDS)]) for i in range(n)]
    full = np.ones((h, w), bool)
    corner = np.zeros((h, w), bool)
    corner[-1, -1] = True
    return out + [np.zeros((h, w), bool), full, corner]


def test_rle_round_trip_is_pixel_exact():
    for m in _masks():
        rle = mask_to_rle(m)
        assert isinstance(rle["counts"], str) and rle["size"] == [37, 53]
        json.dumps(rle)
        np.testing.assert_array_equal(rle_to_mask(rle, 37, 53), m)


def test_hole_masks_really_have_holes():
    rng = np.random.default_rng(1)
    m = blob_mask(rng, 48, 64, "hole")
    assert (ndimage.binary_fill_holes(m) & ~m).any()


def test_polygons_give_back_the_mask_without_holes():
    for m in _masks(seed=3):
        polys = mask_to_polygons(m)
        if not m.any():
            assert polys == []
            continue
        assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polys)
        dec = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, 37, 53))).astype(bool)
        np.testing.assert_array_equal(dec, ndimage.binary_fill_holes(m))


def test_rle_to_mask_accepts_uncompressed_and_checks_runs():
    m = np.zeros((4, 5), bool)
    m[1:3, 1:3] = True
    counts = [5, 2, 2, 2, 9]  # column-major runs
    np.testing.assert_array_equal(rle_to_mask({"size": [4, 5], "counts": counts}, 4, 5), m)
    with pytest.raises(InputError, match="cover 9 pixels"):
        rle_to_mask({"size": [4, 5], "counts": [5, 2, 2]}, 4, 5)
    with pytest.raises(InputError, match="cover"):
        rle_to_mask({"size": [4, 5], "counts": "5220"}, 4, 5)  # pycocotools would invent pixels
    with pytest.raises(InputError, match="does not match"):
        rle_to_mask(mask_to_rle(m), 5, 4)


def test_write_read_round_trip(tmp_path):
    ds = make_blob_dataset(tmp_path / "src", n_images=6)
    ds.images[0].annotations[0].iscrowd = 1
    ds.images[1].attributes["params"] = {"angle": np.float32(12.5), "tx": [1, 2]}
    ds.images[2].annotations.append(Annotation(3, (2.0, 3.0, 10.0, 5.0)))  # box only
    ann_file = write_coco(ds, tmp_path / "out")
    assert ann_file == tmp_path / "out" / "annotations.json"
    back = read_coco(ann_file, check_images=True)
    assert back.info["synthloop_version"] == __version__ and back.info["description"] == "blobs"
    assert [(c.id, c.name, c.supercategory) for c in back.categories] == [(c.id, c.name, c.supercategory) for c in CATEGORIES]
    assert back.images[1].attributes == {"params": {"angle": 12.5, "tx": [1, 2]}}
    for a_im, b_im in zip(ds.images, back.images, strict=True):
        assert b_im.file_name == f"images/{a_im.file_name}"
        assert (tmp_path / "out" / b_im.file_name).read_bytes() == (tmp_path / "src" / a_im.file_name).read_bytes()
        assert len(a_im.annotations) == len(b_im.annotations)
        for a, b in zip(a_im.annotations, b_im.annotations, strict=True):
            assert (b.category_id, b.iscrowd, b.attributes) == (a.category_id, a.iscrowd, a.attributes)
            assert b.bbox == pytest.approx(a.bbox)
            assert b.area == a.area
            if a.mask is None:
                assert b.mask is None and not b.has_mask
            else:
                np.testing.assert_array_equal(b.mask, a.mask)
    # a second round trip keeps annotation ids and file names stable
    again = read_coco(write_coco(back, tmp_path / "out2"))
    assert [a.id for im in again.images for a in im.annotations] == [a.id for im in back.images for a in im.annotations]
    assert [im.file_name for im in again.images] == [im.file_name for im in back.images]


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


@pytest.mark.parametrize("mask_format", ["rle", "polygon"])
def test_written_file_loads_in_pycocotools_and_evaluates(tmp_path, mask_format):
    ds = make_blob_dataset(tmp_path / "src", n_images=5)
    ann_file = write_coco(ds, tmp_path / "out", mask_format=mask_format)
    gt = _quiet(COCO, str(ann_file))
    assert len(gt.getAnnIds()) == ds.num_annotations
    raw = json.loads(ann_file.read_text())
    seg = raw["annotations"][0]["segmentation"]
    assert isinstance(seg, dict) if mask_format == "rle" else isinstance(seg, list)
    for iou_type in ("bbox", "segm"):
        dets = []
        for a in gt.loadAnns(gt.getAnnIds()):
            d = {"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9, "bbox": a["bbox"]}
            if iou_type == "segm":
                d["segmentation"] = gt.annToRLE(a)
                d["segmentation"]["counts"] = d["segmentation"]["counts"].decode() if isinstance(d["segmentation"]["counts"], bytes) else d["segmentation"]["counts"]
            dets.append(d)
        dt = _quiet(gt.loadRes, dets)
        ev = COCOeval(gt, dt, iou_type)
        _quiet(ev.evaluate)
        _quiet(ev.accumulate)
        _quiet(ev.summarize)
        assert ev.stats[0] == pytest.approx(1.0, abs=1e-6), iou_type


def test_box_only_dataset_evaluates_in_pycocotools(tmp_path):
    ds = make_blob_dataset(tmp_path / "src", n_images=3, masks=False)
    ann_file = write_coco(ds, tmp_path / "out", mask_format="polygon")
    assert all("segmentation" not in a for a in json.loads(ann_file.read_text())["annotations"])
    gt = _quiet(COCO, str(ann_file))
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0, "bbox": a["bbox"]} for a in gt.loadAnns(gt.getAnnIds())]
    ev = COCOeval(gt, _quiet(gt.loadRes, dets), "bbox")
    for step in (ev.evaluate, ev.accumulate, ev.summarize):
        _quiet(step)
    assert ev.stats[0] == pytest.approx(1.0, abs=1e-6)


def test_polygon_mode_keeps_polygons_that_were_read(tmp_path):
    poly = [[2.0, 2.0, 20.5, 3.0, 11.0, 15.25]]
    doc = _doc()
    doc["annotations"][0]["segmentation"] = poly
    src = tmp_path / "in.json"
    src.write_text(json.dumps(doc))
    ds = read_coco(src)
    write_coco_json(tmp_path / "poly.json", ds.images, ds.categories, mask_format="polygon")
    assert json.loads((tmp_path / "poly.json").read_text())["annotations"][0]["segmentation"] == poly
    ds.images[0].annotations[0].mask = ds.images[0].annotations[0].mask  # replacing the mask drops them
    write_coco_json(tmp_path / "poly2.json", ds.images, ds.categories, mask_format="polygon")
    assert json.loads((tmp_path / "poly2.json").read_text())["annotations"][0]["segmentation"] != poly


def _doc():
    m = np.zeros((30, 40), bool)
    m[5:12, 8:20] = True
    rle = mask_to_rle(m)
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}, {"id": 2, "file_name": "sub/b.jpg", "width": 40, "height": 30}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog", "supercategory": "animal"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [8, 5, 12, 7], "segmentation": [[8, 5, 20, 5, 20, 12, 8, 12]], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [8, 5, 12, 7], "segmentation": rle, "iscrowd": 0},
            {"id": 12, "image_id": 2, "category_id": 2, "bbox": [8, 5, 12, 7], "segmentation": {"size": [30, 40], "counts": _uncompressed(m)}, "iscrowd": 1},
            {"id": 13, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]},
            {"id": 14, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5], "segmentation": []},
        ],
    }


def _uncompressed(m):
    flat = m.T.ravel().astype(np.uint8)  # column-major, as COCO
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    return runs


def test_reads_polygons_rle_and_box_only(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(_doc()))
    ds = read_coco(path)
    assert ds.root == tmp_path
    assert [im.file_name for im in ds.images] == ["a.jpg", "sub/b.jpg"]
    a0, a1 = ds.images[0].annotations
    b0, b1, b2 = ds.images[1].annotations
    expect = np.zeros((30, 40), bool)
    expect[5:12, 8:20] = True
    np.testing.assert_array_equal(a1.mask, expect)  # compressed RLE
    np.testing.assert_array_equal(b0.mask, expect)  # uncompressed RLE
    assert b0.iscrowd == 1
    assert a0.polygons == [[8.0, 5.0, 20.0, 5.0, 20.0, 12.0, 8.0, 12.0]]
    assert mask_bbox(a0.mask) == (8.0, 5.0, 12.0, 7.0)  # pycocotools rasterisation of the square
    assert b1.mask is None and b2.mask is None and b1.area == 25.0
    assert [a.id for a in (a0, a1, b0, b1, b2)] == [10, 11, 12, 13, 14]


def _mutate(fn):
    doc = _doc()
    fn(doc)
    return doc


BAD = [
    ("missing images", lambda d: d.pop("images"), r"field images: missing required field"),
    ("missing category name", lambda d: d["categories"][1].pop("name"), r"categories\[1\]\.name: missing"),
    ("missing bbox", lambda d: d["annotations"][2].pop("bbox"), r"annotations\[2\]\.bbox: missing"),
    ("missing image id", lambda d: d["annotations"][3].pop("image_id"), r"annotations\[3\]\.image_id: missing"),
    ("string width", lambda d: d["images"][0].update(width="40"), r"images\[0\]\.width: must be an integer"),
    ("unknown category", lambda d: d["annotations"][3].update(category_id=9), r"annotations\[3\]\.category_id: category_id 9"),
    ("unknown image", lambda d: d["annotations"][1].update(image_id=5), r"annotations\[1\]\.image_id"),
    ("duplicate image id", lambda d: d["images"][1].update(id=1), r"images\[1\]\.id: duplicate image id 1"),
    ("duplicate annotation id", lambda d: d["annotations"][4].update(id=10), r"annotations\[4\]\.id: duplicate"),
    ("duplicate category id", lambda d: d["categories"][1].update(id=1), r"categories\[1\]\.id: duplicate"),
    ("escaping file_name", lambda d: d["images"][1].update(file_name="../x.jpg"), r"images\[1\]\.file_name: .*escapes"),
    ("nested escape", lambda d: d["images"][1].update(file_name="sub/../../x.jpg"), r"images\[1\]\.file_name: .*escapes"),
    ("absolute file_name", lambda d: d["images"][0].update(file_name="/etc/passwd"), r"images\[0\]\.file_name: .*absolute"),
    ("windows absolute", lambda d: d["images"][0].update(file_name="C:\\data\\x.jpg"), r"images\[0\]\.file_name: .*absolute"),
    ("windows escape", lambda d: d["images"][0].update(file_name="..\\x.jpg"), r"images\[0\]\.file_name: .*escapes"),
    ("rle wrong size", lambda d: d["annotations"][1]["segmentation"].update(size=[40, 30]), r"annotations\[1\]\.segmentation\.size: RLE size"),
    ("rle short counts", lambda d: d["annotations"][1]["segmentation"].update(counts="5220"), r"annotations\[1\]\.segmentation\.counts"),
    ("uncompressed wrong total", lambda d: d["annotations"][2]["segmentation"]["counts"].append(3), r"annotations\[2\]\.segmentation\.counts"),
    ("short polygon", lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3, 4]]), r"annotations\[0\]\.segmentation\[0\]: a polygon needs"),
    ("polygon outside", lambda d: d["annotations"][0].update(segmentation=[[8, 5, 45, 5, 20, 12]]), r"annotations\[0\]\.segmentation\[0\]: polygon reaches outside the 40x30"),
    ("bad segmentation", lambda d: d["annotations"][0].update(segmentation="x"), r"annotations\[0\]\.segmentation: segmentation must be"),
    ("bbox outside", lambda d: d["annotations"][3].update(bbox=[30, 1, 15, 5]), r"annotations\[3\]\.bbox: .*outside"),
    ("bbox negative", lambda d: d["annotations"][3].update(bbox=[-5, 1, 3, 5]), r"annotations\[3\]\.bbox: .*outside"),
    ("bbox three numbers", lambda d: d["annotations"][3].update(bbox=[1, 1, 5]), r"annotations\[3\]\.bbox: bbox must be"),
    ("bbox nan", lambda d: d["annotations"][3].update(bbox=[1, 1, float("nan"), 5]), r"annotations\[3\]\.bbox"),
    ("iscrowd 2", lambda d: d["annotations"][3].update(iscrowd=2), r"annotations\[3\]\.iscrowd"),
    ("annotation not object", lambda d: d["annotations"].append(3), r"annotations\[5\]: must be an object"),
]


@pytest.mark.parametrize("name,fn,pattern", BAD, ids=[b[0] for b in BAD])
def test_validation_errors_name_file_and_field(tmp_path, name, fn, pattern):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_mutate(fn)))
    with pytest.raises(InputError, match=pattern) as ei:
        read_coco(path)
    assert ei.value.file == str(path)


def test_invalid_json_and_missing_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    with pytest.raises(InputError, match="invalid JSON at line 1"):
        read_coco(path)
    with pytest.raises(InputError, match="not found"):
        read_coco(tmp_path / "nope.json")


def test_check_images(tmp_path):
    ds = make_blob_dataset(tmp_path, n_images=2, size=(30, 40), masks=False)
    write_coco_json(tmp_path / "a.json", ds.images, ds.categories)
    assert len(read_coco(tmp_path / "a.json", check_images=True).images) == 2
    doc = json.loads((tmp_path / "a.json").read_text())
    doc["images"][1]["width"] = 41
    (tmp_path / "b.json").write_text(json.dumps(doc))
    read_coco(tmp_path / "b.json")  # headers are only read on request
    with pytest.raises(InputError, match=r"images\[1\]\.width: .*does not match"):
        read_coco(tmp_path / "b.json", check_images=True)
    (tmp_path / ds.images[0].file_name).unlink()
    with pytest.raises(InputError, match=r"images\[0\]\.file_name: image file not found"):
        read_coco(tmp_path / "a.json", check_images=True)


def test_writer_validates_before_writing_anything(tmp_path):
    ds = make_blob_dataset(tmp_path / "src", n_images=3)
    ds.images[2].annotations[0].mask = np.zeros((10, 10), bool)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"images\[2\]\.annotations\[0\]\.mask: mask is \(10, 10\)"):
        write_coco(ds, out)
    assert list(tmp_path.iterdir()) == [tmp_path / "src"]

    ds = make_blob_dataset(tmp_path / "src", n_images=3)
    ds.images[1].annotations[0].category_id = 99
    with pytest.raises(InputError, match=r"images\[1\]\.annotations\[0\]\.category_id"):
        write_coco(ds, out)
    ds = make_blob_dataset(tmp_path / "src", n_images=3)
    (tmp_path / "src" / ds.images[2].file_name).unlink()  # found missing while copying
    with pytest.raises(InputError, match="image file not found"):
        write_coco(ds, out)
    assert list(tmp_path.iterdir()) == [tmp_path / "src"]


def test_write_without_copying_images(tmp_path):
    ds = make_blob_dataset(tmp_path / "out" / "imgs", n_images=2)
    ann_file = write_coco(ds, tmp_path / "out", copy_images=False)
    back = read_coco(ann_file, check_images=True)
    assert [im.file_name for im in back.images] == ["imgs/img00.png", "imgs/img01.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["annotations.json", "imgs"]


def test_coco_json_annotation_ids_and_area(tmp_path):
    m = np.zeros((8, 8), bool)
    m[2:4, 2:5] = True
    anns = [Annotation(1, mask_bbox(m), m, id=5), Annotation(1, (0, 0, 2, 3)), Annotation(1, (0, 0, 1, 1), id=2)]
    doc = coco_json([ImageEntry(1, "x.png", 8, 8, anns)], CATEGORIES)
    assert [a["id"] for a in doc["annotations"]] == [5, 6, 2]
    assert [a["area"] for a in doc["annotations"]] == [6.0, 6.0, 1.0]
    assert "segmentation" not in doc["annotations"][1]
    dup = [Annotation(1, (0, 0, 1, 1), id=4), Annotation(1, (0, 0, 1, 1), id=4)]
    assert [a["id"] for a in coco_json([ImageEntry(1, "x.png", 8, 8, dup)], CATEGORIES)["annotations"]] == [1, 2]


def test_annotation_from_json_style_rle():
    m = np.zeros((6, 7), bool)
    m[1:4, 2:5] = True
    ann = Annotation.from_rle(1, (2.0, 1.0, 3.0, 3.0), mask_to_rle(m))
    assert np.array_equal(ann.mask, m)
