"""The progress callback every long-running loop and job accepts, and a plain-text display for logs.

A ``Progress`` callback gets ``(task, done, total)``. A call with ``total == 0`` is a *message*
(see :func:`announce`): displays print ``task`` once as a line instead of drawing a bar, so a job
can say "building the cache in DIR" through the same callback that reports its progress.

:class:`PeriodicLines` turns the calls into one plain line per ``interval`` seconds (task,
done/total, rate, ETA) plus a line when a task finishes -- what a log file needs, where a live
progress bar would only be printed when the phase ends. The command line uses it whenever its
output is not a terminal (:func:`synthloop.cli._app.progress_display`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

Progress = Callable[[str, int, int], None]
"""``progress(task, done, total)``: ``task`` names the phase (e.g. ``"cycle 2: synthesizer"``);
``total == 0`` makes ``task`` a one-line message (:func:`announce`)."""

StepProgress = Callable[[int, int, float], None]
"""``progress(step, total, loss)``: per optimiser step of one training run."""


def announce(progress: Progress | None, message: str) -> None:
    """Say ``message`` once through ``progress`` (a call with ``done = total = 0``); no-op without one."""
    if progress is not None:
        progress(message, 0, 0)


def format_duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"``, ``"1 h 02 min"``."""
    s = max(round(seconds), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def format_rate(per_s: float, unit: str = "") -> str:
    """``"1,234/s"``, ``"12.5 img/s"``, ``"0.32/s"`` (three significant figures at most)."""
    text = f"{per_s:,.0f}" if per_s >= 100 else f"{per_s:.1f}" if per_s >= 10 else f"{per_s:.2f}"
    return f"{text} {unit}/s" if unit else f"{text}/s"


@dataclass
class _Task:
    start: float
    done0: int
    done: int = 0
    total: int = 0
    finished: bool = False


class PeriodicLines:
    """A :data:`Progress` callback that writes plain lines: at most one every ``interval`` seconds
    while tasks advance, one when a task reaches its total, and every message at once.

    A line reads ``"baseline training: 120/400 (30%), 2.41/s, elapsed 50 s, eta 1 min 56 s"``; the
    rate is the task's mean since its first report (items per second, ``unit`` e.g. ``"img"``;
    items already done at the first report, e.g. by an interrupted run, do not count), the ETA its
    remaining items at that rate.

    Args:
        write: receives each line (without a newline), e.g. ``print`` or a console's ``print``.
        interval: seconds between progress lines (default 10).
        clock: the time source (``time.monotonic``; tests pass a fake one).
    """

    def __init__(self, write: Callable[[str], None], interval: float = 10.0, *, clock: Callable[[], float] = time.monotonic):
        if interval < 0:
            raise ValueError(f"interval must be >= 0, got {interval}")
        self.write = write
        self.interval = float(interval)
        self.clock = clock
        self.units: dict[str, str] = {}
        self._tasks: dict[str, _Task] = {}
        self._last_line = clock()

    def __call__(self, task: str, done: int, total: int) -> None:
        now = self.clock()
        if total == 0 and done == 0:  # a message
            self.write(task)
            return
        state = self._tasks.get(task)
        if state is None or done < state.done:  # a new task, or one that started again
            state = self._tasks[task] = _Task(start=now, done0=done)
        state.done, state.total = done, total
        if done >= total:
            if not state.finished:
                state.finished = True
                self._emit(task, state, now)
            return
        state.finished = False
        if now - self._last_line >= self.interval:
            self._emit(task, state, now)

    def line(self, task: str, now: float | None = None) -> str:
        """The current line of ``task``."""
        state = self._tasks[task]
        now = self.clock() if now is None else now
        elapsed = now - state.start
        unit = self.units.get(task, "")
        text = f"{task}: {state.done}/{state.total}"
        if state.total > 0:
            text += f" ({100 * state.done / state.total:.0f}%)"
        advanced = state.done - state.done0
        rate = advanced / elapsed if elapsed > 0 and advanced > 0 else None
        text += ", " + (format_rate(rate, unit) if rate is not None else f"-- {unit}/s" if unit else "--/s")
        text += f", elapsed {format_duration(elapsed)}"
        if state.done >= state.total:
            return text + ", done"
        return text + (f", eta {format_duration((state.total - state.done) / rate)}" if rate is not None else ", eta --")

    def _emit(self, task: str, state: _Task, now: float) -> None:
        self._last_line = now
        self.write(self.line(task, now))


__all__ = ["PeriodicLines", "Progress", "StepProgress", "announce", "format_duration", "format_rate"]
