"""``jsonable``: the fast path gives exactly what the field-naming path gives, and an unwritable
value is still an InputError naming the file and the field."""

import enum
import json
from pathlib import Path

import numpy as np
import pytest

from synthloop.data._io import _jsonable_named, jsonable
from synthloop.errors import InputError


class Kind(enum.IntEnum):
    A = 3


def test_fast_path_equals_the_named_path():
    value = {
        "objects": [{"scale": np.float32(0.5), "m": np.eye(2), "flip": np.bool_(True), "i": np.int64(7), "t": (1, 2.5)} for _ in range(3)],
        "path": Path("a/b.png"),
        "kind": Kind.A,
        1: None,
        "nested": [[], {}, ("x", [np.uint8(255)])],
        "f64": np.float64(0.1),
    }
    fast, named = jsonable(value, "attributes"), _jsonable_named(value, "attributes", None)
    assert fast == named and json.dumps(fast) == json.dumps(named)
    assert type(fast["objects"][0]["scale"]) is float and fast["objects"][0]["m"] == [[1.0, 0.0], [0.0, 1.0]] and fast["1"] is None


def test_unwritable_value_names_file_and_field():
    with pytest.raises(InputError) as e:
        jsonable({"objects": [{"ok": 1}, {"bad": object()}]}, "images[4].attributes", "out/annotations.json")
    assert "images[4].attributes.objects[1].bad" in str(e.value) and "annotations.json" in str(e.value)
