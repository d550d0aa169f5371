"""The "digits in scenes" detection benchmark: MNIST digits pasted onto crops of real photographs.

This is the benchmark's *real* data, made by a fixed generator that is deliberately simple and is
not any of the synthesizers being evaluated. Every image is 128x128 and holds 1-5 digits:

- Background: a crop of one of the built-in photographs
  (:func:`synthloop.data.backgrounds.builtin_photos`, via :class:`BackgroundBank` ``"photos"``:
  crop area 10-100 % of the photo, aspect within 3/4-4/3, random horizontal flip), resized to
  128x128.
- Digits: MNIST digits as RGBA cut-outs (:func:`digit_alpha`: alpha = the digit's intensity
  stretched so strokes are opaque and faint noise is gone), coloured with one tint per digit.
  The tint is uniform in RGB, redrawn (up to :data:`TINT_TRIES` times) until its luma differs by
  at least :data:`MIN_CONTRAST` from the mean luma of the background under the digit (else the
  most contrasting draw is kept), so every digit is visible.
- Placement: digit height (of its alpha > 0.5 box, before rotation) uniform in 20-50 px, the same
  scale on both axes, rotation uniform in +-10 degrees, no shear, position uniform over the places
  where the rotated box lies inside the image (1 px margin) and at least :data:`BOX_GAP` px away
  from every box already placed (so boxes never overlap: IoU 0). A digit that finds no place in
  :data:`MAX_TRIES` draws is left out (so busy images may hold fewer digits than drawn).
- Paste: alpha compositing with the alpha blurred by a Gaussian of sigma 0.5 (the compositor's
  ``"gaussian"`` blend); no artefacts, no photometric change.

Splits (the benchmark's name -> MNIST digits it uses): ``train`` (2,000 images) and ``val`` (500)
from MNIST's training digits -- ``train`` from the 50,000 of ``mnist.pkl.gz``'s train split, ``val``
from its 10,000 valid digits, which are disjoint -- and ``test`` (1,000) from the 10,000 MNIST test
digits. Within a split no digit is used twice. Categories: ids 1..10 named "0".."9".

Each split is a COCO data set (``annotations.json`` + lossless PNG images under ``images/``),
boxes and RLE masks of the visible digit pixels. Every image records everything needed to replay it
bit for bit in its ``attributes``: the per-image seed, the :class:`SceneParams` and, per digit,
the MNIST split and index and the tint (see :func:`replay_scene`). Annotations carry the same
per-digit fields plus the drawn height and angle.

Generation is deterministic given the seed. Data sets are cached under
``<cache>/digit_scenes/v<GENERATOR_VERSION>-seed<seed>[-<train>-<val>-<test>]/<split>/`` (the size
suffix only for non-default sizes), made once and reused; the folder appears atomically, and
concurrent processes wait on a lock rather than generate twice.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from synthloop.compose.apply import SceneResult, apply_scene
from synthloop.compose.params import BlendSpec, ObjectParams, SceneParams
from synthloop.compose.sampler import instance_geometry, placed_box
from synthloop.compose.sources import TensorInstances
from synthloop.data._io import staged_dir
from synthloop.data.backgrounds import BackgroundBank
from synthloop.data.coco import ANNOTATIONS_FILE, read_coco, write_coco_json
from synthloop.data.dataset import Annotation, Category, Dataset, ImageEntry
from synthloop.data.images import encode_png
from synthloop.data.mnist import SPLIT_SIZES as MNIST_SPLIT_SIZES
from synthloop.data.mnist import default_cache_dir, file_lock, load_mnist
from synthloop.errors import InputError
from synthloop.utils.atomic import atomic_write_bytes
from synthloop.utils.progress import Progress, announce

GENERATOR_VERSION = 1
"""Bumped whenever the generator's output changes; part of the cache key."""

CANVAS = 128
DIGITS_PER_IMAGE = (1, 5)
DIGIT_HEIGHT = (20.0, 50.0)  # px, the alpha > 0.5 box of the upright digit
ROTATION = (-10.0, 10.0)  # degrees
BLUR_SIGMA = 0.5
BOX_GAP = 2.0  # px between placed boxes (rendered masks can spill a fraction of a pixel past them)
EDGE_MARGIN = 1.0  # px between a box and the image border
MAX_TRIES = 50
MIN_CONTRAST = 0.25
TINT_TRIES = 8
ALPHA_RANGE = (0.1, 0.5)  # MNIST intensity mapped to alpha 0 .. 1

