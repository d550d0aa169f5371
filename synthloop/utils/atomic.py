"""Atomic file writes: write to a temporary file in the same folder, then ``os.replace``.

A reader never sees a half-written file, and a killed run leaves at most a stray ``.*.tmp``
file, which the job's next run removes (:func:`remove_stray_temps`, under the run-folder lock).
A full disk or file-size limit raises :class:`~synthloop.errors.StorageError` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from synthloop.errors import StorageError

# out of space: disk full, file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored), quota
NO_SPACE = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def storage_error(exc: OSError, path: str | Path) -> StorageError | OSError:
    """A :class:`~synthloop.errors.StorageError` naming ``path`` for an out-of-space ``exc``; ``exc`` otherwise."""
    if exc.errno not in NO_SPACE:
        return exc
    return StorageError(
        f"{path}: cannot write: {exc.strerror or exc} (disk full or file-size limit); free space, then rerun with --resume", path, exc.errno
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _no_space(exc: BaseException) -> OSError | None:
    """The out-of-space ``OSError`` behind ``exc`` (writers such as ``torch.save`` re-raise it as
    another type while cleaning up), or ``None``."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success.

    Raises:
        StorageError: the disk is full or the file-size limit was reached (naming ``path``; the
            temporary file is removed and ``path`` keeps its previous content, if any).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        cause = _no_space(exc)
        if cause is not None:
            raise storage_error(cause, path) from None
        raise


def remove_stray_temps(folder: str | Path, *, recursive: bool = True) -> list[Path]:
    """Delete the temporary files (``.name.xxxx.tmp``) that writers killed mid-write left in
    ``folder``; returns them. Only for a folder this process holds (the run-folder lock): a live
    writer's temporary file would go too."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = sorted(p for p in (folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")) if p.is_file())
    for p in found:
        p.unlink(missing_ok=True)
    return found


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")
