import numpy as np
import pytest

from synthloop.data.coco import mask_bbox, write_coco
from synthloop.data.dataset import Annotation, Category, Dataset, ImageEntry
from synthloop.data.images import encode_png, load_image
from synthloop.errors import InputError
from synthloop.report.contact_sheet import CAPTION_HEIGHT, PALETTE, annotated_tile, contact_sheet, load_dataset, write_contact_sheet

H, W = 60, 80


def grey_dataset(root, n=3, box_only=False):
    """``n`` mid-grey images, each with one square object of category 5 (the second category)."""
    cats = [Category(2, "cat"), Category(5, "dog")]
    images = []
    for i in range(n):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "images" / f"{i}.png").write_bytes(encode_png(np.full((H, W, 3), 128, np.uint8)))
        m = np.zeros((H, W), bool)
        m[10:30, 20 + i : 50 + i] = True
        ann = Annotation(5, mask_bbox(m)) if box_only else Annotation(5, mask_bbox(m), mask=m)
        images.append(ImageEntry(i + 1, f"images/{i}.png", W, H, [ann]))
    return Dataset(root=root, categories=cats, images=images)


def test_tile_tints_the_mask_and_draws_box_and_name(tmp_path):
    ds = grey_dataset(tmp_path)
    tile = np.asarray(annotated_tile(ds, 0, tile=160, mask_alpha=0.5))
    assert tile.shape == (120, 160, 3)  # fitted: 80 -> 160 wide, 60 -> 120 tall
    dog = np.asarray(PALETTE[1], np.float32)  # category 5 is the second category
    inside = tile[40, 70].astype(np.float32)  # mask centre, scaled by 2
    assert np.abs(inside - (128 * 0.5 + dog * 0.5)).max() <= 2
    assert np.abs(tile[100, 140].astype(int) - 128).max() <= 1  # far from the object: untouched
    edge = tile[20:60, 40].astype(np.float32)  # left box edge (x = 20 px -> 40)
    assert (np.abs(edge - dog).max(axis=1) <= 2).mean() > 0.5
    assert (np.abs(tile[2:20, 40:100].astype(np.float32) - dog).max(axis=2) <= 2).any()  # name label above the box


def test_sheet_grid_and_png(tmp_path):
    ds = grey_dataset(tmp_path, n=5)
    sheet = contact_sheet(ds, n=4, tile=64)
    pad = 4
    assert sheet.shape == (2 * (64 + CAPTION_HEIGHT + pad) + pad, 2 * (64 + pad) + pad, 3)
    write_coco(ds, tmp_path / "coco", copy_images=True)
    out = write_contact_sheet(tmp_path / "coco", tmp_path / "sheet.png", n=16, tile=64)
    png = load_image(out)
    assert png.shape == (2 * (64 + CAPTION_HEIGHT + pad) + pad, 3 * (64 + pad) + pad, 3)  # 5 images: 3 columns, 2 rows
    assert not list(tmp_path.glob(".sheet.png*"))


def test_box_only_datasets_and_errors(tmp_path):
    ds = grey_dataset(tmp_path, n=1, box_only=True)
    tile = np.asarray(annotated_tile(ds, 0, tile=80))
    assert np.abs(tile[27, 45].astype(int) - 128).max() <= 1  # no mask: the inside is not tinted
    with pytest.raises(InputError, match="no COCO annotations file"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(InputError, match="no images"):
        contact_sheet(Dataset(tmp_path, [], []))
