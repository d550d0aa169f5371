"""Checkpoints of the refiners: a trainer's full state (models, optimisers, generators, pools,
monitor, history) and the run's config in one atomically written file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from synthloop.errors import InputError
from synthloop.loops.checkpoint import load_checkpoint, save_checkpoint
from synthloop.loops.refine.cyclegan import CycleGANTrainer
from synthloop.loops.refine.mrgan import MrGANTrainer
from synthloop.loops.refine.pixelda import PixelDATrainer

Trainer = CycleGANTrainer | MrGANTrainer | PixelDATrainer


def save_refiner_checkpoint(path: str | Path, trainer: Trainer, config: Mapping[str, Any] | None = None) -> None:
    """Write ``trainer``'s full state (and the run's config) to ``path`` atomically."""
    save_checkpoint(path, {"kind": "refiner", "config": dict(config) if config is not None else None, "trainer": trainer.state_dict()})


def read_refiner_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_refiner_checkpoint` (tensors on the CPU).

    Raises:
        InputError: missing or unreadable file, or a checkpoint of another kind.
    """
    payload = load_checkpoint(path)
    if payload.get("kind") != "refiner" or "trainer" not in payload:
        raise InputError("not a synthloop refinement checkpoint", file=Path(path))
    return payload


def load_refiner_checkpoint(path: str | Path, trainer: Trainer) -> dict[str, Any]:
    """Restore ``trainer`` from ``path``; returns the checkpoint's config (or ``None``)."""
    payload = read_refiner_checkpoint(path)
    try:
        trainer.load_state_dict(payload["trainer"])
    except InputError as e:
        raise InputError(e.message, file=path, field=e.field) from None
    except (KeyError, RuntimeError, ValueError) as e:
        raise InputError(f"checkpoint does not match this run's models ({type(e).__name__}: {e})", file=path) from None
    return payload["config"]
