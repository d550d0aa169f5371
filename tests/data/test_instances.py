import warnings

import numpy as np
import pytest
import torch
from synth_blobs import make_blob_dataset

import synthloop.data.instances as instances_mod
from synthloop.config import load_config
from synthloop.data.coco import mask_bbox, read_coco, write_coco
from synthloop.data.dataset import Annotation, Category
from synthloop.data.images import encode_jpeg, encode_png, load_image
from synthloop.data.instances import InstanceBank, InstanceBankConfig, bank_to_dataset, feathered_box_alpha
from synthloop.errors import ConfigError, InputError


def _coco(tmp_path, n_images=5, **kw):
    ds = make_blob_dataset(tmp_path / "src", n_images=n_images, **kw)
    return write_coco(ds, tmp_path / "coco")


def _masks_by_id(ds):
    return {a.id: (im.id, a.category_id, a.mask) for im in ds.images for a in im.annotations}


@pytest.mark.parametrize("normalize", [False, True])
def test_coco_bank_coco_is_pixel_identical(tmp_path, normalize):
    ann_file = _coco(tmp_path)
    bank = InstanceBank.from_coco(ann_file, min_area=0, normalize=normalize)
    src = read_coco(ann_file)
    assert len(bank) == src.num_annotations and bank.report.kept == len(bank)
    out = write_coco(bank_to_dataset(bank), tmp_path / "again")
    back = read_coco(out, check_images=True)
    a, b = _masks_by_id(src), _masks_by_id(back)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k][:2] == b[k][:2]
        np.testing.assert_array_equal(a[k][2], b[k][2])
    assert [(c.id, c.name) for c in back.categories] == [(c.id, c.name) for c in src.categories]


def test_instances_are_tight_crops_of_the_source(tmp_path):
    ann_file = _coco(tmp_path)
    src = read_coco(ann_file)
    bank = InstanceBank.from_coco(ann_file, min_area=0)
    inst = next(i for i in bank if i.annotation_id == src.images[1].annotations[0].id)
    ann = src.images[1].annotations[0]
    img = load_image(src.image_path(src.images[1]))
    x, y, w, h = (int(v) for v in mask_bbox(ann.mask))
    assert inst.offset == (x, y) and inst.rgb.shape == (h, w, 3) and inst.alpha.shape == (h, w)
    assert inst.rgb.dtype == np.uint8 and inst.alpha.dtype == np.float32
    np.testing.assert_array_equal(inst.rgb, img[y : y + h, x : x + w])
    np.testing.assert_array_equal(inst.alpha, ann.mask[y : y + h, x : x + w].astype(np.float32))
    assert inst.source_id == f"coco:{ann.id}" and inst.category_name == {c.id: c.name for c in src.categories}[ann.category_id]
    assert inst.source == str(ann_file) and inst.image_size == (48, 64)


def test_each_source_image_is_decoded_once(tmp_path, monkeypatch):
    ann_file = _coco(tmp_path, n_images=4)
    calls = []
    real = instances_mod.load_image
    monkeypatch.setattr(instances_mod, "load_image", lambda p, **kw: calls.append(p) or real(p, **kw))
    bank = InstanceBank.from_coco(ann_file, min_area=0)
    assert len(bank) > 4
    assert sorted(calls) == sorted(set(calls)) and len(calls) == 4


