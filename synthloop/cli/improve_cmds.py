"""``synthloop improve``: make a detector better with synthetic data, by the feedback loop measured
best (``method: terse | imitate`` in the config; see :mod:`synthloop.jobs.improve`)."""

from __future__ import annotations

from pathlib import Path

import typer

from synthloop.cli._app import app, apply_threads, friendly_errors, overrides_argument, progress_display, threads_option
from synthloop.cli.imitate_cmds import print_imitate_summary
from synthloop.cli.terse_cmds import print_terse_summary


@app.command("improve")
@friendly_errors
def improve(
    config: Path = typer.Argument(..., help="A synthloop terse or synthloop imitate job config, with `method: terse|imitate` (default: the measured best)."),
    overrides: list[str] | None = overrides_argument("method=imitate loop.max_cycles=2"),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default runs/improve/<config name>); must be empty unless --resume."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out (same config and method)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    threads: int | None = threads_option(),
) -> None:
    """Improve a detector with synthetic data by the feedback loop measured best (method: terse|imitate).

    A baseline on the real set, then the loop `method` names (terse: TERSE hard scenes; imitate:
    re-simulated validation failures), with the run folder and report of that method's own command.
    """
    import sys

    from synthloop.jobs.improve import default_out_dir, load_improve_config, run_improve_job

    cfg = load_improve_config(config, overrides or [])
    apply_threads(threads, configured=cfg.job.threads)
    out_dir = out if out is not None else default_out_dir(config)
    typer.echo(f"method: {cfg.method}")
    with progress_display(quiet) as progress:
        result = run_improve_job(cfg, out_dir, resume=resume, progress=progress, device=device, config_file=config, argv=sys.argv)
    (print_terse_summary if cfg.method == "terse" else print_imitate_summary)(result, out_dir)
