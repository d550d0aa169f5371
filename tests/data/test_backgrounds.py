import json
import socket

import numpy as np
import pytest
import torch
from PIL import Image

from synthloop.data.backgrounds import (
    BUILTIN_PHOTO_NAMES,
    PROCEDURAL_KINDS,
    BackgroundBank,
    BackgroundParams,
    builtin_photos,
    check_photo_names,
    checkers,
    identical_builtin_photos,
    linear_gradient,
    photos_showing,
    radial_gradient,
)
from synthloop.errors import InputError


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def mixed_bank():
    return BackgroundBank(["procedural", "photos"])


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "bgs"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)).save(d / "a.png")
    Image.fromarray(rng.integers(0, 256, (50, 40), dtype=np.uint8)).save(d / "sub" / "gray.jpg")
    Image.fromarray(rng.integers(0, 256, (30, 30, 4), dtype=np.uint8)).save(d / "rgba.png")
    (d / "notes.txt").write_text("not an image, and not an image extension either")
    return d


def test_builtin_photos_present():
    photos = builtin_photos()
    assert len(photos) >= 10
    assert {"astronaut", "camera", "china", "flower"} <= set(photos)
    assert all(p.is_file() for p in photos.values())


def test_determinism_and_seed_dependence(mixed_bank):
    a = mixed_bank.sample_params(12, (40, 56), _gen(3))
    b = mixed_bank.sample_params(12, (40, 56), _gen(3))
    assert a == b
    assert torch.equal(mixed_bank.render(a), mixed_bank.render(b))
    c = mixed_bank.sample_params(12, (40, 56), _gen(4))
    assert a != c


def test_replay_from_json_in_a_fresh_bank(mixed_bank, tmp_path):
    params = mixed_bank.sample_params(16, (33, 47), _gen(5))
    assert {"photo", "noise", "perlin"} & set(params.kinds)
    images = mixed_bank.render(params)
    path = tmp_path / "bg.json"
    path.write_text(json.dumps(params.to_dict()))
    restored = BackgroundParams.from_dict(json.loads(path.read_text()), file=str(path))
    assert restored == params
    fresh = BackgroundBank("procedural")  # photos resolve by name even if not among its sources
    assert torch.equal(fresh.render(restored), images)
    # a subset renders to the same pixels as slicing the batch
    assert torch.equal(mixed_bank.render(params.select([3, 0, 7])), images[[3, 0, 7]])
    # the scene renderer's one-image interface gives the same pixels, channels last
    one = mixed_bank.render_one(params.samples[2], params.size)
    assert one.shape == (33, 47, 3) and one.dtype == np.float32
    assert np.array_equal(one, images[2].permute(1, 2, 0).numpy())
    assert mixed_bank.sample_one((33, 47), _gen(5)) == params.samples[0]


@pytest.mark.parametrize("size", [(37, 53), (480, 640), 1, 25])
def test_sizes_and_range(mixed_bank, size):
    n = 3 if size == (480, 640) else 10
    params = mixed_bank.sample_params(n, size, _gen(11))
    out = mixed_bank.render(params)
    hw = (size, size) if isinstance(size, int) else size
    assert out.shape == (n, 3, *hw) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", PROCEDURAL_KINDS)
def test_every_procedural_kind_is_textured(kind):
    bank = BackgroundBank(kind)
    params = bank.sample_params(8, (37, 53), _gen(2))
    assert set(params.kinds) == {kind}
    out = bank.render(params)
    assert out.shape == (8, 3, 37, 53)
    assert (out.flatten(1).std(1) > 0.01).all()
    assert out.min() >= 0 and out.max() <= 1
    if kind == "gradient":
        modes = {s["mode"] for s in bank.sample_params(30, 8, _gen(0)).samples}
        assert modes == {"linear", "radial"}


