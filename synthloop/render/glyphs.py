"""Glyph masks: font discovery, one-time rasterisation, and the tile atlas the renderer samples.

Fonts come from installed packages (matplotlib bundles the DejaVu, STIX and Computer Modern faces
in ``matplotlib/mpl-data/fonts/ttf``) or from any font files/folders the user names. Each
``(font, character)`` is rasterised once with PIL's FreeType binding at :data:`RASTER_SIZE` pixels
per em and cropped to its ink; RGBA cut-outs (their alpha) or mask images can be added as extra
shapes through the same path. :meth:`GlyphSet.atlas` then resamples every mask once into a square
tile of the size the renderer needs, so all later work is batched torch.

Class names and labels: characters come first, labelled by their position in ``chars`` (so
``"0123456789"`` gives the digit's value), then shapes in order of first appearance.
"""

from __future__ import annotations

import functools
import importlib.util
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from fontTools.ttLib import TTFont, TTLibError
from PIL import ImageFont

from synthloop.data.images import load_image, load_mask
from synthloop.errors import DataUnavailableError, InputError

RASTER_SIZE = 160
"""Pixels per em at which glyphs are rasterised (downsampled once, with area averaging, per tile size)."""

FONT_EXTENSIONS = (".ttf", ".otf", ".ttc")

# Text faces of matplotlib's font folder whose digits and letters sit at their usual code points.
# The folder also holds symbol and size-variant faces (cmex10, cmsy10, STIXSize*, STIXNonUni*),
# two "Display" subsets and LastResort, whose character maps send every code point to a fallback
# box; a coverage check alone cannot tell those apart, so the default set is listed here.
BUNDLED_FONTS: tuple[str, ...] = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmti10.ttf", "cmss10.ttf", "cmtt10.ttf",
)  # fmt: skip


def bundled_font_dir() -> Path:
    """matplotlib's bundled TrueType folder (``matplotlib/mpl-data/fonts/ttf``, i.e. under
    ``matplotlib.get_data_path()``), found without importing matplotlib (which takes a third of
    a second)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailableError("matplotlib is not installed; pass font files or folders instead")
    return Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf"


def bundled_fonts() -> list[Path]:
    """The :data:`BUNDLED_FONTS` present in the installed matplotlib."""
    root = bundled_font_dir()
    found = [root / name for name in BUNDLED_FONTS if (root / name).is_file()]
    if not found:
        raise DataUnavailableError(f"no bundled fonts found in {root}; pass font files or folders instead")
    return found


@functools.lru_cache(maxsize=256)
def _coverage(path: Path) -> frozenset[int]:
    """Code points the font's character map covers (``InputError`` when it cannot be read)."""
    try:
        with TTFont(path, lazy=True, fontNumber=0) as font:
            cmap = font.getBestCmap() or {}
            return frozenset(cmap)
    except (TTLibError, OSError, AssertionError, KeyError, ValueError, TypeError, IndexError) as e:
        raise InputError(f"not a readable TrueType/OpenType font ({type(e).__name__}: {e})", file=path) from None


def _missing(path: Path, chars: str) -> str:
    cover = _coverage(path)
    return "".join(c for c in chars if ord(c) not in cover)


def find_fonts(sources: Sequence[str | Path] = (), chars: str = string.digits) -> list[Path]:
    """Resolve font sources to font files that cover every character of ``chars``.

    Args:
        sources: font files and/or folders (searched recursively for ``.ttf``/``.otf``/``.ttc``).
            Empty: matplotlib's bundled text faces (:func:`bundled_fonts`).
        chars: the characters that will be rendered.
    Returns:
        Font paths, sorted within each folder, duplicates removed.
    Raises:
        InputError: a missing path, an unreadable font file, a named font file without one of the
            characters, a folder without fonts or without any font covering ``chars``.
    """
    if not sources:
        return bundled_fonts()
    out: list[Path] = []
    for src in sources:
        path = Path(src).expanduser()
        if path.is_file():
            missing = _missing(path, chars)
            if missing:
                raise InputError(f"font has no glyph for {missing!r}", file=path, field="fonts")
            out.append(path)
        elif path.is_dir():
            files = sorted((p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FONT_EXTENSIONS), key=lambda p: p.as_posix())
            if not files:
                raise InputError(f"no font files ({', '.join(FONT_EXTENSIONS)}) in this folder", file=path, field="fonts")
            usable = [p for p in files if not _missing(p, chars)]
            if not usable:
                raise InputError(f"none of the {len(files)} fonts in this folder has glyphs for all of {chars!r}", file=path, field="fonts")
            out.extend(usable)
        else:
            raise InputError("font file or folder not found", file=path, field="fonts")
    return list(dict.fromkeys(out))