SPLITS: tuple[str, ...] = ("train", "val", "test")
MNIST_SOURCE: dict[str, str] = {"train": "train", "val": "valid", "test": "test"}
"""The MNIST split (of :func:`synthloop.data.mnist.load_mnist`) each benchmark split draws its digits from."""
DEFAULT_SIZES: dict[str, int] = {"train": 2000, "val": 500, "test": 1000}

CATEGORIES: tuple[Category, ...] = tuple(Category(id=d + 1, name=str(d), supercategory="digit") for d in range(10))
"""Category ``d + 1`` is the digit ``d``."""

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)
_SEED_HIGH = 2**53


def digit_alpha(images: torch.Tensor) -> torch.Tensor:
    """Alpha of MNIST digits: intensity mapped linearly from :data:`ALPHA_RANGE` to [0, 1] and clamped.

    Intensities up to 0.1 (faint scanner noise) become transparent, those from 0.5 up fully
    opaque, the anti-aliased rim in between partly transparent. ``Tensor[N, 1, h, w]`` ->
    ``Tensor[N, 1, h, w]``.
    """
    lo, hi = ALPHA_RANGE
    return ((images.float() - lo) / (hi - lo)).clamp_(0.0, 1.0)


def digit_cutouts(images: torch.Tensor, labels: torch.Tensor, tints: torch.Tensor | None = None) -> TensorInstances:
    """MNIST digits as RGBA cut-outs for the compositor.

    Args:
        images: ``Tensor[N, 1, h, w]`` MNIST intensities in [0, 1].
        labels: ``Tensor[N]`` digits 0..9 (category id = digit + 1).
        tints: ``Tensor[N, 3]`` RGB colour per digit in [0, 1] (default white).

    The colour planes are broadcast views, so even all 50,000 training digits cost only their alpha.
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise InputError(f"expected digits of shape (N, 1, h, w), got {tuple(images.shape)}", field="images")
    n, _, h, w = images.shape
    if labels.shape != (n,):
        raise InputError(f"expected {n} labels, got shape {tuple(labels.shape)}", field="labels")
    if tints is None:
        tints = torch.ones(n, 3)
    if tints.shape != (n, 3):
        raise InputError(f"expected tints of shape ({n}, 3), got {tuple(tints.shape)}", field="tints")
    rgbs = tints.float().clamp(0.0, 1.0).view(n, 3, 1, 1).expand(n, 3, h, w)
    return TensorInstances(list(rgbs.unbind(0)), list(digit_alpha(images).unbind(0)), (labels.long() + 1).tolist())


def digit_bank(
    *, indices: Sequence[int] | torch.Tensor | None = None, generator: torch.Generator | None = None, cache_dir: str | Path | None = None
) -> TensorInstances:
    """The foreground bank for synthesis: MNIST *training* digits (never test digits) as cut-outs.

    Args:
        indices: which of the 50,000 training digits (default all), in this order; instance ``i``
            of the bank is training digit ``indices[i]``.
        generator: when given, each digit gets a random tint uniform in RGB drawn from it (in bank
            order); otherwise digits are white.
        cache_dir: the MNIST cache folder (see :mod:`synthloop.data.mnist`).
    """
    images, labels = load_mnist("train", cache_dir=cache_dir)
    if indices is not None:
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= images.shape[0]):
            raise InputError(f"digit indices must lie in 0..{images.shape[0] - 1}", field="indices")
        images, labels = images[idx], labels[idx]
    tints = torch.rand(images.shape[0], 3, generator=generator) if generator is not None else None
    return digit_cutouts(images, labels, tints)


# --------------------------------------------------------------------------------------------
# sampling one scene


class _FixedBackground:
    """A background source that hands out one already-rendered image (the sampler renders the
    background to choose tints; the compositor then reuses it instead of rendering it again)."""

    def __init__(self, image: np.ndarray):
        self.image = image

    def render_one(self, params: dict[str, Any], size: tuple[int, int]) -> np.ndarray:
        return self.image


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _boxes_apart(a: Sequence[float], b: Sequence[float], gap: float) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def free_box(g: torch.Generator, bw: float, bh: float, boxes: Sequence[Sequence[float]]) -> tuple[float, float, float, float] | None:
    """A ``bw`` x ``bh`` box at a uniform position inside the canvas margins, at least ``BOX_GAP``
    from every box in ``boxes``: up to ``MAX_TRIES`` draws (x then y each), ``None`` if none fits."""
    for _ in range(MAX_TRIES):
        x0 = _uniform(g, EDGE_MARGIN, CANVAS - EDGE_MARGIN - bw)
        y0 = _uniform(g, EDGE_MARGIN, CANVAS - EDGE_MARGIN - bh)
        box = (x0, y0, x0 + bw, y0 + bh)
        if all(_boxes_apart(box, b, BOX_GAP) for b in boxes):
            return box
    return None


def _pick_tint(g: torch.Generator, background: np.ndarray, box: Sequence[float]) -> list[float]:
    x0, y0, x1, y1 = (int(math.floor(box[0])), int(math.floor(box[1])), int(math.ceil(box[2])), int(math.ceil(box[3])))
    patch = background[max(y0, 0) : y1, max(x0, 0) : x1].reshape(-1, 3)
    bg_luma = float(patch.astype(np.float64).mean(0) @ _LUMA) if patch.size else 0.5
    best, best_contrast = None, -1.0
    for _ in range(TINT_TRIES):
        tint = torch.rand(3, generator=g, dtype=torch.float64).tolist()
        contrast = abs(float(np.asarray(tint) @ _LUMA) - bg_luma)
        if contrast >= MIN_CONTRAST:
            return [round(c, 6) for c in tint]
        if contrast > best_contrast:
            best, best_contrast = tint, contrast
    return [round(c, 6) for c in best]  # type: ignore[union-attr]


def sample_digit_scene(
    digits: torch.Tensor,
    labels: torch.Tensor,
    pool: Sequence[int],
    backgrounds: BackgroundBank,
    generator: torch.Generator,
    *,
    mnist_split: str,
) -> tuple[dict[str, Any], SceneResult]:
    """Sample and composite one scene with the fixed generator.

    Args:
        digits: ``Tensor[N, 1, 28, 28]`` MNIST digits of ``mnist_split``; ``labels`` ``Tensor[N]``.
        pool: indices into ``digits`` still unused, in the order to use them: the scene draws its
            number of digits ``n`` and takes ``pool[:n]`` (a digit that finds no place is skipped,
            never reused).
        backgrounds: the photo bank.
        generator: the scene's own generator (everything random is drawn from it).

    Returns:
        ``(record, result)``: ``record`` is ``{"scene": SceneParams dict, "digits": [{"mnist_split",
        "mnist_index", "category_id", "tint", "height", "angle"}, ...], "used": n}`` (digit ``k`` is
        object ``k`` of the scene, whose ``instance`` is ``k``); ``result`` is the composited image and
        per-object masks and boxes.
    """
    g = generator
    canvas = (CANVAS, CANVAS)
    bg_params = backgrounds.sample_one(canvas, g)
    background = backgrounds.render_one(bg_params, canvas)
    n = int(torch.randint(DIGITS_PER_IMAGE[0], DIGITS_PER_IMAGE[1] + 1, (), generator=g))
    if n > len(pool):
        raise InputError(f"not enough digits left in the pool ({len(pool)}) for {n} more", field="pool")
    white = digit_cutouts(digits[list(pool[:n])], torch.zeros(n, dtype=torch.long))
    objects: list[ObjectParams] = []
    placed: list[dict[str, Any]] = []
    boxes: list[tuple[float, float, float, float]] = []
    for k in range(n):
        geom = instance_geometry(white, k)
        mask_h = max(geom[2][3] - geom[2][1], 1)
        height = _uniform(g, *DIGIT_HEIGHT)
        angle = _uniform(g, *ROTATION)
        s = height / mask_h
        centred = placed_box([angle, 0.0, 0.0, 0.0, s, s], geom, canvas)
        bw, bh = centred[2] - centred[0], centred[3] - centred[1]
        hit = free_box(g, bw, bh, boxes)
        if hit is None:
            continue
        boxes.append(hit)
        affine = [angle, hit[0] - centred[0], hit[1] - centred[1], 0.0, s, s]
        index = int(pool[k])
        category_id = int(labels[index]) + 1
        objects.append(ObjectParams(instance=len(objects), category_id=category_id, affine=affine, blend=BlendSpec("gaussian", {"sigma": BLUR_SIGMA})))
        tint = _pick_tint(g, background, hit)
        placed.append({"mnist_split": mnist_split, "mnist_index": index, "category_id": category_id, "tint": tint, "height": height, "angle": angle})
    scene = SceneParams(canvas=canvas, background=bg_params, objects=objects)
    record = {"scene": scene.to_dict(), "digits": placed, "used": n}
    return record, _apply(record, digits, background)


def _scene_instances(record: Mapping[str, Any], digits: torch.Tensor) -> TensorInstances:
    idx = [int(d["mnist_index"]) for d in record["digits"]]
    lab = torch.tensor([int(d["category_id"]) - 1 for d in record["digits"]], dtype=torch.long)
    tints = torch.tensor([d["tint"] for d in record["digits"]], dtype=torch.float32).reshape(-1, 3)
    return digit_cutouts(digits[idx].reshape(-1, 1, digits.shape[-2], digits.shape[-1]), lab, tints)


def _apply(record: Mapping[str, Any], digits: torch.Tensor, background: np.ndarray) -> SceneResult:
    params = SceneParams.from_dict(record["scene"])
    return apply_scene(params, _scene_instances(record, digits), _FixedBackground(background))


def replay_scene(record: Mapping[str, Any], *, backgrounds: BackgroundBank | None = None, cache_dir: str | Path | None = None) -> SceneResult:
    """Composite an image again from its recorded attributes (``{"scene", "digits", ...}``), bit for bit.

    ``record`` is an image's ``attributes`` in a digit-scenes data set (or the record
    :func:`sample_digit_scene` returns).
    """
    splits = {d["mnist_split"] for d in record["digits"]}
    if len(splits) > 1:
        raise InputError(f"a scene mixes digits of several MNIST splits: {sorted(splits)}", field="digits")
    digits = load_mnist(splits.pop(), cache_dir=cache_dir)[0] if splits else torch.zeros(0, 1, 28, 28)
    bank = backgrounds if backgrounds is not None else BackgroundBank("photos")
    params = SceneParams.from_dict(record["scene"])
    return _apply(record, digits, bank.render_one(params.background, params.canvas))


# --------------------------------------------------------------------------------------------
# whole splits


def _split_seed(seed: int, split: str) -> int:
    digest = hashlib.sha256(f"digit_scenes/v{GENERATOR_VERSION}/{int(seed)}/{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % _SEED_HIGH


def generate_split(
    split: str,
    count: int,
    seed: int,
    *,
    backgrounds: BackgroundBank | None = None,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> list[tuple[np.ndarray, ImageEntry]]:
    """Generate ``count`` images of ``split`` in memory: ``[(uint8 (128, 128, 3) image, ImageEntry)]``.

    The entry's ``file_name`` is ``images/<index:06d>.png``, its ``attributes`` hold
    ``{"seed", "scene", "digits"}`` and each annotation (``bbox`` and ``mask`` of the visible
    digit pixels) carries its digit's record. Deterministic in ``(split, seed)``: image ``i`` has
    its own seed derived from ``(seed, split, i)`` and the digit pool's order depends on
    ``(seed, split)`` only, so a shorter run is a prefix of a longer one. ``progress`` gets
    ``("digit scenes: <split>", images done, count)`` after every image.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}", field="split")
    if count < 0:
        raise InputError(f"the number of images must be >= 0, got {count}", field=f"sizes.{split}")
    mnist_split = MNIST_SOURCE[split]
    digits, labels = load_mnist(mnist_split, cache_dir=cache_dir)  # type: ignore[arg-type]
    bank = backgrounds if backgrounds is not None else BackgroundBank("photos")
    g = torch.Generator().manual_seed(_split_seed(seed, split))
    if count * DIGITS_PER_IMAGE[1] > digits.shape[0]:
        raise InputError(
            f"{count} images of up to {DIGITS_PER_IMAGE[1]} digits each could need more than the "
            f"{digits.shape[0]} digits of MNIST {mnist_split!r} (at most {digits.shape[0] // DIGITS_PER_IMAGE[1]} images)",
            field=f"sizes.{split}",
        )
    pool = torch.randperm(digits.shape[0], generator=g).tolist()
    out = []
    cursor = 0
    task = f"digit scenes: {split}"
    if progress is not None and count:  # (task, 0, 0) would be a message
        progress(task, 0, count)
    for i in range(count):
        image_seed = _split_seed(seed, f"{split}/{i}")
        g_image = torch.Generator().manual_seed(image_seed)
        record, result = sample_digit_scene(digits, labels, pool[cursor:], bank, g_image, mnist_split=mnist_split)
        cursor += record.pop("used")
        annotations = []
        for digit, obj in zip(record["digits"], result.objects):
            x0, y0, x1, y1 = obj.box
            annotations.append(Annotation(category_id=digit["category_id"], bbox=(x0, y0, x1 - x0, y1 - y0), mask=obj.mask, attributes=dict(digit)))
        entry = ImageEntry(
            id=i + 1,
            file_name=f"images/{i:06d}.png",
            width=CANVAS,
            height=CANVAS,
            annotations=annotations,
            attributes={"seed": image_seed, **record},
        )
        out.append((result.to_uint8(), entry))
        if progress is not None:
            progress(task, i + 1, count)
    return out


