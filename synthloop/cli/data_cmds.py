"""Data subcommands (convert, vis, ...) are registered here."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from synthloop.cli._app import app, friendly_errors


class DatasetFormat(str, Enum):
    coco = "coco"
    yolo = "yolo"
    voc = "voc"


class MaskFormat(str, Enum):
    rle = "rle"
    polygon = "polygon"


@app.command("convert")
@friendly_errors
def convert(
    src: Path = typer.Argument(..., help="Input: COCO JSON file or folder with annotations.json; YOLO folder or data.yaml; VOC folder."),
    dst: Path = typer.Argument(..., help="Output folder (created; must be empty unless --overwrite)."),
    from_: DatasetFormat = typer.Option(..., "--from", help="Input format."),
    to: DatasetFormat = typer.Option(..., "--to", help="Output format."),
    mask_format: MaskFormat = typer.Option(MaskFormat.rle, "--mask-format", help="COCO output masks: rle (lossless) or polygon (holes filled)."),
    image_root: Path | None = typer.Option(None, "--image-root", help="COCO input: folder the file_name entries are relative to (default: the JSON's folder)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output folder."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Decode every image first to catch corrupt or truncated files."),
) -> None:
    """Convert a dataset between COCO, YOLO and VOC. The output appears only when everything succeeded."""
    from synthloop.data.convert import convert_dataset

    ds = convert_dataset(
        src, dst, src_format=from_.value, dst_format=to.value, mask_format=mask_format.value, image_root=image_root, overwrite=overwrite, verify=verify
    )
    typer.echo(f"wrote {len(ds.images)} images, {ds.num_annotations} annotations ({from_.value} -> {to.value}) to {dst}")