def test_procedural_functions():
    black, white = torch.zeros(1, 3), torch.ones(1, 3)
    ramp = linear_gradient(black, white, torch.tensor([0.0]), (4, 8))[0, 0]
    assert torch.all(ramp[:, 1:] > ramp[:, :-1]) and torch.allclose(ramp[0], ramp[3])
    assert ramp[0, 0] < 0.1 and ramp[0, -1] > 0.9
    up = linear_gradient(black, white, torch.tensor([90.0]), (8, 4))[0, 0]  # 90 deg: bottom to top
    assert torch.all(up[:-1, 0] > up[1:, 0])
    radial = radial_gradient(black, white, torch.tensor([[0.25, 0.5]]), torch.tensor([0.5]), (20, 40))[0, 0]
    y, x = divmod(int(radial.argmin()), 40)
    assert (y, x) in {(9, 9), (9, 10), (10, 9), (10, 10)}  # darkest at the centre (x=10, y=10 px)
    assert radial[0, -1] == 1.0  # beyond the radius: colour b
    board = checkers(black, white, torch.tensor([0.5]), torch.tensor([0.0]), torch.zeros(1, 2), (4, 4))[0, 0]
    # cells of half the side, aligned on the image centre; the top-left cell has colour a
    expected = torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]])
    assert torch.equal(board, expected)


def test_photos_load_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    bank = BackgroundBank("photos")
    assert len(bank.photos) == len(builtin_photos())
    samples = tuple(bank._sample_photo(name, (24, 32), _gen(i)) for i, name in enumerate(bank.photos))
    out = bank.render(BackgroundParams((24, 32), samples))
    assert out.shape == (len(samples), 3, 24, 32)
    assert (out.flatten(1).std(1) > 0.01).all()
    # a grayscale photo becomes three equal channels
    cam = bank.render(BackgroundParams((24, 32), (bank._sample_photo("camera", (24, 32), _gen(0)),)))
    assert torch.equal(cam[0, 0], cam[0, 1]) and torch.equal(cam[0, 0], cam[0, 2])


def test_crop_boxes_inside_photo_with_bounded_stretch(mixed_bank):
    params = BackgroundBank("photos", scale=(0.2, 0.9)).sample_params(300, (30, 60), _gen(9))
    sizes = {name: Image.open(path).size for name, path in builtin_photos().items()}
    for s in params.samples:
        x0, y0, x1, y1 = s["box"]
        w, h = sizes[s["photo"]]
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        stretch = ((x1 - x0) / (y1 - y0)) / 2.0  # relative to the output aspect 60/30
        assert 3 / 4 - 0.05 < stretch < 4 / 3 + 0.05
    assert {s["flip"] for s in params.samples} == {True, False}


def test_folder_source_renders_exact_crops(folder):
    bank = BackgroundBank(folder)
    assert [p.rsplit("/", 1)[-1] for p in bank.photos] == ["a.png", "rgba.png", "gray.jpg"]
    key = bank.photos[0]
    full = {"kind": "photo", "photo": key, "box": [10, 5, 50, 25], "flip": False}
    out = bank.render(BackgroundParams((20, 40), (full, dict(full, flip=True))))
    pixels = torch.from_numpy(np.array(Image.open(folder / "a.png"))).permute(2, 0, 1).float() / 255
    assert torch.allclose(out[0], pixels[:, 5:25, 10:50], atol=1e-6)
    assert torch.equal(out[1], out[0].flip(-1))
    params = bank.sample_params(20, (37, 53), _gen(0))
    imgs = bank.render(params)
    assert imgs.shape == (20, 3, 37, 53) and imgs.min() >= 0 and imgs.max() <= 1
    assert len({s["photo"] for s in params.samples}) == 3


def test_folder_with_bad_image_names_the_file(folder):
    bad = folder / "sub" / "broken.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(InputError) as exc:
        BackgroundBank(["procedural", folder])
    assert str(bad) in str(exc.value)


def test_truncated_image_fails_at_decode_naming_the_file(folder):
    data = (folder / "a.png").read_bytes()
    cut = folder / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    bank = BackgroundBank(cut)  # the header is intact
    params = bank.sample_params(1, 16, _gen(0))
    with pytest.raises(InputError) as exc:
        bank.render(params)
    assert str(cut) in str(exc.value)


