from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthloop.data.folders import check_same_classes, read_image_folder, to_uint8, write_image_folder
from synthloop.errors import InputError


def _save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _grey(value: int, size=(28, 28)) -> np.ndarray:
    return np.full(size, value, np.uint8)


def _make(root: Path, classes=("a", "b"), per_class=2, size=(28, 28)) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            _save(root / name / f"{i}.png", _grey(10 * c + i + 1, size))
    return root


def test_reads_class_folders_in_sorted_order(tmp_path):
    root = _make(tmp_path / "real", classes=("seven", "one"), per_class=2)
    f = read_image_folder(root)
    assert f.classes == ["one", "seven"]
    assert f.images.shape == (4, 1, 28, 28) and f.images.dtype == torch.float32
    assert f.labels.tolist() == [0, 0, 1, 1]
    assert f.files == ["one/0.png", "one/1.png", "seven/0.png", "seven/1.png"]
    # pixel values come through exactly: "one" was class 1 when written -> values 11, 12
    assert torch.equal(f.images[0, 0, 0, 0] * 255, torch.tensor(11.0))
    assert f.masks is None and f.channels == 1 and f.size == (28, 28)


def test_unlabelled_folder(tmp_path):
    for i in range(3):
        _save(tmp_path / "u" / f"{i}.png", _grey(i))
    f = read_image_folder(tmp_path / "u")
    assert f.labels is None and f.classes == [] and len(f) == 3


def test_rgb_and_channel_conversion(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    _save(tmp_path / "c" / "x" / "0.png", rgb)
    _save(tmp_path / "c" / "x" / "1.png", rgb)
    assert read_image_folder(tmp_path / "c").images.shape == (2, 3, 8, 8)
    grey = read_image_folder(tmp_path / "c", channels=1)
    assert grey.images.shape == (2, 1, 8, 8)
    assert abs(float(grey.images[0, 0, 0, 0]) - 76 / 255) < 2 / 255  # ITU-R 601 luma of pure red


def test_different_sizes_is_an_error_naming_the_file(tmp_path):
    root = _make(tmp_path / "s")
    bad = _save(root / "b" / "big.png", _grey(3, (32, 32)))
    with pytest.raises(InputError, match="32x32") as e:
        read_image_folder(root, what="synthetic")
    assert e.value.file == str(bad) and e.value.field == "size"
    assert "a/0.png" in str(e.value) and "synthetic" in str(e.value)


def test_different_channel_counts_is_an_error_unless_converted(tmp_path):
    root = _make(tmp_path / "s")
    bad = _save(root / "b" / "rgb.png", np.zeros((28, 28, 3), np.uint8))
    with pytest.raises(InputError, match="3 channel") as e:
        read_image_folder(root)
    assert e.value.file == str(bad) and e.value.field == "channels"
    assert read_image_folder(root, channels=3).images.shape == (5, 3, 28, 28)


def test_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty") as e:
        read_image_folder(tmp_path / "empty", what="real")
    assert e.value.file == str(tmp_path / "empty") and "real" in str(e.value)
    root = _make(tmp_path / "one_empty_class")
    (root / "c").mkdir()
    (root / "c" / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="'c'.*no images") as e:
        read_image_folder(root)
    assert e.value.file == str(root / "c")
    with pytest.raises(InputError, match="not found"):
        read_image_folder(tmp_path / "missing")


def test_mixed_layout_is_an_error(tmp_path):
    root = _make(tmp_path / "m")
    _save(root / "loose.png", _grey(1))
    with pytest.raises(InputError, match="mixes class subfolders"):
        read_image_folder(root)


def test_unreadable_image(tmp_path):
    root = _make(tmp_path / "r")
    (root / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="not a readable image") as e:
        read_image_folder(root)
    assert e.value.file.endswith("broken.png")


def test_mismatched_label_sets(tmp_path):
    real = read_image_folder(_make(tmp_path / "real", classes=("cat", "dog")))
    syn = read_image_folder(_make(tmp_path / "syn", classes=("cat", "dog", "emu")))
    with pytest.raises(InputError, match="only in the synthetic folder .*: emu") as e:
        check_same_classes(real, syn)
    assert e.value.field == "classes" and str(tmp_path / "syn") in str(e.value)
    check_same_classes(real, read_image_folder(_make(tmp_path / "syn2", classes=("dog", "cat"))))
    unlabelled = tmp_path / "u"
    _save(unlabelled / "0.png", _grey(0))
    check_same_classes(read_image_folder(unlabelled), syn)  # unlabelled real data is fine


def test_masks_are_read_in_order_and_checked(tmp_path):
    root = _make(tmp_path / "s", per_class=1)
    m = np.zeros((28, 28), np.uint8)
    m[:14] = 255
    _save(tmp_path / "m" / "a" / "0.png", m)
    _save(tmp_path / "m" / "b" / "0.bmp", 255 - m)
    f = read_image_folder(root, masks=tmp_path / "m")
    assert f.masks.shape == (2, 1, 28, 28)
    assert f.masks[0, 0, :14].eq(1).all() and f.masks[0, 0, 14:].eq(0).all()
    assert f.masks[1, 0, :14].eq(0).all() and f.masks[1, 0, 14:].eq(1).all()
    (tmp_path / "m" / "b" / "0.bmp").unlink()
    with pytest.raises(InputError, match="no mask for image b/0.png"):
        read_image_folder(root, masks=tmp_path / "m")
    _save(tmp_path / "m" / "b" / "0.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(InputError, match="mask is 10x10"):
        read_image_folder(root, masks=tmp_path / "m")


def test_write_image_folder_round_trip_and_replaces(tmp_path):
    root = _make(tmp_path / "s", classes=("a", "b"), per_class=2)
    f = read_image_folder(root)
    out = write_image_folder(tmp_path / "out" / "refined", 1.0 - f.images, f.files)
    back = read_image_folder(out)
    assert back.files == f.files and back.classes == f.classes
    assert torch.equal(back.images, 1.0 - f.images)
    # a second write replaces the folder as a whole
    write_image_folder(out, f.images[:1], ["only/one.jpg"])
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == ["only/one.png"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_write_image_folder_refuses_escaping_names(tmp_path):
    with pytest.raises(InputError, match="escapes"):
        write_image_folder(tmp_path / "o", torch.zeros(1, 1, 4, 4), ["../evil.png"])
    assert not (tmp_path / "o").exists() and not (tmp_path / "evil.png").exists()


def test_to_uint8_rounds_and_clamps():
    x = torch.tensor([[[[-0.5, 0.0, 0.5, 1.0, 2.0]]]])
    assert to_uint8(x).tolist() == [[[0, 0, 128, 255, 255]]]
