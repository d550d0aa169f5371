"""``synthloop paste --device cuda`` (or ``cpu``): the paste job through the batched torch compositor.

The scenes are the local backend's: the same params, sampled from the same seeds
(:func:`~synthloop.jobs.paste.scene_variants`), so ``params.jsonl`` is identical. They are
composited a batch at a time on the device by
:func:`~synthloop.compose.scene_batch.composite_native_batch` (the torch ops of
:mod:`synthloop.functional`), converted to ``uint8`` there, encoded to JPEG by
``torchvision.io.encode_jpeg`` (on the GPU for CUDA tensors; libjpeg on the CPU), and written by a
thread pool, each file atomically, while the next batch is composited. Each scene's shard line is
appended once its files are on disk, so ``--resume`` works as for the local backend, and the
annotations are assembled by the same :func:`~synthloop.jobs.paste.finalize`.

Pixels are *not* those of the NumPy/OpenCV path: OpenCV's bilinear warp rounds its weights to
1/32 and filters a window around each object, torch warps with float weights and filters the
whole canvas; and the JPEG encoders differ. Labels have the same structure and agree up to those
edge pixels (tests/jobs/test_paste_torch.py measures both). Use it where a GPU is lent; on a CPU the
NumPy path is several times faster.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from synthloop.compose.params import SceneParams
from synthloop.compose.scene_batch import NativeComposite, composite_native_batch
from synthloop.errors import InputError
from synthloop.jobs import paste
from synthloop.jobs.paste_assets import Assets, build_assets
from synthloop.jobs.paste_config import PasteConfig
from synthloop.utils.atomic import atomic_write_bytes, atomic_write_json

DEFAULT_BATCH = {"cpu": 8, "cuda": 64}
"""Scenes composited together (per device type)."""


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`; an :class:`InputError` for one that is not there."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"not a device: {device!r} ({exc})", field="device") from None
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"the paste job runs on cpu or cuda, not {dev.type}", field="device")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
            raise InputError(
                f"--device {device}: no CUDA GPU is available (torch {torch.__version__}, {built}); use --device cpu or leave it out", field="device"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)", field="device")
    return dev


def device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def _encode(cfg: PasteConfig, u8: torch.Tensor) -> list[bytes]:
    """File bytes of ``uint8 (n, 3, H, W)`` images (JPEG on the images' device; PNG on the CPU)."""
    if cfg.image_format == "png":
        return [paste.encode_image(cfg, np.ascontiguousarray(im.permute(1, 2, 0).cpu().numpy())) for im in u8]
    import warnings

    with warnings.catch_warnings():  # torchvision 0.29 points to torchcodec, which has no GPU JPEG encoder of images yet
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import encode_jpeg

        return [bytes(t.cpu().numpy()) for t in encode_jpeg(list(u8), quality=cfg.jpeg_quality)]


def _r(x: float) -> float:
    return round(float(x), 6)


def _annotations(comp: NativeComposite, n: int, params: SceneParams, min_visibility: float) -> list[dict[str, Any]]:
    """The COCO annotations of composite ``n`` (its labelled objects, as ``render_record`` writes them)."""
    full, seen, vis = (t[n].tolist() for t in (comp.full_area, comp.in_canvas_area, comp.visible_area))
    keep = [k for k, o in enumerate(params.objects) if not o.distractor and vis[k] > 0 and vis[k] / full[k] >= min_visibility]
    if not keep:
        return []
    from synthloop.functional.masks import masks_to_boxes

    masks = comp.visible[n, keep]
    boxes = masks_to_boxes(masks.to(torch.uint8), 0.5).tolist()
    rles = mask_utils.encode(np.asfortranarray(masks.permute(1, 2, 0).cpu().numpy().astype(np.uint8)))
    anns = []
    for k, (x0, y0, x1, y1), rle in zip(keep, boxes, rles):
        o = params.objects[k]
        anns.append(
            {
                "category_id": int(o.category_id),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "segmentation": {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")},
                "attributes": {
                    "visibility": _r(vis[k] / full[k]),
                    "truncation": _r(1.0 - seen[k] / full[k] if full[k] > 0 else 1.0),
                    "occlusion": _r(1.0 - vis[k] / seen[k] if seen[k] > 0 else 1.0),
                    "instance": int(o.instance),
                },
            }
        )
    return anns


class _Pipeline:
    """Composites batches of scenes on the device and hands their files to a writer thread pool;
    a scene's shard line is appended once all its files are written (in scene order)."""

    def __init__(self, cfg: PasteConfig, assets: Assets, out_dir: Path, device: torch.device, io_threads: int):
        self.cfg, self.assets, self.out_dir, self.device = cfg, assets, out_dir, device
        self.ext = "png" if cfg.image_format == "png" else "jpg"
        self.shard = paste.ShardWriter(out_dir / paste.WORK_DIR)
        self.pool = ThreadPoolExecutor(io_threads, thread_name_prefix="paste-write")
        self.waiting: collections.deque[tuple[dict[str, Any], list[Future]]] = collections.deque()

    def submit(self, block: list[int], todo: set[int]) -> None:
        """Composite the scenes of ``block`` and write those in ``todo``."""
        cfg = self.cfg
        scenes = [(i, paste.scene_variants(cfg, self.assets, i)) for i in block]
        flat = [(i, k, suffix, p) for i, variants in scenes for k, (suffix, p) in enumerate(variants)]
        per_scene = {i: len(variants) for i, variants in scenes}
        comp = composite_native_batch([p for *_, p in flat], self.assets.instances, self.assets.backgrounds, device=self.device)
        u8 = comp.image.mul(255.0).add_(0.5).floor_().to(torch.uint8)  # round to nearest, as to_uint8
        data = _encode(cfg, u8)
        records: dict[int, dict[str, Any]] = {}
        futures: dict[int, list[Future]] = {}
        for n, (i, k, suffix, params) in enumerate(flat):
            if i not in todo:
                continue
            file_name = f"{paste.IMAGES_DIR}/{i:06d}{suffix}.{self.ext}"
            futures.setdefault(i, []).append(self.pool.submit(atomic_write_bytes, self.out_dir / file_name, data[n]))
            H, W = params.canvas
            image = {
                "id": i * per_scene[i] + k,
                "file_name": file_name,
                "width": int(W),
                "height": int(H),
                "blend": paste._blend_of(params),
                "params": params,
                "annotations": _annotations(comp, n, params, cfg.scene.min_visibility),
            }
            records.setdefault(i, {"index": i, "images": []})["images"].append(image)
        self.waiting.extend((records[i], futures[i]) for i in block if i in todo)

    def drain(self, keep: int = 0) -> int:
        """Append the shard lines of written scenes, waiting until at most ``keep`` are left; returns images."""
        n = 0
        while len(self.waiting) > keep:
            rec, futs = self.waiting.popleft()
            for f in futs:
                f.result()  # a write's error (disk full) is raised here
            self.shard.append(rec)
            n += len(rec["images"])
        return n

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.shard.close()


def run_batches(
    cfg: PasteConfig,
    out_dir: Path,
    todo: list[int],
    count: int,
    total: int,
    progress: Callable[[int, int], None] | None,
    *,
    device: torch.device,
    batch_size: int | None = None,
    io_threads: int = 4,
) -> int:
    """A :data:`~synthloop.jobs.paste.Runner` compositing ``todo`` in batches on ``device``.

    Batch ``b`` is always scenes ``b * batch_size ...`` (a resumed run composites a partly done
    batch whole and writes the scenes it lacks): the filters' float rounding depends on the batch
    (the convolution algorithm is chosen by its size), so this keeps an image a function of the
    config, the seed, the device and the batch size only, also across ``--resume``."""
    assets = build_assets(cfg)
    cats = out_dir / paste.WORK_DIR / paste.CATEGORIES_FILE
    (out_dir / paste.WORK_DIR).mkdir(parents=True, exist_ok=True)
    if not cats.is_file():
        atomic_write_json(cats, [{"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in assets.categories])
    size = batch_size or DEFAULT_BATCH[device.type]
    pipe = _Pipeline(cfg, assets, out_dir, device, io_threads)
    try:
        wanted = set(todo)
        for b in sorted({i // size for i in todo}):
            pipe.submit(list(range(b * size, min((b + 1) * size, cfg.num_images))), wanted)
            count += pipe.drain(keep=size)  # the previous batch's files were written meanwhile
            if progress is not None:
                progress(count, total)
        count += pipe.drain()
        if progress is not None:
            progress(count, total)
    finally:
        pipe.close()
    return count


def run_paste_torch(
    cfg: PasteConfig,
    out_dir: str | Path,
    *,
    device: str | torch.device = "cuda",
    batch_size: int | None = None,
    io_threads: int = 4,
    resume: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    argv: list[str] | None = None,
) -> paste.PasteSummary:
    """Run (or resume) a paste job into ``out_dir`` through the torch compositor on ``device``."""
    dev = resolve_device(device)
    if cfg.scene.placement.strategy == "psis":
        raise InputError("the torch path composites uniform placements only; use the default --device for psis", field="scene.placement.strategy")

    def runner(cfg, out_dir, todo, count, total, progress):
        return run_batches(cfg, out_dir, todo, count, total, progress, device=dev, batch_size=batch_size, io_threads=io_threads)

    record = {"backend": "torch", "device": str(dev), "device_name": device_name(dev), "batch_size": batch_size or DEFAULT_BATCH[dev.type]}
    return paste.run_paste(cfg, out_dir, workers=1, resume=resume, overwrite=overwrite, progress=progress, argv=argv, runner=runner, record=record)


__all__ = ["resolve_device", "run_batches", "run_paste_torch"]