def test_cleanup_drops_and_reports(tmp_path):
    ds = make_blob_dataset(tmp_path / "src", n_images=3)
    anns = ds.images[0].annotations
    good = anns[0]
    x, y, w, h = good.bbox
    anns.append(Annotation(good.category_id, (x, y, w / 3, h / 3), good.mask, id=100))  # box disagrees (IoU 1/9)
    anns.append(Annotation(good.category_id, (0, 0, 1, 1), np.zeros_like(good.mask), id=101))  # empty mask
    tiny = np.zeros_like(good.mask)
    tiny[3:5, 3:5] = True
    anns.append(Annotation(good.category_id, mask_bbox(tiny), tiny, id=102))  # 4 px
    anns.append(Annotation(good.category_id, good.bbox, good.mask, iscrowd=1, id=103))
    ann_file = write_coco(ds, tmp_path / "coco")
    bank = InstanceBank.from_coco(ann_file, min_area=10)
    rep = bank.report
    assert rep.dropped["bbox_mismatch"] == ["coco:100"]
    assert rep.dropped["empty_mask"] == ["coco:101"]
    assert "coco:102" in rep.dropped["too_small"]
    assert rep.dropped["crowd"] == ["coco:103"]
    assert rep.counts()["kept"] == len(bank)
    assert all(i.source_id not in {"coco:100", "coco:101", "coco:102", "coco:103"} for i in bank)
    assert len(InstanceBank.from_coco(ann_file, min_area=10, bbox_iou_threshold=0.0).report.dropped["bbox_mismatch"]) == 0


