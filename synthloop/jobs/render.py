"""``synthloop render``: render a labelled glyph dataset with :class:`~synthloop.render.Renderer`.

:func:`write_dataset` renders ``count`` images into a folder that is at once an image-folder
dataset (``images/<class>/<id>.png``, readable by ``torchvision.datasets.ImageFolder``) and a COCO
instances dataset (``annotations.json``, one annotation per image with the visible glyph's RLE
mask), with ``params.jsonl`` (every image's params), the resolved ``config.yaml`` and ``run.json``
(seed, version, commit). The folder appears only when everything was written.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pydantic import Field

from synthloop.config import Config, threads_field
from synthloop.data._io import make_temp_sibling
from synthloop.data.coco import write_coco_json
from synthloop.data.dataset import Annotation, Category, ImageEntry
from synthloop.data.images import encode_png
from synthloop.functional.masks import masks_to_boxes
from synthloop.jobs import run_folder
from synthloop.render.config import VARIATIONS
from synthloop.render.glyphs import safe_class_name
from synthloop.render.renderer import RenderConfig, Renderer
from synthloop.utils.atomic import atomic_write_json, atomic_write_text
from synthloop.utils.memory import canvas_bytes, check_fits
from synthloop.utils.seeding import make_generator


class OutputConfig(Config):
    coco: bool = True  # also write annotations.json next to the class folders
    masks: bool = False  # also write masks/<class>/<id>.png (visible glyph, 0/255)
    workers: int = Field(1, ge=1, le=64, description="processes rendering and writing batches in parallel")


class RenderJobConfig(RenderConfig):
    """Everything ``synthloop render`` needs: the renderer's :class:`~synthloop.render.RenderConfig`
    plus how many images to write, the seed, the batch size and the output options."""

    count: int = Field(1000, ge=1, description="images to write")
    seed: int = 0
    batch_size: int = Field(512, ge=1)
    output: OutputConfig = Field(default_factory=OutputConfig)
    threads: int | None = threads_field()

    def to_dict(self) -> dict[str, Any]:
        """Keys in ``config.yaml``'s established order: the variations, ``count``, ``seed``,
        ``batch_size``, the other renderer settings, ``output``; without ``threads`` (it does not
        change the output; ``run.json`` records the threads used)."""
        d = super().to_dict()
        d.pop("threads", None)
        head = (*VARIATIONS, "count", "seed", "batch_size")
        return {k: d[k] for k in head} | {k: v for k, v in d.items() if k not in head}


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """``Tensor[B, C, H, W]`` in [0, 1] -> ``uint8 (B, H, W)`` (C = 1) or ``(B, H, W, 3)``."""
    u8 = (x.clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8)
    u8 = u8[:, 0] if u8.shape[1] == 1 else u8.permute(0, 2, 3, 1)
    return np.ascontiguousarray(u8.numpy())


def _publish(stage: Path, out_dir: Path) -> None:
    """Move the finished ``stage`` folder onto ``out_dir`` (replacing it) with renames only; the
    run folder's lock moves with it."""
    lock_file = out_dir / run_folder.LOCK_FILE
    if lock_file.exists():
        os.replace(lock_file, stage / run_folder.LOCK_FILE)
    old = None
    if out_dir.exists():
        if any(out_dir.iterdir()):
            old = make_temp_sibling(out_dir, "old")
            os.replace(out_dir, old)
        else:
            out_dir.rmdir()
    os.replace(stage, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class _BatchWriter:
    """Renders batch ``b`` of a dataset and writes its image (and mask) files into ``stage``.

    Returns what the parent process collects in batch order: the ``params.jsonl`` lines and, per
    image, ``(id, file_name, label, bbox xywh, RLE or None, visibility)``.
    """

    def __init__(self, config: RenderJobConfig, stage: Path, renderer: Renderer | None = None):
        self.config, self.stage = config, stage
        self.renderer = renderer or Renderer(config)
        self.folders = [safe_class_name(c) for c in self.renderer.classes]

    def __call__(self, job: tuple[int, int, int]) -> tuple[list[str], list[tuple]]:
        b, start, m = job
        r = self.renderer
        params = r.sample(m, make_generator(self.config.seed, "render", b))
        batch = r.apply(params)
        labels = batch.label.tolist()
        names = [f"{self.folders[label]}/{start + j:06d}.png" for j, label in enumerate(labels)]
        visible_t = batch.mask[:, 0] >= 0.5
        visible = visible_t.numpy()
        files = [(self.stage / "images" / n, px) for n, px in zip(names, _to_uint8(batch.image))]
        if self.config.output.masks:
            files += [(self.stage / "masks" / n, v) for n, v in zip(names, visible)]
        for path, pixels in files:
            path.write_bytes(encode_png(pixels))
        boxes = masks_to_boxes(visible_t)
        boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh
        rles = mask_utils.encode(np.asfortranarray(visible.transpose(1, 2, 0), dtype=np.uint8))
        nonempty = visible_t.flatten(1).any(1).tolist()
        visibility = batch.visibility.tolist()
        lines, rows = [], []
        for j, rec in enumerate(r.to_records(params)):
            idx, label, file_name = start + j, labels[j], f"images/{names[j]}"
            rows.append((idx, file_name, label, tuple(boxes[j].tolist()), rles[j] if nonempty[j] else None, round(visibility[j], 6)))
            lines.append(json.dumps({"id": idx, "file_name": file_name, "label": label, "class": r.classes[label], "params": rec}, separators=(",", ":")))
        return lines, rows


_WORKER: _BatchWriter | None = None


BatchJob = tuple[int, int, int]
"""``(b, start, m)``: batch ``b``, its first image id and its size; the unit of work of every backend."""
BatchResult = tuple[list[str], list[tuple]]
Runner = Callable[["RenderJobConfig", Path, list[BatchJob]], Iterator[BatchResult]]
"""``runner(config, stage, jobs)``: renders ``jobs`` into the staging folder ``stage`` and yields
:class:`_BatchWriter`'s result per job, in the order of ``jobs``; closed when the run stops."""


def _init_worker(config: dict[str, Any], stage: str) -> None:
    global _WORKER
    torch.set_num_threads(1)
    _WORKER = _BatchWriter(RenderJobConfig.model_validate(config), Path(stage))


def _run_job(job: BatchJob) -> BatchResult:
    assert _WORKER is not None
    return _WORKER(job)


def write_dataset(
    config: RenderJobConfig,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    argv: Sequence[str] | None = None,
    runner: Runner | None = None,
    record: dict[str, Any] | None = None,
    in_flight: int | None = None,
) -> dict[str, Any]:
    """Render ``config.count`` images into ``out_dir``.

    Layout: ``images/<class>/<id>.png`` (``uint8`` grey or RGB), ``masks/<class>/<id>.png`` when
    ``output.masks``, ``annotations.json`` (COCO; category id = label, name = class; one
    annotation per image whose glyph is visible, with ``attributes.visibility``) when
    ``output.coco``, ``params.jsonl`` (per image: ``id``, ``file_name``, ``label``, ``class``,
    ``params``), ``config.yaml`` and ``run.json``.

    Batch ``b`` draws from ``make_generator(seed, "render", b)``, so the same config (batch size
    included) writes the same dataset, with any number of ``output.workers`` (spawned processes,
    one torch thread each, each rendering and writing whole batches). Everything is written into a
    hidden sibling folder that is renamed onto ``out_dir`` at the end: a failed or interrupted
    run leaves ``out_dir`` untouched.

    Args:
        progress: called with ``(done, total)`` after each batch.
        runner: renders the batches instead of the local workers (another backend:
            :mod:`synthloop.jobs.render_ray`): ``runner(config, stage, jobs)`` returns a closable
            iterator of :class:`_BatchWriter` results in batch order.
        record: more fields for ``run.json`` (``backend`` is ``"local"`` and ``workers`` is
            ``output.workers`` unless given).
        in_flight: batches in memory at once on one machine, for the memory check before the run
            (default ``output.workers``).
    Returns:
        The ``run.json`` contents.
    """

    out_dir = Path(out_dir)
    record = {"backend": "local", "workers": config.output.workers} | (record or {})
    (H, W), n = config.size, config.batch_size * (in_flight or config.output.workers)
    ss = config.supersample
    check_fits(canvas_bytes(H * ss, W * ss, n), what=f"{n} {H}x{W} image(s) (x{ss} supersampled) in flight (batch_size x workers)", field="batch_size")
    with run_folder.lock(out_dir):
        run_folder.prepare(out_dir, resume=False, config_file="config.yaml", config={}, overwrite=overwrite, outputs=())  # replaced whole at the end
        t0 = time.perf_counter()
        renderer = Renderer(config)  # bad fonts, shapes or photos fail here, before anything is written
        classes = renderer.classes
        for stale in [*out_dir.parent.glob(f".{out_dir.name}.*.render"), *out_dir.parent.glob(f".{out_dir.name}.*.old")]:
            shutil.rmtree(stale, ignore_errors=True)  # a killed run's staging folder (we hold out_dir's lock)
        stage = make_temp_sibling(out_dir, "render")
        jobs, start = [], 0
        for b in range(math.ceil(config.count / config.batch_size)):
            m = min(config.batch_size, config.count - start)
            jobs.append((b, start, m))
            start += m
        try:
            for kind in ("images", "masks") if config.output.masks else ("images",):
                for c in classes:
                    (stage / kind / safe_class_name(c)).mkdir(parents=True)
            images: list[ImageEntry] = []
            with open(stage / "params.jsonl", "w") as jsonl, contextlib.ExitStack() as stack:
                if runner is not None:
                    results = stack.enter_context(contextlib.closing(runner(config, stage, jobs)))
                elif config.output.workers == 1:
                    results = map(_BatchWriter(config, stage, renderer), jobs)
                else:
                    ctx = multiprocessing.get_context("spawn")  # fork is unsafe once torch's OpenMP threads exist
                    pool = stack.enter_context(
                        ProcessPoolExecutor(config.output.workers, mp_context=ctx, initializer=_init_worker, initargs=(config.model_dump(), str(stage)))
                    )
                    results = pool.map(_run_job, jobs)
                done = 0
                for lines, rows in results:
                    jsonl.write("\n".join(lines) + "\n")
                    for idx, file_name, label, box, rle, visibility in rows:
                        anns = [] if rle is None else [Annotation.from_rle(label, box, rle, attributes={"visibility": visibility})]
                        images.append(ImageEntry(idx, file_name, config.size[1], config.size[0], anns))
                    done += len(rows)
                    if progress is not None:
                        progress(done, config.count)
            if config.output.coco:
                categories = [Category(i, name, "glyph") for i, name in enumerate(classes)]
                write_coco_json(stage / "annotations.json", images, categories, info={"description": "synthloop render", "seed": config.seed})
            atomic_write_text(stage / "config.yaml", config.to_yaml())
            run = run_folder.run_record(seed=config.seed, argv=argv, count=config.count, classes=classes, **record)
            run["seconds"] = round(time.perf_counter() - t0, 3)
            atomic_write_json(stage / "run.json", run)
            _publish(stage, out_dir)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        return run
