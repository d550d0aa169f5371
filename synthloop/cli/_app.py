from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from synthloop.errors import SynthloopError

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
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
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


def apply_threads(threads: int | None, workers: int = 1) -> int:
    """Set torch's threads for this command and say so on stderr (``run.json`` records it too)."""
    from synthloop.utils.threads import use_threads

    n, why = use_threads(threads, workers)
    err_console.print(f"torch threads: {n} ({why})", highlight=False)
    return n


def warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None) -> None:
    """Show a warning as one clean line on stderr (``warning: ...``), without the Python source line."""
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


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
