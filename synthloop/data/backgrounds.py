"""Background sources: procedural textures, photographs bundled with installed packages, and
user folders of images, behind one replayable :class:`BackgroundBank`.

Sampling and rendering are separate. :meth:`BackgroundBank.sample_params` draws everything random
from an explicit generator into :class:`BackgroundParams` (one JSON-ready dict per image), and
:meth:`BackgroundBank.render` turns those into pixels deterministically, so a background replays bit
for bit from its params. Per-image dicts by ``kind``:

- ``noise``: ``seed``, ``color_a``, ``color_b`` -- i.i.d. uniform per pixel and channel between the colours.
- ``gradient``: ``mode`` ``"linear"`` (``angle`` in degrees) or ``"radial"`` (``center`` [x, y] as
  fractions of the width/height, ``radius`` as a fraction of the diagonal), ``color_a``, ``color_b``.
- ``checkers``: ``cell`` (fraction of the shorter side), ``angle`` (degrees), ``phase`` [u, v] (in
  cells), ``color_a``, ``color_b``.
- ``perlin``: ``seed``, ``frequency`` (lattice cells across the shorter side at the coarsest
  octave), ``octaves``, ``persistence``, ``color_a``, ``color_b`` -- fractal value noise mapped
  between the two colours.
- ``photo``: ``photo`` (a built-in photo name or an image path), ``box`` [x0, y0, x1, y1] (integer
  pixel crop, end-exclusive), ``flip`` (horizontal) -- the crop resized (antialiased) to the size.

Colours are [r, g, b] in [0, 1]. Built-in photos are the image files shipped inside the installed
scikit-image (``skimage/data``) and scikit-learn (``sklearn/datasets/images``) packages, read with
PIL straight from the package folders: nothing is downloaded. Each is named by its file stem
(:data:`BUILTIN_PHOTO_NAMES`, e.g. ``coins``); ``BackgroundBank(..., exclude=[...])`` leaves named
ones out of ``"photos"``. Some show objects a user may also paste (``coins`` shows coins,
``chelsea`` a cat: :data:`PHOTO_SUBJECTS`), which would then appear unlabelled in the backgrounds;
:func:`identical_builtin_photos` and :func:`photos_showing` find such photos for a foreground source.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.util
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from synthloop.data.images import IMAGE_EXTENSIONS, image_size, load_image
from synthloop.errors import DataUnavailableError, InputError

Size = tuple[int, int]  # (H, W)

PROCEDURAL_KINDS: tuple[str, ...] = ("noise", "gradient", "checkers", "perlin")
KINDS: tuple[str, ...] = PROCEDURAL_KINDS + ("photo",)

# Natural photographs and textures; synthetic test charts, text pages, masks, microscopy and
# images under 256 px are left out.
_SKIMAGE_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
    "gravel.png", "hubble_deep_field.jpg", "moon.png", "motorcycle_left.png", "rocket.jpg",
)  # fmt: skip
_SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")

BUILTIN_PHOTO_NAMES: tuple[str, ...] = tuple(Path(f).stem for f in _SKIMAGE_PHOTOS + _SKLEARN_PHOTOS)
"""Names of the built-in photos (file stems), whether installed or not."""

PHOTO_SUBJECTS: dict[str, tuple[str, ...]] = {
    "astronaut": ("person", "astronaut"),
    "camera": ("person", "camera", "tripod"),
    "chelsea": ("cat",),
    "coffee": ("cup", "coffee", "mug"),
    "coins": ("coin",),
    "flower": ("flower",),
    "moon": ("moon",),
    "motorcycle_left": ("motorcycle", "motorbike"),
    "rocket": ("rocket",),
}
"""Objects a built-in photo shows (singular, lower case): a foreground category of that name would
appear unlabelled in the photo. Textures (brick, grass, gravel), the Hubble field and the
landscape ``china`` are left out."""

_SEED_HIGH = 2**53  # seeds stay exact even for JSON readers that parse numbers as doubles


def _package_dir(name: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def builtin_photos() -> dict[str, Path]:
    """``name -> path`` of the bundled photos physically present in the installed packages."""
    found: dict[str, Path] = {}
    for package, sub, files in (("skimage", "data", _SKIMAGE_PHOTOS), ("sklearn", "datasets/images", _SKLEARN_PHOTOS)):
        root = _package_dir(package)
        if root is None:
            continue
        for fname in files:
            path = root / sub / fname
            if path.is_file():
                found[Path(fname).stem] = path
    return found


def check_photo_names(names: Iterable[str], field: str = "exclude") -> tuple[str, ...]:
    """``names`` as a tuple once each is a built-in photo name; else :class:`InputError` listing the valid ones."""
    names = tuple(names)
    unknown = [n for n in names if n not in BUILTIN_PHOTO_NAMES]
    if unknown:
        raise InputError(f"unknown built-in photo {unknown[0]!r}; valid names: {', '.join(BUILTIN_PHOTO_NAMES)}", field=field)
    return names


def _pixel_digest(path: Path) -> str | None:
    """SHA-256 of the decoded RGB pixels (with the shape) of ``path``; ``None`` when unreadable."""
    try:
        arr = load_image(path, mode="RGB")
    except InputError:
        return None
    return hashlib.sha256(repr(arr.shape).encode() + arr.tobytes()).hexdigest()


def identical_builtin_photos(images: Iterable[Path | tuple[Path, tuple[int, int]]], names: Iterable[str] | None = None) -> dict[str, Path]:
    """``{photo name: image}`` for the built-in photos (``names``, default every installed one)
    whose decoded RGB pixels equal those of one of ``images``.

    ``images`` are paths, or ``(path, (width, height))`` when the size is known (e.g. from a COCO
    file), so that only images of a photo's size are opened and decoded; the pixels are compared
    by SHA-256 (a JPEG re-encode of a photo is not identical and is not found). Unreadable and
    missing files are skipped: their own reader reports them.
    """
    photos = builtin_photos()
    wanted = [n for n in (photos if names is None else names) if n in photos]
    by_size: dict[tuple[int, int], list[str]] = {}
    for n in wanted:
        by_size.setdefault(image_size(photos[n]), []).append(n)
    digests: dict[str, str | None] = {}
    found: dict[str, Path] = {}
    for item in images:
        path, size = (item, None) if isinstance(item, (str, Path)) else item
        path = Path(path)
        if size is None:
            try:
                size = image_size(path)
            except InputError:
                continue
        candidates = [n for n in by_size.get(tuple(size), []) if n not in found]
        if not candidates:
            continue
        digest = _pixel_digest(path)
        for n in candidates:
            if n not in digests:
                digests[n] = _pixel_digest(photos[n])
            if digest is not None and digest == digests[n]:
                found[n] = path
    return found


def _singular(word: str) -> str:
    word = word.strip().lower()
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def photos_showing(categories: Iterable[str], names: Iterable[str] | None = None) -> dict[str, str]:
    """``{photo name: category}`` for the built-in photos (``names``, default all) that show an
    object named like one of ``categories`` (:data:`PHOTO_SUBJECTS`; plural and case ignored, a
    category matches when one of its words does: ``"euro coins"`` matches ``coins``)."""
    words = {c: {_singular(w) for w in c.replace("_", " ").replace("-", " ").split()} for c in categories}
    found: dict[str, str] = {}
    for n in BUILTIN_PHOTO_NAMES if names is None else names:
        subjects = set(PHOTO_SUBJECTS.get(n, ()))
        hit = next((c for c, ws in words.items() if ws & subjects), None)
        if hit is not None:
            found[n] = hit
    return found


def _as_size(size: int | Sequence[int]) -> Size:
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or any(int(s) != s or int(s) < 1 for s in size):
        raise ValueError(f"size must be a positive int or (H, W), got {size!r}")
    return int(size[0]), int(size[1])


# --------------------------------------------------------------------------- procedural textures


def _grid(size: Size, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ``(1, 1, H, W)`` relative to the image centre, in pixels."""
    H, W = size
    ys = torch.arange(H, dtype=torch.float32, device=device) + 0.5 - H / 2
    xs = torch.arange(W, dtype=torch.float32, device=device) + 0.5 - W / 2
    return xs.view(1, 1, 1, W), ys.view(1, 1, H, 1)