def test_box_only_annotations_get_feathered_alpha_and_one_warning(tmp_path):
    ds = make_blob_dataset(tmp_path / "src", n_images=3, masks=False)
    ds.images[0].annotations.append(Annotation(1, (10.3, 5.0, 20.0, 12.6)))
    ann_file = write_coco(ds, tmp_path / "coco")
    with pytest.warns(UserWarning, match=r"coco/annotations.json: \d+ box-only annotation") as rec:
        bank = InstanceBank.from_coco(ann_file, min_area=0)
    assert len([w for w in rec if "box-only" in str(w.message)]) == 1
    assert len(bank.report.box_only) == len(bank)
    inst = next(i for i in bank if i.bbox == (10.3, 5.0, 20.0, 12.6))
    assert inst.rgb.shape[:2] == inst.alpha.shape == (13, 21)  # floor/ceil of the box
    a = inst.alpha
    assert a[a.shape[0] // 2, a.shape[1] // 2] == pytest.approx(1.0)
    assert a[0, 0] < 0.1 and a.min() >= 0 and not inst.has_mask
    back = bank_to_dataset(bank)
    assert all(ann.mask is None for im in back.images for ann in im.annotations)
    assert any(ann.bbox == (10.3, 5.0, 20.0, 12.6) for im in back.images for ann in im.annotations)


def test_feathered_alpha_shape():
    a = feathered_box_alpha(40, 60, 0.05)
    assert a.shape == (40, 60) and a.max() == pytest.approx(1.0)
    assert np.all(np.diff(a[20, :30]) >= -1e-6)  # rises monotonically towards the middle
    assert feathered_box_alpha(4, 4, 0.0).min() == 1.0


def test_normalized_crops_are_centred_squares(tmp_path):
    ann_file = _coco(tmp_path)
    bank = InstanceBank.from_coco(ann_file, min_area=20, normalize=True, fill=0.7)
    for inst in bank:
        h, w = inst.alpha.shape
        assert h == w
        ys, xs = np.nonzero(inst.alpha > 0)
        side = max(np.ptp(ys) + 1, np.ptp(xs) + 1)
        assert side / h >= 0.7 - 1e-9 and side / h < 0.7 + 1.0 / h + 1e-9
        assert abs((ys.min() + ys.max()) / 2 - (h - 1) / 2) <= 1.0
        assert abs((xs.min() + xs.max()) / 2 - (w - 1) / 2) <= 1.0


def test_tensor_is_cached_and_shaped(tmp_path):
    bank = InstanceBank.from_coco(_coco(tmp_path), min_area=0)
    rgb, alpha = bank.tensor(1)
    h, w = bank[1].alpha.shape
    assert rgb.shape == (3, h, w) and alpha.shape == (1, h, w)
    assert rgb.dtype == torch.float32 and float(rgb.max()) <= 1.0
    torch.testing.assert_close(rgb, torch.from_numpy(bank[1].rgb).permute(2, 0, 1).float() / 255)
    assert bank.tensor(1)[0] is rgb
    small = InstanceBank(bank.instances, bank.categories, tensor_cache_size=1)
    first = small.tensor(0)[0]
    small.tensor(1)
    assert small.tensor(0)[0] is not first
    assert sorted(i for ids in bank.by_category.values() for i in ids) == list(range(len(bank)))
    assert all(bank[i].category_id == c for c, ids in bank.by_category.items() for i in ids)


def test_image_size_mismatch_names_the_image(tmp_path):
    ann_file = _coco(tmp_path, n_images=2)
    img = tmp_path / "coco" / "images" / "img01.png"
    img.write_bytes(encode_png(np.zeros((10, 10, 3), np.uint8)))
    with pytest.raises(InputError, match="is 10x10 but the entry says 64x48") as ei:
        InstanceBank.from_coco(ann_file, min_area=0)
    assert ei.value.file == str(ann_file) and ei.value.field == "images[1].width" and str(img) in ei.value.message


@pytest.mark.parametrize("problem", ["missing", "truncated"])
def test_a_bad_image_names_the_json_file_and_its_entry(tmp_path, problem):
    """Like ``synthloop terse``: the COCO file and ``images[i].file_name``, with the image path."""
    ann_file = _coco(tmp_path, n_images=3)
    img = tmp_path / "coco" / "images" / "img02.png"
    if problem == "missing":
        img.unlink()
    else:
        img.write_bytes(img.read_bytes()[: img.stat().st_size // 2])
    with pytest.raises(InputError) as ei:
        InstanceBank.from_coco(ann_file, min_area=0)
    assert ei.value.file == str(ann_file) and ei.value.field == "images[2].file_name"
    assert str(img) in ei.value.message and ("not found" if problem == "missing" else "truncated") in ei.value.message
    assert str(ei.value).startswith(f"{ann_file}: field images[2].file_name: ")


def _rgba(h, w, alpha):
    out = np.zeros((h, w, 4), np.uint8)
    out[..., :3] = 200
    out[..., 3] = alpha
    return out


def test_rgba_folder(tmp_path):
    root = tmp_path / "cutouts"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    a = np.zeros((20, 30), np.uint8)
    a[5:15, 4:20] = 255
    a[5, 4] = 100  # soft edge pixel is kept in the alpha
    (root / "cat" / "a.png").write_bytes(encode_png(_rgba(20, 30, a)))
    (root / "dog" / "b.png").write_bytes(encode_png(_rgba(20, 30, a)))
    column = np.zeros((20, 30), np.uint8)
    column[:, 0] = 255  # 20 px
    (root / "dog" / "c.png").write_bytes(encode_png(_rgba(20, 30, column)))
    bank = InstanceBank.from_rgba_folder(root, min_area=30, categories=[Category(5, "dog")])
    assert [(c.id, c.name) for c in bank.categories] == [(5, "dog"), (6, "cat")]
    assert [i.source_id for i in bank] == ["rgba:cat/a.png", "rgba:dog/b.png"]
    assert bank.report.dropped["too_small"] == ["rgba:dog/c.png"]
    inst = bank[0]
    assert inst.category_name == "cat" and inst.offset == (4, 5) and inst.alpha.shape == (10, 16)
    assert inst.alpha[0, 0] == pytest.approx(100 / 255) and inst.alpha[1, 1] == 1.0
    assert bank.by_category == {6: [0], 5: [1]}
    ds = bank_to_dataset(bank)
    assert ds.images[0].annotations[0].mask.sum() == 10 * 16 - 1  # the soft pixel is below 0.5

    (root / "cat" / "opaque.png").write_bytes(encode_png(np.zeros((5, 5, 3), np.uint8)))
    with pytest.raises(InputError, match="no alpha channel") as ei:
        InstanceBank.from_rgba_folder(root)
    assert ei.value.file == str(root / "cat" / "opaque.png")
    (root / "cat" / "opaque.png").write_bytes(encode_png(_rgba(5, 5, 0)))
    with pytest.raises(InputError, match="fully transparent"):
        InstanceBank.from_rgba_folder(root)


def _pair_tree(tmp_path):
    root = tmp_path / "pairs"
    (root / "mug" / "masks").mkdir(parents=True)
    (root / "bottle").mkdir()
    img = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    m = np.zeros((24, 32), np.uint8)
    m[4:20, 6:16] = 1
    (root / "mug" / "one.png").write_bytes(encode_png(img))
    (root / "mug" / "masks" / "one.png").write_bytes(encode_png(m))  # 0/1 mask in masks/
    (root / "bottle" / "two.jpg").write_bytes(encode_jpeg(img))
    (root / "bottle" / "two_mask.png").write_bytes(encode_png(m * 255))  # 0/255 mask beside
    return root, img, m.astype(bool)


def test_mask_pairs_both_conventions_and_round_trip(tmp_path):
    root, img, m = _pair_tree(tmp_path)
    bank = InstanceBank.from_mask_pairs(root, min_area=0)
    assert [i.source_id for i in bank] == ["pair:bottle/two.jpg", "pair:mug/one.png"]
    assert [c.name for c in bank.categories] == ["bottle", "mug"]
    np.testing.assert_array_equal(bank[1].rgb, img[4:20, 6:16])
    ds = bank_to_dataset(bank)
    assert [im.file_name for im in ds.images] == ["bottle/two.jpg", "mug/one.png"]
    for im in ds.images:
        np.testing.assert_array_equal(im.annotations[0].mask, m)


@pytest.mark.parametrize("problem", ["size", "empty", "missing", "truncated"])
def test_mask_pair_errors_name_the_file(tmp_path, problem):
    root, _, m = _pair_tree(tmp_path)
    mask_path = root / "mug" / "masks" / "one.png"
    if problem == "size":
        mask_path.write_bytes(encode_png(np.ones((10, 10), np.uint8)))
        match, bad, field = "mask is 10x10, its image one.png is 32x24", mask_path, "size"
    elif problem == "empty":
        mask_path.write_bytes(encode_png(np.zeros((24, 32), np.uint8)))
        match, bad, field = "mask is empty", mask_path, "mask"
    elif problem == "missing":
        mask_path.unlink()
        match, bad, field = "no mask found", root / "mug" / "one.png", "mask"
    else:
        data = (root / "bottle" / "two.jpg").read_bytes()
        (root / "bottle" / "two.jpg").write_bytes(data[: len(data) // 2])
        match, bad, field = "truncated", root / "bottle" / "two.jpg", None
    with pytest.raises(InputError, match=match) as ei:
        InstanceBank.from_mask_pairs(root, min_area=0)
    assert ei.value.file == str(bad) and ei.value.field == field


def test_config_typos_are_errors(tmp_path):
    cfg_file = tmp_path / "bank.yaml"
    cfg_file.write_text("min_area: 10\nbbox_iou_treshold: 0.5\n")
    with pytest.raises(ConfigError, match=r"bank.yaml: field bbox_iou_treshold: unknown key; valid keys here: .*bbox_iou_threshold"):
        load_config(InstanceBankConfig, cfg_file)
    cfg_file.write_text("fill: 1.5\n")
    with pytest.raises(ConfigError, match=r"field fill"):
        load_config(InstanceBankConfig, cfg_file)
    cfg_file.write_text("min_area: 10\nnormalize: true\n")
    cfg = load_config(InstanceBankConfig, cfg_file)
    ann_file = _coco(tmp_path, n_images=2)
    bank = InstanceBank.from_coco(ann_file, config=cfg)
    assert all(i.alpha.shape[0] == i.alpha.shape[1] for i in bank)
    with pytest.raises(ConfigError, match="normalise: unknown key"):
        InstanceBank.from_coco(ann_file, normalise=True)


def test_concat(tmp_path):
    ann_file = _coco(tmp_path, n_images=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = InstanceBank.from_coco(ann_file, min_area=0)
    both = InstanceBank.concat([a, a])
    assert len(both) == 2 * len(a) and both.report.kept == 2 * a.report.kept
    assert len(both.by_category[1]) == 2 * len(a.by_category[1])
    clash = InstanceBank([], [Category(1, "other")])
    with pytest.raises(InputError, match="category id 1"):
        InstanceBank.concat([a, clash])
