"""``synthloop demo`` (TERSE vs random on AffNIST-style digits), ``synthloop terse-train`` (the TERSE
classification loop on MNIST) and ``synthloop terse`` (TERSE for detection on a COCO data set)."""

from __future__ import annotations

from pathlib import Path

import typer

from synthloop.cli._app import app, apply_threads, friendly_errors, overrides_argument, progress_display, threads_option


@app.command("demo")
@friendly_errors
def terse_demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Output folder for report.html and the runs."),
    full: bool = typer.Option(False, "--full", help="The full AffNIST budget (about 30 min on 2 CPU cores) instead of the quick one."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
    threads: int | None = threads_option(),
) -> None:
    """TERSE vs random AffNIST-recipe samples (TERSE Fig. 7) on built-in MNIST, with an HTML report.

    Trains an MNIST-only classifier, fine-tunes two copies with 500 samples at a time (random
    recipe digits vs. hard examples from the TERSE synthesizer), prints a table of the numbers and
    writes OUT/report.html (plots, sample grids, hardness histogram). Quick mode: a few minutes.
    """
    apply_threads(threads)
    from synthloop.jobs.demo import run_terse_demo

    with progress_display() as progress:
        run_terse_demo(out, quick=not full, device=device, progress=progress)


@app.command("terse-train")
@friendly_errors
def terse_train(
    config: Path | None = typer.Argument(None, help="YAML config (synthloop.jobs.terse_mnist.TerseMnistConfig); defaults if omitted."),
    overrides: list[str] | None = overrides_argument("loop.cycles=5 loop.hard_per_class=100"),
    out: Path = typer.Option(..., "--out", help="Run folder: config, checkpoint, caches per cycle, history, exported target."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint in --out (same config)."),
    max_cycles: int | None = typer.Option(None, "--max-cycles", min=1, help="Stop after this many cycles in total (resume later)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
    threads: int | None = threads_option(),
) -> None:
    """Run the TERSE classification loop on MNIST: S finds hard examples per class, T trains on them.

    Writes OUT/config.yaml, checkpoint.pt (after every cycle), history.json,
    cycles/cycle_001/samples.npz, ... (images, labels, affine params, source index, hardness) and
    grid.png, and when all cycles are done target.pt2 + target.json (loads without synthloop).
    """
    from synthloop.config import build_config, load_config
    from synthloop.jobs.terse_mnist import TerseMnistConfig, run_terse_mnist

    if config is not None and "=" in config.name and not config.exists():
        # no config file, only overrides: the first positional argument is an override
        overrides = [str(config), *(overrides or [])]
        config = None
    cfg = load_config(TerseMnistConfig, config, overrides) if config is not None else build_config(TerseMnistConfig, {}, overrides, source="<defaults>")
    apply_threads(threads, configured=cfg.threads)
    with progress_display() as progress:
        result = run_terse_mnist(cfg, out, resume=resume, max_cycles=max_cycles, device=device, progress=progress)
    last = result.history[-1] if result.history else {}
    state = "finished" if result.finished else f"stopped after cycle {result.completed_cycles} of {cfg.loop.cycles} (continue with --resume)"
    acc = last.get("test_acc")
    typer.echo(
        f"{state}; {sum(len(c) for c in result.caches)} synthesized samples"
        + (f", AffNIST-style test accuracy {acc:.3f}" if acc is not None else "")
        + (f"; model: {out / result.exported['file']}" if result.exported else "")
        + f"; run folder: {out}"
    )


@app.command("terse")
@friendly_errors
def terse_detection(
    config: Path = typer.Argument(..., help="Job config YAML (synthloop.jobs.terse_detection_config.TerseDetectionJobConfig; see examples/terse_detection/)."),
    overrides: list[str] | None = overrides_argument("loop.cycles=2 baseline.epochs=10 model.name=fcos_resnet50_fpn"),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default runs/terse/<config name>); must be empty unless --resume."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out (same config; loop.cycles may grow)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    threads: int | None = threads_option(),
) -> None:
    """TERSE for detection on your own COCO data: baseline, hard synthetic scenes, fine-tuning, report.

    Trains (or loads) the detector on the real set, runs the TERSE scene loop (synthesizer S against
    the detector T, realism discriminator D), evaluates again and writes into OUT: the hard
    synthetic examples as a COCO data set with per-image replay params (synthetic/), the fine-tuned
    model (model.pt + model.json), config.resolved.yaml, run.json, metrics.json and report.html.
    """
    import sys

    from synthloop.jobs.terse_detection import default_out_dir, run_terse_detection_job
    from synthloop.jobs.terse_detection_config import load_job_config

    cfg = load_job_config(config, overrides or [])
    apply_threads(threads, configured=cfg.threads)
    out_dir = out if out is not None else default_out_dir(config)
    with progress_display(quiet) as progress:  # also shows the one-time build of the built-in digit scenes
        result = run_terse_detection_job(cfg, out_dir, resume=resume, progress=progress, device=device, config_file=config, argv=sys.argv)
    print_terse_summary(result, out_dir)


def fmt_ap(ap: dict | None) -> str:
    """``AP50 x, AP80 y, AP z`` in percent, or ``-``."""
    return "-" if not ap else f"AP50 {100 * ap['ap50']:.1f}, AP80 {100 * ap['ap80']:.1f}, AP {100 * ap['ap']:.1f}"


def print_terse_summary(result, out_dir: Path) -> None:
    """The lines ``synthloop terse`` (and ``synthloop improve`` with ``method: terse``) prints at the end."""
    import json

    evaluated = json.loads((out_dir / "metrics.json").read_text()).get("eval_images")
    typer.echo(f"AP on {evaluated} evaluation images")
    typer.echo(f"baseline: {fmt_ap(result.baseline_ap)}")
    typer.echo(f"fine-tuned after {len(result.history)} cycles: {fmt_ap(result.final_ap)}")
    if len(result.eval_sets) > 1:  # named eval sets: the lines above are the first one's
        for name, block in result.eval_sets.items():
            typer.echo(f"  {name} ({block['images']} images): baseline {fmt_ap(block['baseline'])} -> fine-tuned {fmt_ap(block['finetuned'])}")
    if result.plausibility and result.plausibility.get("plausible_fraction") is not None:
        p = result.plausibility
        typer.echo(
            f"plausibility ({p['reference']}): {p['plausible_fraction']:.1%} of the kept objects still detected, {p['hard_plausible_fraction']:.1%} hard and plausible"
        )
    typer.echo(f"{result.synthetic_images} synthetic hard examples in {out_dir / 'synthetic'}; report: {out_dir / 'report.html'}")
