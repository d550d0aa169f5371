"""``synthloop render``: glyphs with latent variations, written as an image-folder + COCO dataset."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from synthloop.cli._app import app, apply_threads, friendly_errors, overrides_argument, progress_display, threads_option
from synthloop.cli.paste_cmds import Backend, address_option, backend_option, check_backend


@app.command("render")
@friendly_errors
def render(
    config: Path = typer.Argument(..., help="YAML render config (see synthloop.jobs.render.RenderJobConfig)."),
    overrides: list[str] | None = overrides_argument("count=5000 camera.enabled=false size=[64,64]"),
    out: Path = typer.Option(..., "--out", help="Output folder (created; must be empty unless --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output folder."),
    threads: int | None = threads_option(),
    backend: Backend = backend_option(),
    address: str | None = address_option(),
) -> None:
    """Render labelled glyph images (digits by default) with MrGAN's latent variations.

    Writes images/<class>/<id>.png, annotations.json (COCO), params.jsonl, config.yaml and
    run.json; the folder appears only when everything was written. --backend ray renders the
    batches as Ray tasks (output.workers is then not used): the same files, byte for byte.
    """
    from synthloop.config import load_config
    from synthloop.jobs.render import RenderJobConfig, write_dataset

    check_backend(backend, address)
    cfg = load_config(RenderJobConfig, config, overrides)
    apply_threads(threads, cfg.output.workers, cfg.threads)
    with progress_display() as display:
        kw = {"overwrite": overwrite, "progress": display.counter("render", "img"), "argv": sys.argv}
        if backend is Backend.ray:
            from synthloop.jobs.render_ray import write_dataset_ray

            run = write_dataset_ray(cfg, out, address=address, **kw)
        else:
            run = write_dataset(cfg, out, **kw)
    typer.echo(f"wrote {run['count']} images of {len(run['classes'])} classes to {out} in {run['seconds']:.1f} s")
