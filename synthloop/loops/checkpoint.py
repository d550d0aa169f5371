"""Atomic checkpoints: ``torch.save`` into a temporary sibling, then rename.

A run killed while writing keeps its previous checkpoint intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from synthloop.errors import InputError
from synthloop.utils.atomic import atomic_open

CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, state dicts, plain Python values) to ``path`` atomically."""
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        torch.save({"version": CHECKPOINT_VERSION, **state}, fh)
    return path


def load_checkpoint(path: str | Path, *, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors only, no pickled code).

    Raises:
        InputError: missing or unreadable file, or a checkpoint of another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint not found", file=path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        raise InputError(f"cannot read checkpoint: {exc}", file=path) from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"not a synthloop checkpoint of version {CHECKPOINT_VERSION}", file=path, field="version")
    return state
