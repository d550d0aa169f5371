import pytest
import torch
from render_helpers import make_config

from synthloop.errors import InputError
from synthloop.render import Renderer


def test_bad_records_name_the_field(photo_dir):
    r = Renderer(make_config(photo_dir))
    rec = r.to_records(r.sample(1, torch.Generator().manual_seed(0)))[0]
    with pytest.raises(InputError, match=r"\[0\]\.glyph"):
        r.from_records([{**rec, "glyph": {"font": "nope.ttf", "char": "3"}}])
    with pytest.raises(InputError, match=r"\[0\]\.camera\.yaw"):
        r.from_records([{**rec, "variations": ["camera"], "camera": {"yaw": "x", "pitch": 0, "roll": 0, "focal": 2}}])
