"""``synthloop demo`` (TERSE vs random on AffNIST-style digits) and ``synthloop terse-train``: the TERSE classification loop on MNIST."""

from __future__ import annotations

from pathlib import Path

import typer

from synthloop.cli._app import app, friendly_errors


@app.command("demo")
@friendly_errors
def terse_demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Output folder for report.html and the runs."),
    full: bool = typer.Option(False, "--full", help="The full AffNIST budget (about 30 min on 2 CPU cores) instead of the quick one."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
) -> None:
    """TERSE vs random AffNIST-recipe samples (TERSE Fig. 7) on built-in MNIST, with an HTML report.

    Trains an MNIST-only classifier, fine-tunes two copies with 500 samples at a time (random
    recipe digits vs. hard examples from the TERSE synthesizer), prints a table of the numbers and
    writes OUT/report.html (plots, sample grids, hardness histogram). Quick mode: a few minutes.
    """
    from synthloop.loops.demo import run_terse_demo

    run_terse_demo(out, quick=not full, device=device)


@app.command("terse-train")
@friendly_errors
def terse_train(
    config: Path | None = typer.Argument(None, help="YAML config (synthloop.loops.terse_mnist.TerseMnistConfig); defaults if omitted."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. loop.cycles=5 loop.hard_per_class=100."),
    out: Path = typer.Option(..., "--out", help="Run folder: config, checkpoint, caches per cycle, history, exported target."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint in --out (same config)."),
    max_cycles: int | None = typer.Option(None, "--max-cycles", min=1, help="Stop after this many cycles in total (resume later)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
) -> None:
    """Run the TERSE classification loop on MNIST: S finds hard examples per class, T trains on them.

    Writes OUT/config.yaml, checkpoint.pt (after every cycle), history.json,
    cycles/cycle_XXX/samples.npz (images, labels, affine params, source index, hardness) and
    grid.png, and when all cycles are done target.pt2 + target.json (loads without synthloop).
    """
    from synthloop.config import build_config, load_config
    from synthloop.loops.terse_mnist import TerseMnistConfig, run_terse_mnist

    if config is not None and "=" in config.name and not config.exists():
        # no config file, only overrides: the first positional argument is an override
        overrides = [str(config), *(overrides or [])]
        config = None
    cfg = load_config(TerseMnistConfig, config, overrides) if config is not None else build_config(TerseMnistConfig, {}, overrides, source="<defaults>")
    result = run_terse_mnist(cfg, out, resume=resume, max_cycles=max_cycles, device=device, progress=None)
    last = result.history[-1] if result.history else {}
    state = "finished" if result.finished else f"stopped after cycle {result.completed_cycles} of {cfg.loop.cycles} (continue with --resume)"
    acc = last.get("test_acc")
    typer.echo(
        f"{state}; {sum(len(c) for c in result.caches)} synthesized samples"
        + (f", AffNIST-style test accuracy {acc:.3f}" if acc is not None else "")
        + (f"; model: {out / result.exported['file']}" if result.exported else "")
        + f"; run folder: {out}"
    )
