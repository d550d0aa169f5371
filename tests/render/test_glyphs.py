import pytest
from render_helpers import FONT

from synthloop.errors import InputError
from synthloop.render import RenderConfig, Renderer, bundled_font_dir, find_fonts


def test_unreadable_font_names_the_file(tmp_path):
    bad = tmp_path / "broken.ttf"
    bad.write_bytes(b"definitely not a font")
    with pytest.raises(InputError, match="broken.ttf"):
        find_fonts([bad])
    with pytest.raises(InputError, match="broken.ttf"):
        Renderer(RenderConfig(fonts=[str(bad)]))
    with pytest.raises(InputError, match="broken.ttf"):  # a folder whose only font is broken
        find_fonts([tmp_path])


def test_font_folder_errors(tmp_path):
    with pytest.raises(InputError, match="no font files"):
        find_fonts([tmp_path])
    with pytest.raises(InputError, match="not found"):
        find_fonts([tmp_path / "missing"])
    with pytest.raises(InputError, match="no glyph for '一'"):
        find_fonts([FONT], chars="0一")
    assert find_fonts([bundled_font_dir()], chars="0") and find_fonts([FONT]) == [bundled_font_dir() / "DejaVuSans.ttf"]