@functools.lru_cache(maxsize=4096)
def rasterize_glyph(font: Path, char: str, size: int = RASTER_SIZE) -> np.ndarray:
    """``uint8 (h, w)`` coverage mask of ``char`` in ``font`` at ``size`` px per em, cropped to its ink.

    Cached: each ``(font, char, size)`` is rasterised once per process.

    Raises:
        InputError: the font cannot be loaded, or the glyph has no ink (a space, an empty glyph).
    """
    try:
        face = ImageFont.truetype(str(font), size=int(size))
        bitmap = face.getmask(char, mode="L")
    except OSError as e:
        raise InputError(f"cannot load the font ({e})", file=font) from None
    w, h = bitmap.size
    mask = np.asarray(bitmap, dtype=np.uint8).reshape(h, w) if w * h else np.zeros((0, 0), np.uint8)
    return _crop_ink(mask, f"glyph {char!r} has no ink", font)


def _crop_ink(mask: np.ndarray, message: str, file: Path) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        raise InputError(message, file=file)
    return np.ascontiguousarray(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])


def load_shape(path: str | Path) -> np.ndarray:
    """``uint8 (h, w)`` mask of a shape image, cropped to its ink: the alpha channel of an image
    with transparency, else the image read as a mask (see :func:`synthloop.data.images.load_mask`)."""
    path = Path(path)
    rgba = load_image(path, mode="RGBA")
    alpha = rgba[..., 3]
    if alpha.min() == 255:  # no transparency: a mask image
        alpha = load_mask(path).astype(np.uint8) * 255
    return _crop_ink(alpha, "shape image has no opaque pixels", path)


def safe_class_name(name: str) -> str:
    """A folder-safe class name: letters, digits, ``-`` and ``_`` kept; anything else as ``u<hex>``."""
    return "".join(c if (c.isascii() and (c.isalnum() or c in "-_")) else f"u{ord(c):04x}" for c in name)


@dataclass(frozen=True)
class Glyph:
    """One renderable mask: a character of a font, or a shape image.

    ``font`` is the font's file name (``None`` for shapes); ``source`` the file it came from.
    """

    name: str  # class name
    label: int
    source: Path
    font: str | None = None
    char: str | None = None

    @property
    def key(self) -> dict[str, str]:
        """How params records name this glyph: ``{"font", "char"}`` or ``{"shape", "file"}``."""
        if self.char is not None:
            return {"font": str(self.font), "char": self.char}
        return {"shape": self.name, "file": self.source.name}


