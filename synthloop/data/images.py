"""Image files: safe decoding, safe paths, fast encoding.

Decoding goes through PIL because it reports truncated files (OpenCV's decoders quietly return a
partly grey image) and exposes the image size from the header before any pixel is decoded, which
is what a decompression-bomb guard needs. Pixels are returned as stored: EXIF orientation is not
applied, matching how COCO-style annotations are defined. PNG encoding uses OpenCV, which measured
faster than PIL (640x480 RGB: 9 ms vs 120 ms at PIL's default level). JPEG encoding uses simplejpeg
(libjpeg-turbo, 4:2:0 chroma like OpenCV's and PIL's defaults, RGB in without a BGR copy): 640x480
q90 photo, best of 9 on a loaded 2-core box, 3.5 ms vs 4.4 ms for cv2.imencode and 6.2 ms for
PIL, same size and PSNR within 0.1 dB.
"""

from __future__ import annotations

import warnings
from pathlib import Path, PurePosixPath, PureWindowsPath

import cv2
import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from synthloop.errors import InputError

DEFAULT_MAX_PIXELS = 100_000_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

_MODES = ("RGB", "RGBA", "L")


def _open_checked(path: Path, max_pixels: int) -> Image.Image:
    """Open ``path`` lazily (header only) and enforce ``max_pixels`` before anything is decoded."""
    if not path.is_file():
        raise InputError("image file not found", file=path)
    try:
        with warnings.catch_warnings():
            # PIL's own bomb guard warns above ~89 MP; ``max_pixels`` is the limit we enforce
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise InputError(f"image is too large to decode safely ({e})", file=path, field="size") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"not a readable image ({e})", file=path) from None
    w, h = im.size
    if w <= 0 or h <= 0:
        im.close()
        raise InputError(f"image header gives an empty size {w}x{h}", file=path, field="size")
    if w * h > max_pixels:
        im.close()
        raise InputError(f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}", file=path, field="size")
    return im


def image_size(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """``(width, height)`` of an image file, read from its header (no decoding)."""
    with _open_checked(Path(path), max_pixels) as im:
        return im.size


def has_alpha(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bool:
    """Whether an image file has an alpha channel or palette transparency (header only)."""
    with _open_checked(Path(path), max_pixels) as im:
        return im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info


def load_image(path: str | Path, *, mode: str = "RGB", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file.

    Args:
        path: image file (any format PIL reads).
        mode: ``"RGB"`` -> ``uint8 (H, W, 3)``, ``"RGBA"`` -> ``uint8 (H, W, 4)``, ``"L"`` -> ``uint8 (H, W)``.
        max_pixels: refuse images with more pixels than this; checked from the header before decoding.
    Raises:
        InputError: missing, corrupt or truncated file, or an image over ``max_pixels``.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    path = Path(path)
    with _open_checked(path, max_pixels) as im:
        try:
            im.load()
            if im.mode != mode:
                im = im.convert(mode)
            arr = np.array(im)
        except (OSError, SyntaxError, ValueError) as e:
            raise InputError(f"corrupt or truncated image ({e})", file=path) from None
    return arr


def load_mask(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a mask image to ``bool (H, W)``.

    Foreground is: a non-zero palette index (palette PNGs), non-zero alpha (images with an alpha
    channel), or for grey/colour images a non-zero pixel when the image only holds 0/1 values and
    a pixel >= 128 otherwise (0/255 masks, anti-aliased edges included at half intensity).
    """
    path = Path(path)
    with _open_checked(path, max_pixels) as im:
        try:
            im.load()
            if im.mode == "P" and "transparency" not in im.info:
                return np.array(im) > 0
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                return np.array(im.convert("RGBA"))[..., 3] >= 128
            if im.mode == "1":
                return np.array(im, dtype=bool)
            if im.mode.startswith("I") or im.mode == "F":
                arr = np.array(im)
            else:
                arr = np.array(im.convert("L"))
        except (OSError, SyntaxError, ValueError) as e:
            raise InputError(f"corrupt or truncated mask image ({e})", file=path) from None
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return arr > 0 if arr.max(initial=0) <= 1 else arr >= 128


def safe_join(root: str | Path, file_name: str, *, file: str | Path | None = None, field: str | None = None) -> Path:
    """``root / file_name``, refusing names that are absolute or climb out of ``root``.

    Both ``/`` and ``\\`` count as separators (annotation files written on Windows use the latter),
    and a drive letter counts as absolute. Symbolic links inside ``root`` may be followed only as
    long as they stay inside it: a name that resolves outside ``root`` (an untrusted dataset
    linking to ``/etc``, say) is refused like a ``..`` path; link ``root`` itself to share a folder.

    Raises:
        InputError: naming ``file`` and ``field`` (the annotation file and field the name came from).
    """
    if not isinstance(file_name, str) or not file_name.strip():
        raise InputError(f"file name must be a non-empty string, got {file_name!r}", file=file, field=field)
    if "\x00" in file_name:
        raise InputError("file name contains a NUL character", file=file, field=field)
    win = PureWindowsPath(file_name)
    posix = PurePosixPath(file_name.replace("\\", "/"))
    if posix.is_absolute() or win.is_absolute() or win.drive or win.root:
        raise InputError(f"file name {file_name!r} is an absolute path; it must be relative to the dataset folder", file=file, field=field)
    if ".." in posix.parts:
        raise InputError(f"file name {file_name!r} escapes the dataset folder", file=file, field=field)
    path = Path(root).joinpath(*posix.parts)
    try:
        real_root, real = Path(root).resolve(), path.resolve()
    except (OSError, RuntimeError) as e:  # a symbolic-link loop
        raise InputError(f"file name {file_name!r} cannot be resolved ({e})", file=file, field=field) from None
    if real != real_root and real_root not in real.parents:
        raise InputError(f"file name {file_name!r} escapes the dataset folder through a symbolic link (to {real})", file=file, field=field)
    return path


def _to_bgr(arr: np.ndarray) -> np.ndarray:
    if arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected a uint8 (or uint16 for PNG) image, got {arr.dtype}")
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1):
        return arr
    if arr.ndim == 3 and arr.shape[2] == 3:
        return cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    if arr.ndim == 3 and arr.shape[2] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)
    raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {arr.shape}")


def encode_jpeg(rgb_uint8: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of a ``uint8 (H, W, 3)`` RGB or ``(H, W)`` grey image."""
    if rgb_uint8.dtype != np.uint8 or not (rgb_uint8.ndim == 2 or (rgb_uint8.ndim == 3 and rgb_uint8.shape[2] == 3)):
        raise ValueError(f"encode_jpeg needs uint8 (H, W, 3) or (H, W), got {rgb_uint8.dtype} {rgb_uint8.shape}")
    arr = np.ascontiguousarray(rgb_uint8)
    if arr.ndim == 2:
        return simplejpeg.encode_jpeg(arr[..., None], quality=int(quality), colorspace="GRAY")
    return simplejpeg.encode_jpeg(arr, quality=int(quality), colorspace="RGB", colorsubsampling="420")


def encode_png(arr: np.ndarray) -> bytes:
    """Lossless PNG bytes of a ``uint8``/``uint16`` ``(H, W)``, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA image.

    ``bool`` arrays are written as 0/255 grey masks.
    """
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    ok, buf = cv2.imencode(".png", _to_bgr(arr))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
