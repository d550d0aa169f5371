import hashlib
import itertools

import cv2
import numpy as np
import pytest
import torch

from synthloop.compose import digit_scenes as ds
from synthloop.compose.sampler import box_iou
from synthloop.data.backgrounds import BackgroundBank
from synthloop.data.coco import mask_bbox
from synthloop.data.images import load_image
from synthloop.data.mnist import load_mnist, wheels_dir
from synthloop.errors import InputError

SIZES = {"train": 6, "val": 3, "test": 4}


@pytest.fixture(scope="module")
def bank():
    return BackgroundBank("photos")


@pytest.fixture(scope="module")
def train_items(bank):
    return ds.generate_split("train", 6, seed=3, backgrounds=bank)


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """A small benchmark in a private cache (MNIST linked in from the shared cache)."""
    root = tmp_path_factory.mktemp("cache")
    (root / "wheels").symlink_to(wheels_dir(), target_is_directory=True)
    return root, ds.digit_scenes(5, sizes=SIZES, cache_dir=root)


def test_generation_is_deterministic_and_a_shorter_run_is_a_prefix(bank, train_items):
    again = ds.generate_split("train", 4, seed=3, backgrounds=bank)
    for (img_a, entry_a), (img_b, entry_b) in zip(train_items, again):
        assert np.array_equal(img_a, img_b)
        assert entry_a.attributes == entry_b.attributes
        assert [a.bbox for a in entry_a.annotations] == [a.bbox for a in entry_b.annotations]
    other = ds.generate_split("train", 2, seed=4, backgrounds=bank)
    assert not np.array_equal(other[0][0], train_items[0][0])


def test_counts_categories_and_recorded_draws(train_items):
    for image, entry in train_items:
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert 1 <= len(entry.annotations) <= 5
        assert entry.attributes["scene"]["background"]["kind"] == "photo"
        for ann, digit in zip(entry.annotations, entry.attributes["digits"]):
            assert ann.category_id in range(1, 11)
            assert ann.attributes == digit
            assert ds.DIGIT_HEIGHT[0] <= digit["height"] <= ds.DIGIT_HEIGHT[1]
            assert ds.ROTATION[0] <= digit["angle"] <= ds.ROTATION[1]
    labels = load_mnist("train")[1]
    for _, entry in train_items:
        for digit in entry.attributes["digits"]:
            assert digit["category_id"] == int(labels[digit["mnist_index"]]) + 1


def test_boxes_match_masks_lie_inside_and_never_overlap(train_items):
    for _, entry in train_items:
        boxes = []
        for ann in entry.annotations:
            assert ann.has_mask
            assert tuple(ann.bbox) == mask_bbox(ann.rle)
            x, y, w, h = ann.bbox
            assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
            assert h >= 0.8 * ds.DIGIT_HEIGHT[0]  # the alpha > 0.5 box, rotated by at most 10 degrees
            boxes.append((x, y, x + w, y + h))
        for a, b in itertools.combinations(boxes, 2):
            assert box_iou(a, b) == 0.0
        masks = np.stack([a.mask for a in entry.annotations])
        assert masks.sum(0).max() == 1  # no pixel belongs to two digits


