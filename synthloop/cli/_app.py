from __future__ import annotations

import functools
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Self

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from rich.text import Text

from synthloop.errors import InputError, SynthloopError
from synthloop.utils.progress import PeriodicLines, format_rate

app = typer.Typer(
    name="synthloop",
    help="Task-aware synthetic training data: composite, learn against the model, refine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn synthloop's own errors into a clear message and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SynthloopError as e:
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)  # escape: "[coins]" is no markup
            raise typer.Exit(code=2) from None

    return wrapper


def overrides_argument(example: str) -> Any:
    """The optional ``OVERRIDES...`` argument of a config-driven command; ``example`` shows a few."""
    return typer.Argument(None, help=f"key=value overrides, e.g. {example}.")


def threads_option() -> Any:
    """The ``--threads N`` option of every training / generation command."""
    return typer.Option(
        None, "--threads", min=1,
        help="torch threads per process (default: the CPUs this process may use / worker processes; 1 when the machine is busy).",
    )  # fmt: skip


def apply_threads(threads: int | None, workers: int = 1, configured: int | None = None) -> int:
    """Set torch's threads for this command (``--threads``, else the config's ``threads``, else the
    default) and say so on stderr (``run.json`` records it too)."""
    from synthloop.utils.threads import use_threads

    n, why = use_threads(threads, workers, configured)
    err_console.print(f"torch threads: {n} ({why})", highlight=False)
    return n


PROGRESS_INTERVAL_ENV = "SYNTHLOOP_PROGRESS_INTERVAL"
"""Environment variable: seconds between plain progress lines when the output is not a terminal (default 10)."""
DEFAULT_PROGRESS_INTERVAL = 10.0


def progress_interval() -> float:
    """``$SYNTHLOOP_PROGRESS_INTERVAL`` if set (seconds, >= 0), else :data:`DEFAULT_PROGRESS_INTERVAL`."""
    raw = os.environ.get(PROGRESS_INTERVAL_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_PROGRESS_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects nan
        raise InputError(f"expected a number of seconds >= 0, got {raw!r}", field=PROGRESS_INTERVAL_ENV)
    return value


class RateColumn(ProgressColumn):
    """Items per second from rich's moving estimate, in the task's ``unit`` (e.g. ``img/s``)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "")
        return Text(f"-- {unit}/s" if speed is None else format_rate(speed, unit), style="progress.data.speed")


class ProgressDisplay:
    """The progress display of every command: a :data:`~synthloop.utils.progress.Progress`
    callback (``display(task, done, total)``; ``total == 0`` is a one-line message).

    On a terminal it draws a live rich bar per running task (done/total, rate, elapsed, ETA) and
    prints one line per finished task above them. When the output is not a terminal (a log file,
    a pipe, CI), where a live bar would only be printed when the phase ends, it prints a plain line
    instead every ``interval`` seconds while a task advances (task, done/total, rate, ETA) and one
    when it finishes (:class:`~synthloop.utils.progress.PeriodicLines`). Messages print at once in
    both cases. ``enabled=False`` (``--quiet``) shows nothing. Use it as a context manager.

    Args:
        enabled: show anything at all.
        interval: seconds between plain lines (default ``$SYNTHLOOP_PROGRESS_INTERVAL`` or 10).
        console: where to write (default stderr, so stdout keeps only the results).
        clock: time source of the plain lines (tests pass a fake one).
    """

    def __init__(self, *, enabled: bool = True, interval: float | None = None, console: Console | None = None, clock: Callable[[], float] = time.monotonic):
        self.enabled = enabled
        self.console = console if console is not None else Console(stderr=True)
        self.interval = progress_interval() if interval is None else interval
        self.live = enabled and self.console.is_terminal
        self._bar: RichProgress | None = None
        self._tasks: dict[str, Any] = {}
        # on a terminal the live bars show the progress, so the lines are only the finished tasks and messages
        self._lines = PeriodicLines(self.message, math.inf if self.live else self.interval, clock=clock)

    def __enter__(self) -> Self:
        if self.live:
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                RateColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
            )
            self._bar = RichProgress(*columns, console=self.console, transient=True)
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            for task in self._tasks:  # unfinished (an error, Ctrl-C): keep where each one stopped
                self.message(self._lines.line(task))
            self._tasks.clear()

    def message(self, text: str) -> None:
        """Print ``text`` as one line (above the live bars on a terminal)."""
        if self.enabled:
            self.console.print(text, highlight=False, soft_wrap=True, markup=False)

    def __call__(self, task: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is not None and not (total == 0 and done == 0):
            if task not in self._tasks:
                self._tasks[task] = self._bar.add_task(task, total=max(total, 1), completed=done, unit=self._lines.units.get(task, ""))
            self._bar.update(self._tasks[task], completed=done, total=max(total, 1))
            if done >= total:  # its line below replaces the bar
                self._bar.remove_task(self._tasks.pop(task))
                self._bar.refresh()
        self._lines(task, done, total)

    def counter(self, task: str, unit: str = "") -> Callable[[int, int], None]:
        """A ``callback(done, total)`` for jobs that report one count (``run_paste``, ``write_dataset``)."""
        self._lines.units[task] = unit

        def callback(done: int, total: int) -> None:
            if total > 0:  # (0, 0) would read as a message
                self(task, done, total)

        return callback


def progress_display(quiet: bool = False, interval: float | None = None) -> ProgressDisplay:
    """The display a command uses: ``with progress_display(quiet) as progress: run(..., progress=progress)``."""
    return ProgressDisplay(enabled=not quiet, interval=interval)


def warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None) -> None:
    """Show a warning as one clean line on stderr (``warning: ...``), without the Python source line."""
    err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


@app.callback()
def _root() -> None:
    """synthloop command line."""
    import warnings

    warnings.showwarning = warning_line


@app.command("version")
def version() -> None:
    """Print synthloop's version."""
    from synthloop import __version__

    print(__version__)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
