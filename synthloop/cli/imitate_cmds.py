"""``synthloop imitate``: imitation training for detection (re-simulate the detector's failures on a
validation split, retrain on real + synthetic, repeat while validation AP improves)."""

from __future__ import annotations

from pathlib import Path

import typer

from synthloop.cli._app import app, apply_threads, friendly_errors, overrides_argument, progress_display, threads_option
from synthloop.cli.terse_cmds import fmt_ap


@app.command("imitate")
@friendly_errors
def imitate(
    config: Path = typer.Argument(..., help="Job config YAML (synthloop.jobs.imitate_config.ImitateJobConfig; see examples/imitate/)."),
    overrides: list[str] | None = overrides_argument("loop.max_cycles=2 baseline.epochs=10"),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default runs/imitate/<config name>); must be empty unless --resume/--overwrite."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out (same config; loop.max_cycles may grow)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a previous run's files in --out."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    threads: int | None = threads_option(),
) -> None:
    """Imitation training (Kishore et al. 2021): baseline, then cycles of failure mining on the
    validation split, re-simulation of each failure, retraining at <= 50 % synthetic per batch.

    Writes into OUT: config.resolved.yaml, run.json, baseline.pt, cycle_NNN.pt, scenes_NNN.json
    (replay params), failures_NNN.json, cycles.json, model.pt (the best cycle by val AP),
    metrics.json and report.html.
    """
    import sys

    from synthloop.jobs.imitate import default_out_dir, run_imitate_job
    from synthloop.jobs.imitate_config import load_imitate_config

    cfg = load_imitate_config(config, overrides or [])
    apply_threads(threads, configured=cfg.threads)
    out_dir = out if out is not None else default_out_dir(config)
    with progress_display(quiet) as progress:
        result = run_imitate_job(cfg, out_dir, resume=resume, overwrite=overwrite, progress=progress, device=device, config_file=config, argv=sys.argv)
    print_imitate_summary(result, out_dir)


def print_imitate_summary(result, out_dir: Path) -> None:
    """The lines ``synthloop imitate`` (and ``synthloop improve`` with ``method: imitate``) prints at the end."""
    for split in ("val", "test"):
        if split in result.selected:
            typer.echo(f"{split}: baseline {fmt_ap(result.baseline.get(split))} -> cycle {result.selected_cycle} {fmt_ap(result.selected[split])}")
    typer.echo(f"{len(result.history) - 1} cycles ({result.stop_reason}); report: {out_dir / 'report.html'}")
