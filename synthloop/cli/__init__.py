"""The ``synthloop`` command line. Each subcommand lives in its own module and only parses
arguments, builds a config and calls the library."""

from synthloop.cli._app import app, main

# subcommand modules register themselves on ``app`` when imported
from synthloop.cli import data_cmds  # noqa: F401,E402
from synthloop.cli import paste_cmds  # noqa: F401,E402
from synthloop.cli import render_cmds  # noqa: F401,E402
from synthloop.cli import refine_cmds  # noqa: F401,E402
from synthloop.cli import terse_cmds  # noqa: F401,E402

__all__ = ["app", "main"]
