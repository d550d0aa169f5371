"""Shared helpers of the dataset writers: staged output folders, image copying, JSON-safe values."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from synthloop.errors import InputError


def make_temp_sibling(path: Path, tag: str = "tmp") -> Path:
    """Create and return an empty hidden folder next to ``path`` (same file system, so renames are atomic).

    Created with ``mkdir`` rather than ``tempfile.mkdtemp`` so that it gets the usual permissions
    (``mkdtemp`` makes it private, and the folder may become the final output).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        cand = path.parent / f".{path.name}.{secrets.token_hex(4)}.{tag}"
        try:
            cand.mkdir()
            return cand
        except FileExistsError:
            continue


@contextlib.contextmanager
def staged_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``out_dir``; on success move its contents into ``out_dir``.

    Nothing appears in ``out_dir`` until the body has finished without an exception; on an
    exception the staging folder is removed. When ``out_dir`` is missing or empty the staging
    folder is renamed onto it; otherwise each staged file replaces its counterpart in ``out_dir``
    (files of ``out_dir`` that were not staged are left alone).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("output path exists and is not a folder", file=out_dir)
    stage = make_temp_sibling(out_dir)
    try:
        yield stage
        if not out_dir.exists() or not any(out_dir.iterdir()):
            if out_dir.exists():
                out_dir.rmdir()
            os.replace(stage, out_dir)
            return
        for dirpath, _dirnames, filenames in os.walk(stage):
            rel = Path(dirpath).relative_to(stage)
            (out_dir / rel).mkdir(parents=True, exist_ok=True)
            for name in filenames:
                os.replace(Path(dirpath) / name, out_dir / rel / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def under_images(file_name: str, folder: str = "images") -> str:
    """``file_name`` placed under ``folder/`` (unchanged when it already starts with it), POSIX separators."""
    parts = PurePosixPath(file_name.replace("\\", "/")).parts
    if parts and parts[0] == folder:
        parts = parts[1:]
    return str(PurePosixPath(folder, *parts))


def check_unique_targets(targets: dict[str, str], out_file: str | Path) -> None:
    """Raise when two source file names map to the same output file name."""
    seen: dict[str, str] = {}
    for src, dst in targets.items():
        if dst in seen:
            raise InputError(f"file names {seen[dst]!r} and {src!r} would both be written to {dst!r}", file=out_file, field="file_name")
        seen[dst] = src


def copy_file(src: Path, dst: Path, *, field: str | None = None) -> None:
    """Copy ``src`` to ``dst`` (creating folders); ``InputError`` when ``src`` is missing."""
    if not src.is_file():
        raise InputError("image file not found", file=src, field=field)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


class _NotJson(Exception):
    """Raised by :func:`_plain` for a value it cannot convert (:func:`jsonable` then names it)."""


_PLAIN = frozenset((str, int, float, bool, type(None)))


def _leaf(value: Any) -> Any:
    """A value that is not a container, as a plain JSON type; :class:`_NotJson` when it has none."""
    if value is None or isinstance(value, (bool, str, int, float)):  # subclasses (an IntEnum, numpy's float64) kept as they are
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise _NotJson


def _plain(value: Any) -> Any:
    """:func:`jsonable` without the field path: the same result, several times faster on the large
    nested params records a paste job writes (building a path string per element dominated)."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return _leaf(value)


def jsonable(value: Any, where: str, file: str | Path | None = None) -> Any:
    """``value`` with numpy scalars/arrays and tuples turned into plain JSON types; a value that
    cannot be written is an :class:`InputError` naming ``file`` and its field under ``where``."""
    try:
        return _plain(value)
    except _NotJson:
        return _jsonable_named(value, where, file)


def _jsonable_named(value: Any, where: str, file: str | Path | None) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable_named(v, f"{where}.{k}", file) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable_named(v, f"{where}[{i}]", file) for i, v in enumerate(value)]
    try:
        return _leaf(value)
    except _NotJson:
        raise InputError(f"value of type {type(value).__name__} cannot be written to JSON", file=file, field=where) from None
