"""Procedural glyph renderer with MrGAN-style latent variations.

- :mod:`synthloop.render.glyphs`    font discovery, one-time rasterisation, tile atlas
- :mod:`synthloop.render.config`    :class:`VariationConfig` and the per-variation configs
- :mod:`synthloop.render.params`    :class:`RenderParams`, :class:`TextureParams`, :class:`Stage`, JSON records
- :mod:`synthloop.render.sample`    :func:`sample_params` (explicit ``torch.Generator``)
- :mod:`synthloop.render.photos`    :class:`PhotoSource` (photo-crop backgrounds)
- :mod:`synthloop.render.apply`     the pure batched :func:`apply`
- :mod:`synthloop.render.renderer`  :class:`RenderConfig` and :class:`Renderer`

Writing a dataset (``synthloop render``) is :mod:`synthloop.jobs.render`.
"""

from synthloop.render.apply import apply
from synthloop.render.config import BACKGROUND_KINDS, OCCLUDER_SHAPES, TEXTURE_KINDS, VARIATIONS, VariationConfig
from synthloop.render.glyphs import BUNDLED_FONTS, Glyph, GlyphSet, bundled_font_dir, bundled_fonts, find_fonts, rasterize_glyph
from synthloop.render.params import RenderParams, Stage, TextureParams, identity_params
from synthloop.render.photos import PhotoSource
from synthloop.render.renderer import RenderBatch, RenderConfig, Renderer, ShapeConfig
from synthloop.render.sample import sample_params

__all__ = [
    "BACKGROUND_KINDS",
    "BUNDLED_FONTS",
    "OCCLUDER_SHAPES",
    "TEXTURE_KINDS",
    "VARIATIONS",
    "Glyph",
    "GlyphSet",
    "PhotoSource",
    "RenderBatch",
    "RenderConfig",
    "RenderParams",
    "Renderer",
    "ShapeConfig",
    "Stage",
    "TextureParams",
    "VariationConfig",
    "apply",
    "bundled_font_dir",
    "bundled_fonts",
    "find_fonts",
    "identity_params",
    "rasterize_glyph",
    "sample_params",
]
