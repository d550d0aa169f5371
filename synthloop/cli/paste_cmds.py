"""Generation subcommands: paste, replay, vis, paste-demo."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from synthloop.cli._app import app, apply_threads, friendly_errors, threads_option


class RateColumn(ProgressColumn):
    """Images per second, from rich's moving estimate."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- img/s" if speed is None else f"{speed:,.0f} img/s", style="progress.data.speed")


@contextlib.contextmanager
def image_progress(description: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar (on stderr) fed by ``callback(done, total)``."""
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not enabled, transient=False) as bar:
        task = None

        def callback(done: int, total: int) -> None:
            nonlocal task
            if task is None:
                task = bar.add_task(description, total=total, completed=done)
            else:
                bar.update(task, completed=done)

        yield callback


@app.command("paste")
@friendly_errors
def paste(
    config: Path = typer.Argument(..., help="Paste config YAML (see examples/paste_builtin.yaml)."),
    overrides: list[str] | None = typer.Argument(None, help="Config overrides key=value, e.g. num_images=100 scene.canvas=[256,256]."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (must be empty unless --resume or --overwrite)."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Worker processes; the output does not depend on it."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted job in --out (same config)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a previous job's outputs in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    threads: int | None = threads_option(),
) -> None:
    """Composite cut-outs onto backgrounds and write a labelled dataset (COCO, + YOLO/VOC)."""
    apply_threads(threads, workers)
    from synthloop.jobs.paste import run_paste
    from synthloop.jobs.paste_config import load_paste_config

    cfg = load_paste_config(config, overrides or [])
    with image_progress("paste", enabled=not quiet) as progress:
        summary = run_paste(cfg, out, workers=workers, resume=resume, overwrite=overwrite, progress=progress, argv=sys.argv)
    rate = f" ({summary.images_per_s:,.0f} images/s)" if summary.rendered else ""
    typer.echo(f"wrote {summary.images} images{rate} to {out}: annotations.json, params.jsonl" + "".join(f", {f}/" for f in cfg.formats if f != "coco"))


@app.command("replay")
@friendly_errors
def replay(
    run_dir: Path = typer.Argument(..., help="Output folder of synthloop paste."),
    image_id: int = typer.Argument(..., help="Image id (as in annotations.json / params.jsonl)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write the re-rendered image here (PNG, before JPEG encoding)."),
) -> None:
    """Re-render one image from its stored params and check it is bit-identical (exit 1 if not)."""
    from synthloop.jobs.replay import replay_image

    r = replay_image(run_dir, image_id, save_to=out)
    typer.echo(f"{r.file_name}: file bytes {'identical' if r.bytes_identical else 'DIFFERENT'}, pixels {'identical' if r.pixels_identical else 'DIFFERENT'}, "
               f"labels {'identical' if r.labels_identical else 'not checked' if r.labels_identical is None else 'DIFFERENT'}; "
               f"max |stored - raw render| = {r.max_abs_diff}")  # fmt: skip
    if out is not None:
        typer.echo(f"re-render written to {out}")
    if not r.identical:
        raise typer.Exit(code=1)


@app.command("vis")
@friendly_errors
def vis(
    dataset: Path = typer.Argument(..., help="COCO dataset: annotations JSON, or a folder with annotations.json."),
    out: Path = typer.Option(Path("sheet.png"), "--out", "-o", help="Contact sheet PNG to write."),
    n: int = typer.Option(16, "--n", min=1, help="Number of images (the first n)."),
    tile: int = typer.Option(256, "--tile", min=16, help="Tile size in pixels."),
    image_root: Path | None = typer.Option(None, "--image-root", help="Folder the file_name entries are relative to (default: the JSON's folder)."),
) -> None:
    """Contact sheet of a dataset: images with masks, boxes and class names."""
    from synthloop.report.contact_sheet import load_dataset, write_contact_sheet

    write_contact_sheet(load_dataset(dataset, image_root), out, n=n, tile=tile)
    typer.echo(f"wrote {out}")


@app.command("paste-demo")
@friendly_errors
def paste_demo(
    out: Path = typer.Option(Path("runs/paste_demo"), "--out", "-o", help="Output folder (a previous paste demo there is replaced)."),
    num_images: int = typer.Option(64, "--num-images", min=1, help="Images to generate."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Worker processes."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    threads: int | None = threads_option(),
) -> None:
    """Paste MNIST digit cut-outs onto built-in backgrounds (256x256, COCO) and draw a contact sheet."""
    apply_threads(threads, workers)
    from synthloop.jobs.paste import run_paste
    from synthloop.jobs.paste_config import load_paste_config
    from synthloop.jobs.run_folder import RUN_FILE
    from synthloop.report.contact_sheet import write_contact_sheet

    if out.is_dir() and any(out.iterdir()) and not (out / RUN_FILE).is_file():
        raise typer.BadParameter(f"{out} is not empty and holds no previous demo; pick another --out", param_hint="--out")
    cfg = load_paste_config(None, [f"num_images={num_images}", "scene.canvas=[256,256]", "scene.objects=[2,5]", "scene.blend.modes=[none,alpha,gaussian,box,motion]"])
    with image_progress("demo", enabled=not quiet) as progress:
        summary = run_paste(cfg, out, workers=workers, overwrite=True, progress=progress, argv=sys.argv)
    sheet = write_contact_sheet(out, out / "contact_sheet.png", n=16)
    typer.echo(f"wrote {summary.images} images to {out / 'images'} ({summary.images_per_s:,.0f} images/s)")
    typer.echo(f"annotations: {out / 'annotations.json'} (COCO, RLE masks); params: {out / 'params.jsonl'}")
    typer.echo(f"contact sheet: {sheet}")
    typer.echo(f"replay one: synthloop replay {out} 0")
