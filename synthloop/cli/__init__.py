"""The ``synthloop`` command line. Each subcommand lives in its own module and only parses
arguments, builds a config and calls the library."""

# subcommand modules register themselves on ``app`` when imported
from synthloop.cli import (
    data_cmds,  # noqa: F401,E402
    imitate_cmds,  # noqa: F401,E402
    improve_cmds,  # noqa: F401,E402
    paste_cmds,  # noqa: F401,E402
    refine_cmds,  # noqa: F401,E402
    render_cmds,  # noqa: F401,E402
    terse_cmds,  # noqa: F401,E402
)
from synthloop.cli._app import app, main

__all__ = ["app", "main"]
