"""Image folders with one subfolder per class, read into tensors.

Layout::

    root/
        <class name>/<image>.png     # one subfolder per class, any image format PIL reads
        ...

A folder whose images sit directly in ``root`` (no class subfolders) is *unlabelled*: its
``labels`` are ``None`` (e.g. unpaired real photos for a CycleGAN). A folder mixing both is an
error, as is an empty one. Optional foreground masks live in a parallel folder with the same
relative paths (any image extension; see :func:`synthloop.data.images.load_mask` for what counts
as foreground).

Every image of a folder must have the same size and the same number of channels (grey = 1:
``L``, ``1``, ``I``, ``F``, ``LA`` modes; colour = 3: ``RGB``, ``RGBA``, palette, ...; alpha is
dropped), unless ``channels`` asks for a conversion. Class names are sorted, so two folders with
the same class set get the same class indices; :func:`check_same_classes` checks a real and a
synthetic folder against each other.

Refined images are written back with :func:`write_image_folder`, which builds the whole folder
under a temporary name and renames it into place, so a reader never sees half of it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from synthloop.data.images import IMAGE_EXTENSIONS, encode_png, load_image, load_mask, safe_join
from synthloop.errors import InputError

_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class ImageStack:
    """``len``, ``channels`` and ``size`` of anything holding ``images`` ``Tensor[N, C, H, W]``."""

    images: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.images.shape[2]), int(self.images.shape[3])


@dataclass
class ImageFolder(ImageStack):
    """Images read from a folder.

    Attributes:
        root: the folder read.
        images: ``Tensor[N, C, H, W]`` float32 in [0, 1].
        labels: ``Tensor[N]`` int64 class indices into ``classes``, or ``None`` (unlabelled folder).
        classes: sorted class (subfolder) names; empty for an unlabelled folder.
        files: each image's path relative to ``root`` (POSIX form), in tensor order.
        masks: ``Tensor[N, 1, H, W]`` float32 in {0, 1}, or ``None``.
    """

    root: Path
    images: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str]
    files: list[str]
    masks: torch.Tensor | None = None


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _list_images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if _is_image(p)), key=lambda p: p.name)


def _header(path: Path) -> tuple[tuple[int, int], int]:
    """``((W, H), channels)`` from the file header, without decoding pixels."""
    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"not a readable image ({e})", file=path) from None
    return size, 1 if mode in _GREY_MODES else 3


def _scan(root: Path, what: str) -> tuple[list[tuple[Path, int | None]], list[str]]:
    if not root.exists():
        raise InputError(f"{what} folder not found", file=root)
    if not root.is_dir():
        raise InputError(f"{what} folder is not a directory", file=root)
    class_dirs = _visible_dirs(root)
    loose = _list_images(root)
    if class_dirs and loose:
        raise InputError(
            f"{what} folder mixes class subfolders ({', '.join(d.name for d in class_dirs[:5])}) with images directly "
            f"inside it (e.g. {loose[0].name}); put every image in a class subfolder, or use no subfolders at all",
            file=root,
        )
    if loose:
        return [(p, None) for p in loose], []
    if not class_dirs:
        raise InputError(f"{what} folder is empty: no class subfolders and no images ({', '.join(IMAGE_EXTENSIONS)})", file=root)
    entries: list[tuple[Path, int | None]] = []
    for label, d in enumerate(class_dirs):
        files = _list_images(d)
        if not files:
            raise InputError(f"class folder {d.name!r} of the {what} folder holds no images ({', '.join(IMAGE_EXTENSIONS)})", file=d)
        entries += [(p, label) for p in files]
    return entries, [d.name for d in class_dirs]


def _find_mask(mask_root: Path, rel: Path) -> Path:
    stem = mask_root / rel.with_suffix("")
    candidates = [stem.with_suffix(ext) for ext in IMAGE_EXTENSIONS]
    candidates += [stem.with_suffix(ext.upper()) for ext in IMAGE_EXTENSIONS]
    for c in candidates:
        if c.is_file():
            return c
    raise InputError(f"no mask for image {rel.as_posix()} (looked for {stem.name}.* in {stem.parent})", file=mask_root)


def read_image_folder(
    root: str | Path,
    *,
    channels: int | None = None,
    masks: str | Path | None = None,
    what: str = "image",
) -> ImageFolder:
    """Read every image under ``root`` (class subfolders, or images directly inside).

    Args:
        root: the folder.
        channels: ``1`` or ``3`` to convert every image to grey or RGB; ``None`` requires all
            images to agree and keeps their channel count.
        masks: optional parallel folder of foreground masks (same relative paths, any image
            extension, each the size of its image).
        what: how messages name the folder (``"real"``, ``"synthetic"``, ...).

    Raises:
        InputError: missing or empty folder, an empty class folder, class folders mixed with
            loose images, an unreadable image, images of different sizes or channel counts
            (naming the first image and the offending one), a missing or mis-sized mask.
    """
    if channels not in (None, 1, 3):
        raise InputError(f"channels must be 1, 3 or null, got {channels!r}", field="channels")
    root = Path(root)
    entries, classes = _scan(root, what)
    first = entries[0][0]
    size0, ch0 = _header(first)
    for path, _ in entries[1:]:
        size, ch = _header(path)
        if size != size0:
            raise InputError(
                f"image is {size[0]}x{size[1]} but {first.relative_to(root).as_posix()} is {size0[0]}x{size0[1]}; "
                f"every image of the {what} folder must have the same size",
                file=path,
                field="size",
            )
        if channels is None and ch != ch0:
            raise InputError(
                f"image has {ch} channel(s) but {first.relative_to(root).as_posix()} has {ch0}; every image of the "
                f"{what} folder must have the same channel count (or set channels: 1 or 3 to convert)",
                file=path,
                field="channels",
            )
    out_ch = channels if channels is not None else ch0
    mode = "L" if out_ch == 1 else "RGB"
    w, h = size0
    images = np.empty((len(entries), h, w, out_ch), np.uint8)
    for i, (path, _) in enumerate(entries):
        arr = load_image(path, mode=mode)
        images[i] = arr.reshape(h, w, out_ch)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().float().div_(255.0)
    labels = None if not classes else torch.tensor([lab for _, lab in entries], dtype=torch.int64)
    files = [p.relative_to(root).as_posix() for p, _ in entries]
    mask_tensor = None
    if masks is not None:
        mask_root = Path(masks)
        if not mask_root.is_dir():
            raise InputError(f"mask folder for the {what} images not found", file=mask_root)
        m = np.empty((len(entries), 1, h, w), np.float32)
        for i, (path, _) in enumerate(entries):
            mpath = _find_mask(mask_root, path.relative_to(root))
            mk = load_mask(mpath)
            if mk.shape != (h, w):
                raise InputError(f"mask is {mk.shape[1]}x{mk.shape[0]} but its image is {w}x{h}", file=mpath, field="size")
            m[i, 0] = mk
        mask_tensor = torch.from_numpy(m)
    return ImageFolder(root=root, images=tensor, labels=labels, classes=classes, files=files, masks=mask_tensor)


def check_same_classes(real: ImageFolder, synthetic: ImageFolder) -> None:
    """Raise :class:`InputError` unless both folders are labelled with the same class names.

    An unlabelled folder (no class subfolders) passes: unpaired training needs no labels.
    """
    if real.labels is None or synthetic.labels is None:
        return
    if real.classes == synthetic.classes:
        return
    only_real = sorted(set(real.classes) - set(synthetic.classes))
    only_syn = sorted(set(synthetic.classes) - set(real.classes))
    parts = []
    if only_syn:
        parts.append(f"only in the synthetic folder {synthetic.root}: {', '.join(only_syn)}")
    if only_real:
        parts.append(f"only in the real folder {real.root}: {', '.join(only_real)}")
    raise InputError(
        f"real and synthetic folders have different class subfolders ({'; '.join(parts)}); "
        "label-aligned refinement needs the same classes on both sides",
        file=synthetic.root,
        field="classes",
    )


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``Tensor[N, C, H, W]`` in [0, 1] -> ``uint8 (N, H, W)`` (C = 1) or ``(N, H, W, C)`` (C = 3)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
    arr = images.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def write_image_folder(dst: str | Path, images: torch.Tensor, files: list[str]) -> Path:
    """Write ``images`` ``Tensor[N, C, H, W]`` in [0, 1] as PNGs at ``dst / files[i]`` (suffix
    replaced by ``.png``), replacing ``dst`` as a whole once everything is written. Returns ``dst``."""
    dst = Path(dst)
    if len(files) != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {len(files)} file names")
    arr = to_uint8(images)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the result is an ordinary output folder
        # plain writes are enough inside the private temporary folder: it only appears as ``dst``
        # once every file is complete
        for a, rel in zip(arr, files):
            path = safe_join(tmp, Path(rel).with_suffix(".png").as_posix(), field="files")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_png(np.ascontiguousarray(a)))
        old = None
        if dst.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
            os.replace(dst, old / dst.name)
        os.replace(tmp, dst)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst
