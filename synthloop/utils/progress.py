"""The progress callback every long-running loop and job accepts."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int], None]
"""``progress(task, done, total)``: ``task`` names the phase (e.g. ``"cycle 2: synthesizer"``)."""

StepProgress = Callable[[int, int, float], None]
"""``progress(step, total, loss)``: per optimiser step of one training run."""

__all__ = ["Progress", "StepProgress"]
