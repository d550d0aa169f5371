import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from synthloop.data.images import encode_jpeg, encode_png, has_alpha, image_size, load_image, load_mask, safe_join
from synthloop.errors import InputError


def _img(h=24, w=32, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, c) if c else (h, w), dtype=np.uint8)


def test_png_round_trip_is_exact_for_every_layout(tmp_path):
    for arr in (_img(), _img(c=4), _img(c=0), _img(c=0) > 128):
        path = tmp_path / "x.png"
        path.write_bytes(encode_png(arr))
        mode = {3: "RGB", 4: "RGBA"}.get(arr.shape[-1] if arr.ndim == 3 else 0, "L")
        back = load_image(path, mode=mode)
        expect = arr.astype(np.uint8) * 255 if arr.dtype == bool else arr
        np.testing.assert_array_equal(back, expect)
        assert back.dtype == np.uint8 and back.flags.writeable


def test_jpeg_encoding_keeps_channel_order(tmp_path):
    arr = np.zeros((16, 16, 3), np.uint8)
    arr[..., 0] = 220  # red
    path = tmp_path / "x.jpg"
    path.write_bytes(encode_jpeg(arr, quality=95))
    back = load_image(path)
    assert back.shape == (16, 16, 3)
    assert abs(int(back[..., 0].mean()) - 220) < 4 and back[..., 2].mean() < 4
    assert load_image(path, mode="RGBA")[..., 3].min() == 255
    assert load_image(path, mode="L").shape == (16, 16)
    with pytest.raises(ValueError):
        encode_jpeg(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError):
        encode_jpeg(np.zeros((4, 4, 3), np.float32))


def test_missing_corrupt_and_truncated_files(tmp_path):
    with pytest.raises(InputError, match="not found") as ei:
        load_image(tmp_path / "nope.png")
    assert ei.value.file == str(tmp_path / "nope.png")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not an image" * 10)
    with pytest.raises(InputError, match="not a readable image") as ei:
        load_image(junk)
    assert ei.value.file == str(junk)
    for ext, data in ((".png", encode_png(_img(64, 64))), (".jpg", encode_jpeg(_img(64, 64)))):
        cut = tmp_path / f"half{ext}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(InputError, match="truncated") as ei:
            load_image(cut)
        assert ei.value.file == str(cut)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` (the pixel data is a stub)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_pixel_limit_is_checked_from_the_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_claiming(60_000, 60_000))
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="too large|over the limit") as ei:
        load_image(bomb)
    assert time.perf_counter() - t0 < 1.0  # refused before decoding 3.6 GP
    assert ei.value.file == str(bomb) and ei.value.field == "size"
    small_bomb = tmp_path / "b2.png"
    small_bomb.write_bytes(_png_claiming(5000, 5000))
    with pytest.raises(InputError, match="25000000 pixels, over the limit of 1000000"):
        load_image(small_bomb, max_pixels=1_000_000)
    ok = tmp_path / "ok.png"
    ok.write_bytes(encode_png(_img(20, 30)))
    with pytest.raises(InputError, match="over the limit of 100"):
        load_image(ok, max_pixels=100)
    assert image_size(ok) == (30, 20)


def test_load_mask_conventions(tmp_path):
    m = np.zeros((10, 12), bool)
    m[2:6, 3:9] = True
    p = tmp_path / "m.png"
    for arr in (m.astype(np.uint8), m.astype(np.uint8) * 255):  # 0/1 and 0/255
        p.write_bytes(encode_png(arr))
        np.testing.assert_array_equal(load_mask(p), m)
    soft = m.astype(np.uint8) * 255
    soft[0, 0] = 40  # faint noise in a 0/255 mask is background
    p.write_bytes(encode_png(soft))
    np.testing.assert_array_equal(load_mask(p), m)
    pal = Image.fromarray(m.astype(np.uint8) * 3, mode="L").convert("P")  # palette index 3 on 0
    pal.save(p)
    np.testing.assert_array_equal(load_mask(p), m)
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 3] = m * 255
    p.write_bytes(encode_png(rgba))
    np.testing.assert_array_equal(load_mask(p), m)
    assert has_alpha(p)
    p.write_bytes(encode_png(_img()))
    assert not has_alpha(p)


@pytest.mark.parametrize("name", ["../x.jpg", "a/../../x.jpg", "/etc/passwd", "C:\\x.jpg", "C:x.jpg", "\\\\server\\share\\x.jpg", "..\\x.jpg", "", "  "])
def test_safe_join_refuses(tmp_path, name):
    with pytest.raises(InputError) as ei:
        safe_join(tmp_path, name, file="ann.json", field="images[0].file_name")
    assert ei.value.file == "ann.json" and ei.value.field == "images[0].file_name"


def test_safe_join_accepts_relative_names(tmp_path):
    assert safe_join(tmp_path, "a/b.jpg") == tmp_path / "a" / "b.jpg"
    assert safe_join(tmp_path, "./a..b.jpg") == tmp_path / "a..b.jpg"
    assert safe_join(tmp_path, "imgs\\x.jpg") == tmp_path / "imgs" / "x.jpg"  # written on Windows
