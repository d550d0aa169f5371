"""Generation subcommands: paste, replay, vis, paste-demo."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import typer

from synthloop.cli._app import app, apply_threads, friendly_errors, progress_display, threads_option


class Backend(str, Enum):
    local = "local"
    ray = "ray"


def backend_option():
    return typer.Option(Backend.local, "--backend", help="local: worker processes here; ray: Ray tasks (pip install 'synthloop\\[ray]'), same output.")


def address_option():
    return typer.Option(None, "--address", help="Ray cluster to use (default: $RAY_ADDRESS, else a local Ray instance); --out must be shared by its nodes.")


def check_backend(backend: Backend, address: str | None) -> None:
    """A clear error for ``--address`` without ``--backend ray``."""
    if address is not None and backend is not Backend.ray:
        raise typer.BadParameter("--address needs --backend ray", param_hint="--address")


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
    backend: Backend = backend_option(),
    address: str | None = address_option(),
    device: str | None = typer.Option(None, "--device", help="cuda (or cpu): composite batches with the torch core and encode JPEG there (other pixels than the default path)."),
) -> None:
    """Composite cut-outs onto backgrounds and write a labelled dataset (COCO, + YOLO/VOC)."""
    from synthloop.jobs.paste_config import load_paste_config

    check_backend(backend, address)
    cfg = load_paste_config(config, overrides or [])
    apply_threads(threads, workers, cfg.threads)
    from synthloop.jobs.paste import run_paste

    with progress_display(quiet) as display:
        kw = {"resume": resume, "overwrite": overwrite, "progress": display.counter("paste", "img"), "argv": sys.argv}
        if device is not None and backend is Backend.ray:
            raise typer.BadParameter("--device works with the local backend only", param_hint="--device")
        if device is not None:
            from synthloop.jobs.paste_torch import run_paste_torch

            summary = run_paste_torch(cfg, out, device=device, **kw)
        elif backend is Backend.ray:
            from synthloop.jobs.paste_ray import run_paste_ray

            summary = run_paste_ray(cfg, out, address=address, **kw)
        else:
            summary = run_paste(cfg, out, workers=workers, **kw)
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
    for line in r.lines():
        typer.echo(line)
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
    cfg = load_paste_config(
        None, [f"num_images={num_images}", "scene.canvas=[256,256]", "scene.objects=[2,5]", "scene.blend.modes=[none,alpha,gaussian,box,motion]"]
    )
    with progress_display(quiet) as display:
        summary = run_paste(cfg, out, workers=workers, overwrite=True, progress=display.counter("demo", "img"), argv=sys.argv)
    sheet = write_contact_sheet(out, out / "contact_sheet.png", n=16)
    typer.echo(f"wrote {summary.images} images to {out / 'images'} ({summary.images_per_s:,.0f} images/s)")
    typer.echo(f"annotations: {out / 'annotations.json'} (COCO, RLE masks); params: {out / 'params.jsonl'}")
    typer.echo(f"contact sheet: {sheet}")
    typer.echo(f"replay one: synthloop replay {out} 0")