class DigitScenes(NamedTuple):
    """Paths of a cached digit-scenes benchmark: the folder and each split's ``annotations.json``."""

    root: Path
    train: Path
    val: Path
    test: Path

    def load(self, split: str) -> Dataset:
        """Read one split as a :class:`Dataset`."""
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}", field="split")
        return read_coco(getattr(self, split))


def _check_sizes(sizes: Mapping[str, int] | None) -> dict[str, int]:
    out = dict(DEFAULT_SIZES)
    for key, value in (sizes or {}).items():
        if key not in SPLITS:
            raise InputError(f"unknown split {key!r}; expected one of {', '.join(SPLITS)}", field="sizes")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(f"expected a non-negative number of images, got {value!r}", field=f"sizes.{key}")
        out[key] = value
        most = MNIST_SPLIT_SIZES[MNIST_SOURCE[key]] // DIGITS_PER_IMAGE[1]
        if value > most:
            raise InputError(f"at most {most} images fit the digits of MNIST {MNIST_SOURCE[key]!r}, got {value}", field=f"sizes.{key}")
    return out


def cache_folder(seed: int = 0, sizes: Mapping[str, int] | None = None, cache_dir: str | Path | None = None) -> Path:
    """Where :func:`digit_scenes` keeps the data for ``seed`` and ``sizes``."""
    n = _check_sizes(sizes)
    key = f"v{GENERATOR_VERSION}-seed{int(seed)}"
    if n != DEFAULT_SIZES:
        key += "-" + "-".join(str(n[s]) for s in SPLITS)
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / "digit_scenes" / key


