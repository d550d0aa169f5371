"""Memory: allocator tuning for generation workers, and the up-front "will it fit" check.

glibc returns large freed blocks (>= 128 KiB by default) to the OS and maps them again on the
next allocation; every page of a fresh mapping then costs a page fault. A 640x480 float32 canvas
is 3.7 MB, so a generator that allocates a few per image spends most of its time in page faults
(measured here: 6.1 ms -> 1.8 ms per allocate-fill-copy cycle once freed memory is kept). Raising
glibc's mmap and trim thresholds keeps freed blocks in the process for reuse.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(limit_bytes: int = 256 * 1024 * 1024) -> bool:
    """Ask glibc to keep freed blocks up to ``limit_bytes`` for reuse. Returns whether it applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, int(limit_bytes)) == 1
    ok &= libc.mallopt(_M_TRIM_THRESHOLD, int(2 * limit_bytes)) == 1
    return bool(ok)


# working buffers per canvas pixel: float32 RGBA canvas, a float32 RGB copy, masks and blend
# temporaries, the encoded image: about 16 float32 planes (64 bytes) per pixel, measured loosely
BYTES_PER_CANVAS_PIXEL = 64
MEMORY_HEADROOM = 0.8
"""A job may plan to use at most this share of the memory available when it starts."""


def available_memory() -> int:
    """Bytes of memory available to new allocations now (``psutil.virtual_memory().available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def canvas_bytes(height: int, width: int, count: int = 1, per_pixel: int = BYTES_PER_CANVAS_PIXEL) -> int:
    """Estimated working memory of ``count`` canvases of ``height`` x ``width`` in flight at once."""
    return int(height) * int(width) * int(count) * int(per_pixel)


def check_fits(estimate: int, *, what: str, field: str, file: str | None = None, available: int | None = None) -> None:
    """Refuse up front a plan whose memory ``estimate`` (bytes) exceeds ``MEMORY_HEADROOM`` of the
    available memory, with a message giving the estimate.

    Raises:
        InputError: naming ``field`` (and ``file``), the estimate and what is available.
    """
    from synthloop.errors import InputError

    avail = available_memory() if available is None else int(available)
    if estimate > MEMORY_HEADROOM * avail:
        raise InputError(
            f"{what} needs about {_gib(estimate)} of memory but only {_gib(avail)} is available; "
            "use a smaller canvas, a smaller batch or fewer workers",
            file=file,
            field=field,
        )
