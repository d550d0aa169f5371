"""The shifted test set of the digits-in-scenes benchmark: deterministic, shifted as documented."""

from __future__ import annotations

import numpy as np
import pytest

from synthloop.compose.digit_scenes_shifted import SHIFTS, generate_shifted, load_shifted_test
from synthloop.data.mnist import wheels_dir
from synthloop.errors import InputError


@pytest.mark.parametrize("shift", sorted(SHIFTS))
def test_deterministic_prefix_and_shifted_statistics(shift):
    spec = SHIFTS[shift]
    a = generate_shifted(6, 0, shift=shift)
    b = generate_shifted(4, 0, shift=shift)
    for (ia, ea), (ib, eb) in zip(a, b):  # a shorter set is a prefix of a longer one, bit for bit
        assert np.array_equal(ia, ib) and ea.attributes == eb.attributes
    c = generate_shifted(2, 1, shift=shift)
    assert not np.array_equal(a[0][0], c[0][0])
    for image, entry in a:
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert 1 <= len(entry.annotations) <= spec.digits[1]
        kind = entry.attributes["scene"]["background"]["kind"]
        assert (kind == "photo") == (spec.backgrounds == ("photos",))  # severe: unseen, procedural backgrounds
        for obj in entry.attributes["scene"]["objects"]:
            assert obj["blend"]["options"]["sigma"] == spec.blur
        for ann in entry.annotations:
            x, y, w, h = ann.bbox
            assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128
            assert spec.height[0] <= ann.attributes["height"] <= spec.height[1]
            assert h <= spec.height[1] + 6  # smaller than the real set's 20-50 px digits (rotation adds a little)
            assert ann.attributes["mnist_split"] == "test"
    with pytest.raises(InputError):
        generate_shifted(-1, shift=shift)


def test_presets_differ_and_unknown_preset_is_an_input_error():
    mild, severe = generate_shifted(3, 0, shift="mild"), generate_shifted(3, 0, shift="severe")
    assert not any(np.array_equal(m[0], s[0]) for m, s in zip(mild, severe))
    assert generate_shifted(2, 0)[0][1].attributes == mild[0][1].attributes  # mild is the default
    with pytest.raises(InputError, match="'mild'") as err:
        generate_shifted(2, 0, shift="extreme")
    assert err.value.field == "shift"


def test_load_is_cached_and_readable(tmp_path):
    (tmp_path / "wheels").symlink_to(wheels_dir(), target_is_directory=True)  # MNIST from the shared cache
    ds = load_shifted_test(0, 3, cache_dir=tmp_path)
    again = load_shifted_test(0, 3, cache_dir=tmp_path)
    assert len(ds.images) == len(again.images) == 3 and ds.num_annotations == again.num_annotations > 0
    assert all(ds.image_path(e).is_file() for e in ds.images)
    severe = load_shifted_test(0, 3, shift="severe", cache_dir=tmp_path)  # each preset has its own cache folder
    assert ds.images[0].attributes != severe.images[0].attributes