class GlyphSet:
    """The glyphs a renderer draws from, with their classes and a tile atlas per tile size.

    Args:
        fonts: font files (see :func:`find_fonts`).
        chars: characters rendered in every font; class ``chars[i]`` has label ``i``.
        shapes: ``(class name, image path)`` pairs added after the characters.
    """

    def __init__(self, fonts: Sequence[str | Path] = (), chars: str = string.digits, shapes: Iterable[tuple[str, str | Path]] = ()):
        shapes = list(shapes)
        if not chars and not shapes:
            raise InputError("nothing to render: give characters and/or shapes", field="chars")
        if len(set(chars)) != len(chars):
            raise InputError(f"characters repeat in {chars!r}", field="chars")
        if any(c.isspace() for c in chars):
            raise InputError(f"whitespace has no glyph to render ({chars!r})", field="chars")
        self.classes: list[str] = list(chars)
        self.glyphs: list[Glyph] = []
        self._masks: list[np.ndarray] = []
        if chars:
            paths = [Path(p) for p in fonts] if fonts else find_fonts((), chars)
            names: dict[str, Path] = {}
            for p in paths:
                if p.name in names and names[p.name] != p:
                    raise InputError(f"two fonts share the file name {p.name!r} ({names[p.name]} and {p}); params name fonts by file name", file=p, field="fonts")
                names[p.name] = p
                missing = _missing(p, chars)
                if missing:
                    raise InputError(f"font has no glyph for {missing!r}", file=p, field="fonts")
            for label, c in enumerate(chars):
                for p in names.values():
                    self._add(Glyph(c, label, p, font=p.name, char=c), rasterize_glyph(p, c))
        for name, file in shapes:
            if not name:
                raise InputError("a shape needs a class name", file=file, field="shapes")
            if name not in self.classes:
                self.classes.append(name)
            self._add(Glyph(name, self.classes.index(name), Path(file)), load_shape(file))
        folders = [safe_class_name(c) for c in self.classes]
        if len(set(folders)) != len(folders):
            raise InputError(f"class names {self.classes} collide as folder names {folders}", field="shapes")
        self._by_key = {tuple(sorted(g.key.items())): i for i, g in enumerate(self.glyphs)}
        self._atlases: dict[tuple[int, float], tuple[torch.Tensor, torch.Tensor]] = {}

    def _add(self, glyph: Glyph, mask: np.ndarray) -> None:
        self.glyphs.append(glyph)
        self._masks.append(mask)

    def __len__(self) -> int:
        return len(self.glyphs)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def labels(self) -> torch.Tensor:
        """``Tensor[N]`` (long) label of every glyph."""
        return torch.tensor([g.label for g in self.glyphs], dtype=torch.long)

    def mask(self, index: int) -> np.ndarray:
        """The high-resolution ``uint8 (h, w)`` mask of glyph ``index``."""
        return self._masks[index]

    def index_of(self, key: dict[str, str], *, field: str | None = None) -> int:
        """Glyph index from its :attr:`Glyph.key` (``InputError`` when this set has no such glyph)."""
        hit = self._by_key.get(tuple(sorted((str(k), str(v)) for k, v in key.items())))
        if hit is None:
            raise InputError(f"glyph {key} is not among this renderer's fonts, characters and shapes", field=field)
        return hit

    def atlas(self, tile: int, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Tiles ``Tensor[N, 1, tile, tile]`` (float32 masks in [0, 1], one per glyph) and their
        centres of mass ``Tensor[N, 2]`` (x, y in tile pixels, continuous coordinates).

        Each mask is scaled (area averaging, keeping its aspect ratio) so its longer side spans
        ``fill * tile`` pixels and placed near the tile centre; the renderer puts the centre of
        mass (MNIST's convention) at the canvas centre, so the whole-pixel placement in the tile
        costs no accuracy. Built once per ``(tile, fill)``.
        """
        key = (int(tile), float(fill))
        hit = self._atlases.get(key)
        if hit is None:
            tiles, centers = zip(*(_to_tile(m, int(tile), float(fill)) for m in self._masks))
            hit = (torch.from_numpy(np.stack(tiles))[:, None], torch.tensor(centers, dtype=torch.float64))
            self._atlases[key] = hit
        return hit


def _to_tile(mask: np.ndarray, tile: int, fill: float) -> tuple[np.ndarray, tuple[float, float]]:
    h, w = mask.shape
    scale = fill * tile / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = cv2.resize(mask.astype(np.float32) / 255.0, (nw, nh), interpolation=cv2.INTER_AREA)
    total = float(small.sum())
    ys, xs = np.indices(small.shape, dtype=np.float64)
    cy = float((ys * small).sum() / total) + 0.5 if total > 0 else nh / 2
    cx = float((xs * small).sum() / total) + 0.5 if total > 0 else nw / 2
    y0 = min(max(round(tile / 2 - cy), 0), tile - nh)
    x0 = min(max(round(tile / 2 - cx), 0), tile - nw)
    out = np.zeros((tile, tile), np.float32)
    out[y0 : y0 + nh, x0 : x0 + nw] = np.clip(small, 0.0, 1.0)
    return out, (x0 + cx, y0 + cy)