def _mix(color_a: torch.Tensor, color_b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``a + (b - a) * t`` for colours ``(B, 3)`` and a field ``t`` ``(B, 1|3, H, W)`` -> ``(B, 3, H, W)``."""
    a = color_a.to(torch.float32).view(-1, 3, 1, 1)
    b = color_b.to(torch.float32).view(-1, 3, 1, 1)
    return (a + (b - a) * t).clamp_(0.0, 1.0)


def uniform_noise(seeds: Sequence[int], color_a: torch.Tensor, color_b: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """I.i.d. uniform noise per pixel and channel between ``color_a`` and ``color_b`` (``Tensor[B, 3]``).

    Each image's noise comes from its own generator seeded with ``seeds[i]``. Returns ``Tensor[B, 3, H, W]``.
    """
    H, W = _as_size(size)
    fields = [torch.rand(3, H, W, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    t = torch.stack(fields) if fields else torch.empty(0, 3, H, W)
    return _mix(color_a, color_b, t)


def linear_gradient(color_a: torch.Tensor, color_b: torch.Tensor, angle: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Linear ramp from ``color_a`` to ``color_b`` (``Tensor[B, 3]``) along direction ``angle``
    (``Tensor[B]``, degrees, 0 = left to right, counter-clockwise on screen), spanning the whole
    image. Returns ``Tensor[B, 3, H, W]``."""
    H, W = _as_size(size)
    x, y = _grid((H, W))
    rad = angle.to(torch.float32).view(-1, 1, 1, 1) * (math.pi / 180.0)
    c, s = torch.cos(rad), -torch.sin(rad)  # screen y points down
    extent = (c.abs() * W + s.abs() * H).clamp_min(1e-6)
    t = (x * c + y * s) / extent + 0.5
    return _mix(color_a, color_b, t)


def radial_gradient(color_a: torch.Tensor, color_b: torch.Tensor, center: torch.Tensor, radius: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Radial ramp: ``color_a`` at ``center`` (``Tensor[B, 2]``, x/y as fractions of W/H) to
    ``color_b`` at distance ``radius`` (``Tensor[B]``, fraction of the diagonal) and beyond.
    Returns ``Tensor[B, 3, H, W]``."""
    H, W = _as_size(size)
    x, y = _grid((H, W))
    center = center.to(torch.float32)
    cx = (center[:, 0].view(-1, 1, 1, 1) - 0.5) * W
    cy = (center[:, 1].view(-1, 1, 1, 1) - 0.5) * H
    r = (radius.to(torch.float32).view(-1, 1, 1, 1) * math.hypot(H, W)).clamp_min(1e-6)
    t = (torch.sqrt((x - cx) ** 2 + (y - cy) ** 2) / r).clamp_(0.0, 1.0)
    return _mix(color_a, color_b, t)


def checkers(
    color_a: torch.Tensor, color_b: torch.Tensor, cell: torch.Tensor, angle: torch.Tensor, phase: torch.Tensor, size: int | Sequence[int]
) -> torch.Tensor:
    """Checkerboard of square cells (side ``cell``, ``Tensor[B]``, fraction of the shorter image
    side) rotated by ``angle`` (``Tensor[B]``, degrees) and shifted by ``phase`` (``Tensor[B, 2]``,
    in cells), alternating ``color_a`` / ``color_b`` (``Tensor[B, 3]``). Returns ``Tensor[B, 3, H, W]``."""
    H, W = _as_size(size)
    x, y = _grid((H, W))
    side = (cell.to(torch.float32).view(-1, 1, 1, 1) * min(H, W)).clamp_min(1e-3)
    rad = angle.to(torch.float32).view(-1, 1, 1, 1) * (math.pi / 180.0)
    c, s = torch.cos(rad), torch.sin(rad)
    phase = phase.to(torch.float32)
    u = (x * c + y * s) / side + phase[:, 0].view(-1, 1, 1, 1)
    v = (y * c - x * s) / side + phase[:, 1].view(-1, 1, 1, 1)
    parity = torch.remainder(torch.floor(u) + torch.floor(v), 2.0)
    return _mix(color_a, color_b, parity)


def fractal_noise(
    seeds: Sequence[int],
    frequency: torch.Tensor,
    octaves: Sequence[int],
    persistence: torch.Tensor,
    color_a: torch.Tensor,
    color_b: torch.Tensor,
    size: int | Sequence[int],
) -> torch.Tensor:
    """Perlin-style fractal value noise mapped between ``color_a`` and ``color_b`` (``Tensor[B, 3]``).

    Octave ``k`` is a lattice of uniform values with ``frequency * 2**k`` cells across the shorter
    side, upsampled bicubically to the image and weighted ``persistence**k``; the sum is stretched
    to [0, 1] per image. This is a few lines of interpolation, so no noise library is needed.
    Each image's lattices come from its own generator seeded with ``seeds[i]``.
    Returns ``Tensor[B, 3, H, W]``.
    """
    H, W = _as_size(size)
    short = min(H, W)
    fields = []
    for i, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(int(seed))
        total = torch.zeros(1, 1, H, W)
        for k in range(int(octaves[i])):
            cells = float(frequency[i]) * 2.0**k
            lattice = torch.rand(1, 1, math.ceil(cells * H / short) + 1, math.ceil(cells * W / short) + 1, generator=g)
            up = F.interpolate(lattice, size=(H, W), mode="bicubic", align_corners=True)
            total += float(persistence[i]) ** k * up
        lo, hi = total.amin(), total.amax()
        fields.append((total - lo) / (hi - lo) if hi > lo else torch.full_like(total, 0.5))
    t = torch.cat(fields) if fields else torch.empty(0, 1, H, W)
    return _mix(color_a, color_b, t)


# --------------------------------------------------------------------------- params


def _fail(message: str, i: int, key: str | None, file: str | None) -> InputError:
    return InputError(message, file=file, field=f"samples[{i}]" + (f".{key}" if key else ""))


def _check_numbers(value: Any, n: int | None, i: int, key: str, file: str | None) -> None:
    items = value if n is not None else [value]
    if n is not None and (not isinstance(value, (list, tuple)) or len(value) != n):
        raise _fail(f"expected a list of {n} numbers, got {value!r}", i, key, file)
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _fail(f"expected finite numbers, got {value!r}", i, key, file)


_FIELDS: dict[str, dict[str, int | None | str]] = {
    # key -> list length (None for a scalar), or "int" / "bool" / "str"
    "noise": {"seed": "int", "color_a": 3, "color_b": 3},
    "checkers": {"cell": None, "angle": None, "phase": 2, "color_a": 3, "color_b": 3},
    "perlin": {"seed": "int", "frequency": None, "octaves": "int", "persistence": None, "color_a": 3, "color_b": 3},
    "photo": {"photo": "str", "box": 4, "flip": "bool"},
}
_GRADIENT_FIELDS: dict[str, dict[str, int | None | str]] = {
    "linear": {"mode": "str", "angle": None, "color_a": 3, "color_b": 3},
    "radial": {"mode": "str", "center": 2, "radius": None, "color_a": 3, "color_b": 3},
}


def _validate_sample(i: int, sample: Any, file: str | None) -> dict[str, Any]:
    if not isinstance(sample, dict):
        raise _fail(f"expected a mapping, got {type(sample).__name__}", i, None, file)
    kind = sample.get("kind")
    if kind not in KINDS:
        raise _fail(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}", i, "kind", file)
    if kind == "gradient":
        mode = sample.get("mode")
        if mode not in _GRADIENT_FIELDS:
            raise _fail(f"expected 'linear' or 'radial', got {mode!r}", i, "mode", file)
        fields = _GRADIENT_FIELDS[mode]
    else:
        fields = _FIELDS[kind]
    extra = set(sample) - set(fields) - {"kind"}
    if extra:
        raise _fail(f"unexpected keys {sorted(extra)} for kind {kind!r}", i, sorted(extra)[0], file)
    for key, spec in fields.items():
        if key not in sample:
            raise _fail(f"missing (kind {kind!r})", i, key, file)
        value = sample[key]
        if spec == "int":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise _fail(f"expected a non-negative integer, got {value!r}", i, key, file)
        elif spec == "bool":
            if not isinstance(value, bool):
                raise _fail(f"expected true or false, got {value!r}", i, key, file)
        elif spec == "str":
            if not isinstance(value, str) or not value:
                raise _fail(f"expected a non-empty string, got {value!r}", i, key, file)
        else:
            _check_numbers(value, spec, i, key, file)  # type: ignore[arg-type]
    if kind == "photo":
        x0, y0, x1, y1 = sample["box"]
        if any(int(v) != v for v in sample["box"]) or not (0 <= x0 < x1 and 0 <= y0 < y1):
            raise _fail(f"expected integers 0 <= x0 < x1, 0 <= y0 < y1, got {sample['box']!r}", i, "box", file)
    if kind == "perlin" and sample["octaves"] < 1:
        raise _fail("must be at least 1", i, "octaves", file)
    return dict(sample)


@dataclass(frozen=True)
class BackgroundParams:
    """Everything needed to render ``len(samples)`` backgrounds of ``size`` = (H, W).

    ``samples`` holds one JSON-ready dict per image (see the module docstring for the keys of each kind).
    """

    size: Size
    samples: tuple[dict[str, Any], ...]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def kinds(self) -> list[str]:
        return [s["kind"] for s in self.samples]

    def select(self, indices: Sequence[int] | slice) -> BackgroundParams:
        """The params of a subset of the images (rendering it gives the same pixels as slicing)."""
        picked = self.samples[indices] if isinstance(indices, slice) else tuple(self.samples[i] for i in indices)
        return BackgroundParams(self.size, tuple(picked))

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "samples": [dict(s) for s in self.samples]}

    @classmethod
    def from_dict(cls, data: Any, *, file: str | None = None) -> BackgroundParams:
        """Inverse of :meth:`to_dict`, validating every field; ``file`` names the source in errors."""
        if not isinstance(data, dict):
            raise InputError("expected a mapping with 'size' and 'samples'", file=file)
        size = data.get("size")
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise InputError(f"expected [height, width] as positive integers, got {size!r}", file=file, field="size")
        samples = data.get("samples")
        if not isinstance(samples, (list, tuple)):
            raise InputError(f"expected a list, got {type(samples).__name__}", file=file, field="samples")
        return cls((int(size[0]), int(size[1])), tuple(_validate_sample(i, s, file) for i, s in enumerate(samples)))


# --------------------------------------------------------------------------- the bank


@dataclass(frozen=True)
class _Source:
    name: str  # "procedural", a kind, "photos" or a folder path, as given
    kinds: tuple[str, ...] = ()  # procedural kinds drawn from (procedural sources)
    photos: tuple[str, ...] = ()  # photo keys drawn from (photo sources)


def _rand(g: torch.Generator, n: int) -> list[float]:
    return torch.rand(n, generator=g).tolist()


def _color(g: torch.Generator) -> list[float]:
    return _rand(g, 3)


class BackgroundBank:
    """Backgrounds drawn from a mix of sources.

    Args:
        sources: one or a list of ``"procedural"`` (all of :data:`PROCEDURAL_KINDS`), a single kind
            (``"noise"``, ``"gradient"``, ``"checkers"``, ``"perlin"``), ``"photos"`` (the built-in
            photos) or a path to a folder of images (searched recursively) or to one image.
        weights: relative probability of each source (default: equal).
        scale: range of the crop area as a fraction of the photo's area.
        aspect: range of the crop's aspect ratio relative to the requested output aspect
            (drawn log-uniformly), so photos are stretched at most this much.
        exclude: built-in photo names (:data:`BUILTIN_PHOTO_NAMES`) that ``"photos"`` leaves out.

    Folder images are checked (header only) when the bank is built; each photo is decoded on first
    use and kept in memory as ``uint8``. Pixels are used as stored (EXIF orientation is ignored).

    Raises:
        InputError: an unknown source, a missing or empty folder, an unreadable image, an unknown
            name in ``exclude``, or ``"photos"`` with every installed photo excluded.
        DataUnavailableError: ``"photos"`` when no bundled photo is installed.
    """

    def __init__(
        self,
        sources: str | Path | Sequence[str | Path] = "procedural",
        *,
        weights: Sequence[float] | None = None,
        scale: tuple[float, float] = (0.1, 1.0),
        aspect: tuple[float, float] = (3 / 4, 4 / 3),
        exclude: Sequence[str] = (),
    ):
        self.exclude = check_photo_names(exclude)
        if isinstance(sources, (str, Path)):
            sources = [sources]
        if not sources:
            raise InputError("at least one background source is needed", field="sources")
        if weights is None:
            weights = [1.0] * len(sources)
        if len(weights) != len(sources) or any(not (w >= 0) for w in weights) or sum(weights) <= 0:
            raise InputError(f"need one non-negative weight per source with a positive sum, got {list(weights)}", field="weights")
        if not (0 < scale[0] <= scale[1] <= 1):
            raise InputError(f"expected 0 < min <= max <= 1, got {scale}", field="scale")
        if not (0 < aspect[0] <= aspect[1]):
            raise InputError(f"expected 0 < min <= max, got {aspect}", field="aspect")
        self.scale = (float(scale[0]), float(scale[1]))
        self.aspect = (float(aspect[0]), float(aspect[1]))
        total = float(sum(weights))
        self._cumulative = list(itertools.accumulate(float(w) / total for w in weights))  # source i: u < cum[i]
        self._builtin = builtin_photos()
        self._photo_paths: dict[str, Path] = {}
        self._photo_sizes: dict[str, Size] = {}  # key -> (H, W) from the header
        self._decoded: dict[str, torch.Tensor] = {}  # key -> uint8 (3, H, W)
        self._sources = tuple(self._parse_source(s) for s in sources)

    def _parse_source(self, source: str | Path) -> _Source:
        if isinstance(source, str) and source == "procedural":
            return _Source(source, kinds=PROCEDURAL_KINDS)
        if isinstance(source, str) and source in PROCEDURAL_KINDS:
            return _Source(source, kinds=(source,))
        if isinstance(source, str) and source == "photos":
            if not self._builtin:
                raise DataUnavailableError("no bundled photos found in the installed scikit-image / scikit-learn packages")
            kept = {name: path for name, path in self._builtin.items() if name not in self.exclude}
            if not kept:
                raise InputError(f"every installed built-in photo is excluded ({', '.join(self._builtin)})", field="exclude")
            for name, path in kept.items():
                self._register(name, path)
            return _Source(source, photos=tuple(kept))
        path = Path(source).expanduser()
        if path.is_file():
            files = [path]
        elif path.is_dir():
            files = sorted((p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS), key=lambda p: p.as_posix())
            if not files:
                raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder", file=path, field="sources")
        else:
            raise InputError(
                f"not a folder or image, nor one of 'procedural', 'photos', {', '.join(repr(k) for k in PROCEDURAL_KINDS)}",
                file=path,
                field="sources",
            )
        keys = []
        for f in files:
            key = str(f.resolve())
            self._register(key, f)
            keys.append(key)
        return _Source(str(source), photos=tuple(keys))

    def _register(self, key: str, path: Path) -> None:
        if key not in self._photo_sizes:
            w, h = image_size(path)
            self._photo_paths[key] = path
            self._photo_sizes[key] = (h, w)

    @property
    def sources(self) -> list[str]:
        return [s.name for s in self._sources]

    @property
    def photos(self) -> list[str]:
        """Keys of every photo this bank can draw (built-in names or absolute paths)."""
        return list(self._photo_sizes)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_decoded"] = {}  # workers decode again rather than receive every photo
        return state

    # ------------------------------------------------------------------ sampling

    def sample_params(self, n: int, size: int | Sequence[int], generator: torch.Generator) -> BackgroundParams:
        """Draw ``n`` backgrounds of ``size`` (``H`` or ``(H, W)``) from ``generator``."""
        hw = _as_size(size)
        return BackgroundParams(hw, tuple(self._sample(hw, generator) for _ in range(int(n))))

    def sample_one(self, size: Sequence[int], generator: torch.Generator) -> dict[str, Any]:
        """One background's params dict (the scene renderer's background-source interface)."""
        return self._sample(_as_size(size), generator)

    def _sample(self, size: Size, g: torch.Generator) -> dict[str, Any]:
        u_source, pick = _rand(g, 2)
        idx = min(bisect.bisect_right(self._cumulative, u_source), len(self._sources) - 1)
        src = self._sources[idx]
        if src.kinds:
            return self._sample_procedural(src.kinds[min(int(pick * len(src.kinds)), len(src.kinds) - 1)], g)
        return self._sample_photo(src.photos[min(int(pick * len(src.photos)), len(src.photos) - 1)], size, g)

    @staticmethod
    def _sample_procedural(kind: str, g: torch.Generator) -> dict[str, Any]:
        color_a, color_b = _color(g), _color(g)
        if kind == "noise":
            seed = int(torch.randint(0, _SEED_HIGH, (1,), generator=g))
            return {"kind": kind, "seed": seed, "color_a": color_a, "color_b": color_b}
        if kind == "gradient":
            u = _rand(g, 5)
            if u[0] < 0.5:
                return {"kind": kind, "mode": "linear", "angle": 360.0 * u[1], "color_a": color_a, "color_b": color_b}
            return {"kind": kind, "mode": "radial", "center": [u[2], u[3]], "radius": 0.25 + 0.75 * u[4], "color_a": color_a, "color_b": color_b}
        if kind == "checkers":
            u = _rand(g, 4)
            cell = 1 / 20 + (1 / 3 - 1 / 20) * u[0]
            return {"kind": kind, "cell": cell, "angle": 90.0 * u[1], "phase": [u[2], u[3]], "color_a": color_a, "color_b": color_b}
        if kind == "perlin":
            seed = int(torch.randint(0, _SEED_HIGH, (1,), generator=g))
            u = _rand(g, 3)
            octaves = 3 + min(int(u[1] * 4), 3)
            return {
                "kind": kind, "seed": seed, "frequency": 1.5 + 4.5 * u[0], "octaves": octaves,
                "persistence": 0.35 + 0.3 * u[2], "color_a": color_a, "color_b": color_b,
            }  # fmt: skip
        raise ValueError(f"unknown procedural kind {kind!r}")

    def _sample_photo(self, key: str, size: Size, g: torch.Generator) -> dict[str, Any]:
        ph, pw = self._photo_sizes[key]
        H, W = size
        u = _rand(g, 5)
        area = ph * pw * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[0])
        log_lo, log_hi = math.log(self.aspect[0]), math.log(self.aspect[1])
        ratio = (W / H) * math.exp(log_lo + (log_hi - log_lo) * u[1])  # crop width / height
        cw, ch = math.sqrt(area * ratio), math.sqrt(area / ratio)
        shrink = min(1.0, pw / cw, ph / ch)  # keep the aspect ratio when the box would not fit
        cw = min(pw, max(1, round(cw * shrink)))
        ch = min(ph, max(1, round(ch * shrink)))
        x0 = min(int(u[2] * (pw - cw + 1)), pw - cw)
        y0 = min(int(u[3] * (ph - ch + 1)), ph - ch)
        return {"kind": "photo", "photo": key, "box": [x0, y0, x0 + cw, y0 + ch], "flip": u[4] < 0.5}

    # ------------------------------------------------------------------ rendering

    def render(self, params: BackgroundParams) -> torch.Tensor:
        """Render ``params`` deterministically: ``Tensor[n, 3, H, W]`` float32 in [0, 1]."""
        H, W = params.size
        out = torch.empty(len(params), 3, H, W)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, s in enumerate(params.samples):
            groups.setdefault((s["kind"], s.get("mode", "")), []).append(i)
        for (kind, mode), idx in groups.items():
            out[idx] = self._render_group(kind, mode, [params.samples[i] for i in idx], (H, W))
        return out

    def render_one(self, params: dict[str, Any], size: Sequence[int]) -> np.ndarray:
        """One background as a ``float32 (H, W, 3)`` array (the scene renderer's interface)."""
        hw = _as_size(size)
        sample = _validate_sample(0, params, None)
        img = self._render_group(sample["kind"], sample.get("mode", ""), [sample], hw)[0]
        return np.ascontiguousarray(img.permute(1, 2, 0).numpy())

    def _render_group(self, kind: str, mode: str, samples: list[dict[str, Any]], size: Size) -> torch.Tensor:
        def col(key: str) -> torch.Tensor:
            return torch.tensor([s[key] for s in samples], dtype=torch.float32)

        if kind == "photo":
            return torch.cat([self._render_photo(s, size) for s in samples])
        a, b = col("color_a"), col("color_b")
        if kind == "noise":
            return uniform_noise([s["seed"] for s in samples], a, b, size)
        if kind == "gradient" and mode == "linear":
            return linear_gradient(a, b, col("angle"), size)
        if kind == "gradient":
            return radial_gradient(a, b, col("center"), col("radius"), size)
        if kind == "checkers":
            return checkers(a, b, col("cell"), col("angle"), col("phase"), size)
        if kind == "perlin":
            return fractal_noise([s["seed"] for s in samples], col("frequency"), [s["octaves"] for s in samples], col("persistence"), a, b, size)
        raise ValueError(f"unknown background kind {kind!r}")

    def _photo(self, key: str) -> torch.Tensor:
        """Decoded ``uint8 (3, H, W)`` photo, decoded once per bank."""
        hit = self._decoded.get(key)
        if hit is None:
            path = self._photo_paths.get(key)
            if path is None:
                path = self._builtin.get(key, Path(key))
                self._register(key, path)
            hit = torch.from_numpy(load_image(path, mode="RGB")).permute(2, 0, 1).contiguous()
            self._decoded[key] = hit
        return hit

    def _render_photo(self, sample: dict[str, Any], size: Size) -> torch.Tensor:
        photo = self._photo(sample["photo"])
        x0, y0, x1, y1 = (int(v) for v in sample["box"])
        ph, pw = photo.shape[1:]
        if x1 > pw or y1 > ph:
            raise InputError(f"crop box {sample['box']} lies outside the {pw}x{ph} photo {sample['photo']}", field="box")
        crop = photo[:, y0:y1, x0:x1].unsqueeze(0).to(torch.float32).div_(255.0)
        img = F.interpolate(crop, size=size, mode="bilinear", antialias=True, align_corners=False)
        if sample["flip"]:
            img = img.flip(-1)
        return img.clamp_(0.0, 1.0)
