"""The scene composition config (compose/config.py; ``test_config.py`` is the top-level config's)."""

import pytest

from synthloop.compose import SceneConfig
from synthloop.config import build_config
from synthloop.errors import ConfigError


def test_config_errors_are_clear():
    with pytest.raises(ConfigError, match=r"placement.*scale: min 0.5 is greater than max 0.1"):
        build_config(SceneConfig, {"placement": {"scale": [0.5, 0.1]}})
    with pytest.raises(ConfigError, match="valid keys here: .*max_iou"):
        build_config(SceneConfig, {"placement": {"max_iuo": 0.3}})
    with pytest.raises(ConfigError, match="unknown blend mode"):
        build_config(SceneConfig, {}, ["blend.modes=[nonee]"])


def test_canvas_is_a_size_not_a_range():
    assert SceneConfig(canvas=(640, 480)).canvas == (640, 480)