def digit_scenes(
    seed: int = 0, *, sizes: Mapping[str, int] | None = None, cache_dir: str | Path | None = None, progress: Progress | None = None
) -> DigitScenes:
    """The digits-in-scenes benchmark for ``seed``, generated on first use and cached.

    Args:
        seed: the generator seed (each split derives its own from it).
        sizes: images per split (default :data:`DEFAULT_SIZES`: 2,000 / 500 / 1,000).
        cache_dir: cache root (default ``$SYNTHLOOP_CACHE`` or ``~/.cache/synthloop``); MNIST is
            read from (and if needed fetched into) the same root.
        progress: when the data set has to be built, it first gets a message naming the folder
            (:func:`~synthloop.utils.progress.announce`), then every split's progress per image
            (see :func:`generate_split`); nothing when the cache is already there.

    Returns:
        :class:`DigitScenes` with the path of each split's ``annotations.json``.
    """
    n = _check_sizes(sizes)
    root = cache_folder(seed, n, cache_dir)
    paths = DigitScenes(root, *(root / s / ANNOTATIONS_FILE for s in SPLITS))
    if all(p.is_file() for p in paths[1:]):
        return paths
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root.parent / f".{root.name}.lock"):
        if all(p.is_file() for p in paths[1:]):  # made by another process while we waited
            return paths
        total = sum(n.values())
        announce(progress, f"building the digits-in-scenes data set ({total} images, first use only; minutes on a small CPU) in {root}")
        bank = BackgroundBank("photos")
        with staged_dir(root) as stage:
            for split in SPLITS:
                items = generate_split(split, n[split], seed, backgrounds=bank, cache_dir=cache_dir, progress=progress)
                for image, entry in items:
                    atomic_write_bytes(stage / split / entry.file_name, encode_png(image))
                info = {
                    "description": f"digits in scenes, {split} split",
                    "generator_version": GENERATOR_VERSION,
                    "seed": int(seed),
                    "split": split,
                    "mnist_split": MNIST_SOURCE[split],
                }
                write_coco_json(stage / split / ANNOTATIONS_FILE, [e for _, e in items], list(CATEGORIES), info=info)
    return paths


def load_digit_scenes(
    seed: int = 0, *, sizes: Mapping[str, int] | None = None, cache_dir: str | Path | None = None, progress: Progress | None = None
) -> dict[str, Dataset]:
    """``{"train", "val", "test"} -> Dataset`` of :func:`digit_scenes` (generated on first use, with ``progress``)."""
    paths = digit_scenes(seed, sizes=sizes, cache_dir=cache_dir, progress=progress)
    return {s: paths.load(s) for s in SPLITS}
