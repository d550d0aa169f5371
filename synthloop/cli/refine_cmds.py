"""``synthloop refine``: train a synthetic-to-real refiner (CycleGAN, MrGAN, PixelDA) and refine a folder."""

from __future__ import annotations

from pathlib import Path

import typer

from synthloop.cli._app import app, apply_threads, friendly_errors, overrides_argument, threads_option


@app.command("refine")
@friendly_errors
def refine(
    config: Path = typer.Argument(..., help="YAML refine config (see synthloop.jobs.refine.RefineConfig)."),
    overrides: list[str] | None = overrides_argument("method=mrgan mrgan.stage2_mode=r_rs seed=3"),
    out: Path = typer.Option(..., "--out", help="Output folder: checkpoint, losses, refined images, metrics."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint in --out (same config)."),
    threads: int | None = threads_option(),
) -> None:
    """Train the configured refiner on data.synthetic -> data.real, then write every synthetic image refined.

    Folders hold one subfolder per class (or unlabelled images directly); relative paths are
    relative to the current directory. Writes config.yaml, checkpoint.pt, losses.json,
    events.json, refined/ (same relative paths, PNG) and metrics.json (label preservation,
    foreground IoU) to --out.
    """
    from synthloop.config import load_config
    from synthloop.jobs.refine import RefineConfig, run_refine

    cfg = load_config(RefineConfig, config, overrides)
    apply_threads(threads, configured=cfg.threads)
    metrics = run_refine(cfg, out, resume=resume, log=typer.echo)
    lp = metrics.get("label_preservation")
    summary = f"label preservation {lp:.3f}, " if lp is not None else ""
    iou = metrics.get("foreground_iou")
    if iou is not None:
        summary += f"foreground IoU {iou:.3f}, "
    typer.echo(f"{summary}{metrics['divergence_events']} divergence event(s); results in {out}")