def test_bad_sources_and_params(tmp_path):
    with pytest.raises(InputError, match="field sources"):
        BackgroundBank(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        BackgroundBank(tmp_path / "empty")
    with pytest.raises(InputError, match="field weights"):
        BackgroundBank(["procedural", "photos"], weights=[1.0])
    with pytest.raises(InputError, match="bg.json: field samples\\[0\\].kind"):
        BackgroundParams.from_dict({"size": [8, 8], "samples": [{"kind": "plasma"}]}, file="bg.json")
    with pytest.raises(InputError, match="samples\\[1\\].color_b"):
        good = {"kind": "noise", "seed": 1, "color_a": [0, 0, 0], "color_b": [1, 1, 1]}
        BackgroundParams.from_dict({"size": [8, 8], "samples": [good, dict(good, color_b=[1, 1])]})
    with pytest.raises(InputError, match="samples\\[0\\].box"):
        BackgroundParams.from_dict({"size": [8, 8], "samples": [{"kind": "photo", "photo": "camera", "box": [5, 0, 2, 4], "flip": False}]})
    with pytest.raises(InputError, match="field size"):
        BackgroundParams.from_dict({"size": [0, 8], "samples": []})


def test_zero_weight_source_is_never_drawn():
    bank = BackgroundBank(["noise", "checkers"], weights=[0.0, 1.0])
    assert set(bank.sample_params(50, 8, _gen(0)).kinds) == {"checkers"}


# --------------------------------------------------------------------------- excluded and shared photos


def test_excluded_photos_are_never_drawn():
    bank = BackgroundBank("photos", exclude=["coins", "chelsea"])
    assert "coins" not in bank.photos and "chelsea" not in bank.photos and "moon" in bank.photos
    drawn = {s["photo"] for s in bank.sample_params(400, 32, _gen(1)).samples}
    assert len(drawn) == len(builtin_photos()) - 2 and not drawn & {"coins", "chelsea"}
    assert "coins" in {s["photo"] for s in BackgroundBank("photos").sample_params(400, 32, _gen(1)).samples}  # drawn without exclude
    # params naming an excluded photo (another run's) still render
    assert BackgroundBank("photos", exclude=["coins"]).render_one({"kind": "photo", "photo": "coins", "box": [0, 0, 20, 20], "flip": False}, (8, 8)).shape == (
        8,
        8,
        3,
    )


def test_exclude_names_are_checked():
    with pytest.raises(InputError, match="unknown built-in photo 'coin'; valid names: astronaut, brick") as err:
        BackgroundBank("photos", exclude=["coin"])
    assert err.value.field == "exclude" and "coins" in err.value.message and "flower" in err.value.message
    assert check_photo_names(["coins"]) == ("coins",) and set(BUILTIN_PHOTO_NAMES) >= set(builtin_photos())
    with pytest.raises(InputError, match="every installed built-in photo is excluded"):
        BackgroundBank("photos", exclude=list(builtin_photos()))
    assert BackgroundBank("procedural", exclude=list(builtin_photos())).photos == []  # nothing to leave out of


def test_identical_builtin_photos_compares_decoded_pixels(tmp_path):
    photos = builtin_photos()
    copy = tmp_path / "my_coins.png"
    Image.open(photos["coins"]).convert("RGB").save(copy)  # other bytes (RGB PNG, not grey), the same pixels
    jpeg = tmp_path / "coins.jpg"
    Image.open(photos["coins"]).convert("RGB").save(jpeg, quality=95)  # lossy: not identical
    shifted = np.asarray(Image.open(copy)).copy()
    shifted[0, 0] ^= 1
    Image.fromarray(shifted).save(tmp_path / "shifted.png")
    other = tmp_path / "other.png"
    Image.fromarray(np.zeros((303, 384, 3), np.uint8)).save(other)  # coins' size, other pixels
    found = identical_builtin_photos([copy, jpeg, tmp_path / "shifted.png", other, tmp_path / "missing.png"])
    assert found == {"coins": copy}
    assert identical_builtin_photos([copy], names=["moon"]) == {}
    # with sizes given (as a COCO file lists them) an image of another size is not even opened
    assert identical_builtin_photos([(tmp_path / "missing.png", (10, 10)), (copy, (384, 303))]) == {"coins": copy}


def test_photos_showing_matches_category_names():
    assert photos_showing(["Coins", "box"]) == {"coins": "Coins"}
    assert photos_showing(["euro_coin", "cat"]) == {"chelsea": "cat", "coins": "euro_coin"}
    assert photos_showing(["person"], names=["astronaut", "coins"]) == {"astronaut": "person"}
    assert photos_showing(["0", "1", "grass", "glass"]) == {}  # textures name no subject
