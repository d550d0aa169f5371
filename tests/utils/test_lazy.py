import pytest

import synthloop.compose as compose
from synthloop.utils.lazy import lazy_exports


def test_unknown_names_are_attribute_errors_and_known_ones_are_cached():
    namespace: dict = {}
    getattr_, dir_ = lazy_exports("synthloop.functional", {"warp": "geometry"}, namespace)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        getattr_("nope")
    from synthloop.functional.geometry import warp

    assert getattr_("warp") is warp and namespace["warp"] is warp
    assert "warp" in dir_()


def test_package_exports_resolve():
    assert "paste_batch" in dir(compose)
    with pytest.raises(AttributeError):
        compose.not_an_export  # noqa: B018
