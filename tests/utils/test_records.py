import pytest

from synthloop.errors import InputError
from synthloop.utils.records import check_same_config, diff_keys


def test_diff_keys_names_nested_paths():
    assert diff_keys({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 5}, "e": 0}) == ["b.c", "b.d", "e"]
    assert diff_keys(1, 2) == ["<root>"] and diff_keys({"a": [1]}, {"a": [1]}) == []


def test_check_same_config_names_every_change_and_what_may_change():
    stored = {"seed": 0, "loop": {"cycles": 2, "lr_s": 0.01}, "eval": {"limit": 5}}
    check_same_config(stored, {"seed": 0, "loop": {"cycles": 4, "lr_s": 0.01}, "eval": {"limit": 9}}, ignore=("loop.cycles", "eval"))
    with pytest.raises(InputError) as e:
        check_same_config(stored, {"seed": 1, "loop": {"cycles": 4, "lr_s": 0.1}, "eval": {"limit": 5}}, ignore=("loop.cycles",), file="run/config.yaml")
    msg = str(e.value)
    assert e.value.field == "loop.lr_s" and e.value.file == "run/config.yaml"
    assert "changed: loop.lr_s: 0.01 -> 0.1, seed: 0 -> 1" in msg and "only loop.cycles may change" in msg
    # long values are shortened, not dumped whole
    with pytest.raises(InputError, match=r"\.\.\. ->"):
        check_same_config({"x": list(range(100))}, {"x": []})
