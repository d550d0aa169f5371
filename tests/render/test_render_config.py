import pytest

from synthloop.config import build_config
from synthloop.errors import ConfigError
from synthloop.render import VARIATIONS, RenderConfig, VariationConfig


def test_variation_config_switches_and_photo_use():
    cfg = VariationConfig()
    assert list(cfg.switches()) == list(VARIATIONS) and cfg.uses_photos
    assert not build_config(VariationConfig, {"background": {"kinds": {"plain": 1, "photo": 0}}}).uses_photos
    assert not build_config(VariationConfig, {"background": {"p": 0}}).uses_photos


def test_variation_ranges_are_checked():
    with pytest.raises(ConfigError, match="camera.*yaw: min 10.0 is greater than max -10.0"):
        build_config(VariationConfig, {"camera": {"yaw": [10, -10]}})
    with pytest.raises(ConfigError, match="augment.crop"):
        build_config(VariationConfig, {"augment": {"crop": [0.0, 1.0]}})
    with pytest.raises(ConfigError, match="occlusion.count"):
        build_config(VariationConfig, {"occlusion": {"count": [-1, 2]}})
    with pytest.raises(ConfigError, match="count: unknown key"):  # what to write is the job's config
        build_config(RenderConfig, {"count": 10})