def test_digit_pixels_are_tinted_with_contrast(train_items):
    image, entry = train_items[0]
    for ann, digit in zip(entry.annotations, entry.attributes["digits"]):
        core = cv2.erode(ann.mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)  # stroke interiors
        assert core.sum() >= 10
        median = np.median(image[core].astype(np.float64), 0) / 255.0
        assert np.allclose(median, digit["tint"], atol=0.03)  # opaque strokes carry the tint
        luma = np.array([0.299, 0.587, 0.114])
        ring = cv2.dilate(ann.mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~ann.mask
        background = image[ring].astype(np.float64).mean(0) / 255.0
        assert abs(median @ luma - background @ luma) > 0.1


def test_replay_from_the_recorded_attributes_is_exact(bank, train_items):
    for image, entry in train_items[:2]:
        again = ds.replay_scene(entry.attributes, backgrounds=bank)
        assert np.array_equal(again.to_uint8(), image)
        assert [o.box for o in again.objects] == [(a.bbox[0], a.bbox[1], a.bbox[0] + a.bbox[2], a.bbox[1] + a.bbox[3]) for a in entry.annotations]


def test_cached_benchmark_layout_reuse_and_no_digit_shared_between_splits(cached, monkeypatch):
    root, paths = cached
    assert paths.root == ds.cache_folder(5, SIZES, root) and paths.root.name == "v1-seed5-6-3-4"
    data = {s: paths.load(s) for s in ds.SPLITS}
    assert {s: len(d.images) for s, d in data.items()} == SIZES
    assert [c.name for c in data["test"].categories] == [str(d) for d in range(10)]
    assert [c.id for c in data["test"].categories] == list(range(1, 11))
    for split, dataset in data.items():
        used = [(d["mnist_split"], d["mnist_index"]) for im in dataset.images for d in im.attributes["digits"]]
        assert {s for s, _ in used} == {ds.MNIST_SOURCE[split]}
        assert len(used) == len(set(used))  # no digit twice within a split
        assert [a.attributes["mnist_index"] for im in dataset.images for a in im.annotations] == [i for _, i in used]
    # index bookkeeping -> pixels: no digit image of the test split is one of the train/val digits
    def digests(split):
        x = load_mnist(ds.MNIST_SOURCE[split])[0]
        return {hashlib.sha256(x[d["mnist_index"]].numpy().tobytes()).hexdigest() for im in data[split].images for d in im.attributes["digits"]}

    test_digits = digests("test")
    assert not test_digits & digests("train") and not test_digits & digests("val")
    # images on disk are the generated pixels (lossless PNG)
    generated = ds.generate_split("val", 1, seed=5)
    on_disk = load_image(data["val"].image_path(data["val"].images[0]))
    assert np.array_equal(on_disk, generated[0][0])
    # a second call reuses the cache instead of generating again
    monkeypatch.setattr(ds, "generate_split", lambda *a, **k: pytest.fail("regenerated a cached benchmark"))
    assert ds.digit_scenes(5, sizes=SIZES, cache_dir=root) == paths
    assert set(ds.load_digit_scenes(5, sizes=SIZES, cache_dir=root)) == set(ds.SPLITS)


def test_default_sizes_use_the_short_cache_key(tmp_path):
    assert ds.cache_folder(0, None, tmp_path) == tmp_path / "digit_scenes" / f"v{ds.GENERATOR_VERSION}-seed0"
    assert ds.cache_folder(0, {"val": 500}, tmp_path).name == "v1-seed0"


def test_bad_sizes_and_splits_are_input_errors(tmp_path):
    with pytest.raises(InputError) as exc:
        ds.digit_scenes(0, sizes={"train": -1}, cache_dir=tmp_path)
    assert exc.value.field == "sizes.train"
    with pytest.raises(InputError, match="at most 2000 images") as exc:
        ds.digit_scenes(0, sizes={"val": 2001}, cache_dir=tmp_path)
    assert exc.value.field == "sizes.val"
    with pytest.raises(InputError) as exc:
        ds.digit_scenes(0, sizes={"dev": 3}, cache_dir=tmp_path)
    assert exc.value.field == "sizes"
    with pytest.raises(InputError, match="unknown split"):
        ds.generate_split("dev", 1, 0)
    assert not (tmp_path / "digit_scenes").exists() or not any((tmp_path / "digit_scenes").iterdir())


def test_digit_alpha_drops_faint_noise_and_makes_strokes_opaque():
    x = torch.tensor([0.0, 0.05, 0.1, 0.3, 0.5, 0.9, 1.0]).view(1, 1, 1, 7)
    assert torch.allclose(ds.digit_alpha(x).flatten(), torch.tensor([0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0]))


def test_digit_bank_holds_training_digits_only():
    images, labels = load_mnist("train")
    bank = ds.digit_bank(indices=[7, 3, 49_999])
    assert len(bank) == 3
    assert [bank.category_of(i) for i in range(3)] == [int(labels[i]) + 1 for i in (7, 3, 49_999)]
    rgb, alpha = bank.tensor(1)
    assert torch.equal(alpha, ds.digit_alpha(images[3:4])[0])
    assert torch.equal(rgb, torch.ones(3, 28, 28))
    a = ds.digit_bank(indices=[1, 2], generator=torch.Generator().manual_seed(0))
    b = ds.digit_bank(indices=[1, 2], generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.tensor(0)[0], b.tensor(0)[0]) and not torch.equal(a.tensor(0)[0], a.tensor(1)[0])
    with pytest.raises(InputError) as exc:
        ds.digit_bank(indices=[50_000])
    assert exc.value.field == "indices"


def test_digit_bank_reads_nothing_but_the_training_split(monkeypatch):
    requested = []

    def fake_mnist(split, cache_dir=None):
        requested.append(split)
        return torch.rand(5, 1, 28, 28), torch.arange(5)

    monkeypatch.setattr(ds, "load_mnist", fake_mnist)
    bank = ds.digit_bank()
    assert requested == ["train"] and len(bank) == 5
    assert [bank.category_of(i) for i in range(5)] == [1, 2, 3, 4, 5]
