"""Procedural glyph renderer with MrGAN-style latent variations.

- :mod:`synthloop.render.glyphs`      font discovery, one-time rasterisation, tile atlas
- :mod:`synthloop.render.variations`  variation configs, :class:`RenderParams`, sampler, pure batched ``apply``
- :mod:`synthloop.render.renderer`    :class:`Renderer` and :func:`write_dataset` (``synthloop render``)
"""

from synthloop.render.glyphs import BUNDLED_FONTS, Glyph, GlyphSet, bundled_font_dir, bundled_fonts, find_fonts, rasterize_glyph
from synthloop.render.renderer import OutputConfig, RenderBatch, RenderConfig, Renderer, ShapeConfig, write_dataset
from synthloop.render.variations import (
    BACKGROUND_KINDS,
    OCCLUDER_SHAPES,
    TEXTURE_KINDS,
    VARIATIONS,
    PhotoSource,
    RenderParams,
    Stage,
    TextureParams,
    VariationConfig,
    apply,
    identity_params,
    sample_params,
)

__all__ = [
    "BACKGROUND_KINDS",
    "BUNDLED_FONTS",
    "OCCLUDER_SHAPES",
    "TEXTURE_KINDS",
    "VARIATIONS",
    "Glyph",
    "GlyphSet",
    "OutputConfig",
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
    "write_dataset",
]
