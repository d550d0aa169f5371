"""The paste job: sample scenes, render them, write images and COCO (+ YOLO/VOC) annotations.

Output folder::

    images/000000.jpg ...   one per scene (``000000_<mode>.jpg`` per blend mode with all_modes)
    annotations.json        COCO, RLE masks, per-object visibility/truncation/occlusion, per-image params
    params.jsonl            one line per image: id, file name, scene params
    config.yaml             the resolved config (absolute paths)
    run.json                seed, synthloop version, git commit, start/finish times
    yolo/, voc/             when asked for in ``formats``

Determinism: scene ``i`` is sampled from a generator seeded with ``derive_seed(seed, i)``, and
rendering is a pure function of the params, so the output does not depend on the number of
workers or on how often the job was interrupted.

Resumability: a scene is one work unit. Its images are written atomically (temp file + rename);
only then is one JSON line with everything needed for the annotations appended to the worker's
own shard file in ``.work/``. ``--resume`` rereads the shards (a torn last line is ignored),
skips the scenes already done and renders the rest; the final files are assembled from the
shards, each written atomically, and ``.work/`` is removed last.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pycocotools import mask as mask_utils

from synthloop.compose.apply import apply_scene
from synthloop.compose.params import SceneParams, json_fields
from synthloop.compose.sampler import sample_blend
from synthloop.data.dataset import Annotation, Category, Dataset, ImageEntry
from synthloop.data.images import encode_jpeg, encode_png
from synthloop.errors import InputError
from synthloop.functional.numpy_ops import to_uint8
from synthloop.jobs import run_folder
from synthloop.jobs.paste_assets import Assets, build_assets
from synthloop.jobs.paste_config import PasteConfig, resolved_dict
from synthloop.utils.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, remove_stray_temps, storage_error
from synthloop.utils.memory import canvas_bytes, check_fits
from synthloop.utils.seeding import derive_seed, make_generator

WORK_DIR = ".work"
CONFIG_FILE = "config.yaml"
PARAMS_FILE = "params.jsonl"
ANNOTATIONS_FILE = "annotations.json"
IMAGES_DIR = "images"
CATEGORIES_FILE = "categories.json"
SHARD_PREFIX = "shard-"
OUTPUTS = (IMAGES_DIR, ANNOTATIONS_FILE, PARAMS_FILE, CONFIG_FILE, run_folder.RUN_FILE, "yolo", "voc", WORK_DIR)


# ---------------------------------------------------------------------------------------------
# one scene


def scene_variants(cfg: PasteConfig, assets: Assets, index: int) -> list[tuple[str, SceneParams]]:
    """The images of scene ``index``: ``[(file suffix, params)]`` (one per blend mode with
    ``scene.blend.all_modes``, else one with an empty suffix)."""
    seed = derive_seed(cfg.seed, index)
    g = make_generator(cfg.seed, index)
    params = assets.sample(cfg, g, seed)
    if not cfg.scene.blend.all_modes:
        return [("", params)]
    return [(f"_{mode}", params.with_blend(sample_blend(cfg.scene.blend, g, mode))) for mode in cfg.scene.blend.modes]


def images_per_scene(cfg: PasteConfig) -> int:
    return len(cfg.scene.blend.modes) if cfg.scene.blend.all_modes else 1


def encode_image(cfg: PasteConfig, image_u8: np.ndarray) -> bytes:
    """The bytes written for a rendered ``uint8 (H, W, 3)`` image."""
    return encode_png(image_u8) if cfg.image_format == "png" else encode_jpeg(image_u8, cfg.jpeg_quality)


def _rle(mask: np.ndarray) -> dict[str, Any]:
    # the renderer builds masks in Fortran order, which pycocotools encodes without a copy
    rle = mask_utils.encode(np.asfortranarray(mask).view(np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def window_rle(window: np.ndarray, offset: tuple[int, int], canvas: tuple[int, int]) -> dict[str, Any]:
    """COCO RLE of a canvas-sized mask that is ``window`` ``(h, w)`` bool at ``offset`` (x0, y0)
    and empty elsewhere: the same string as :func:`_rle` of the full mask (tested), from run
    lengths counted over the window's columns only. Encoding a 640x480 mask costs ~0.4 ms,
    most of it scanning empty canvas; the runs outside the window are known (zeros)."""
    H, W = int(canvas[0]), int(canvas[1])
    h, w = window.shape
    x0, y0 = int(offset[0]), int(offset[1])
    if h == 0 or w == 0 or not window.any():
        counts = [H * W]
    else:
        cols = np.zeros((H, w), dtype=np.int8, order="F")  # the window's columns, full height
        cols[y0 : y0 + h] = window
        seq = cols.ravel(order="F")
        edges = np.flatnonzero(seq[1:] != seq[:-1]) + 1
        runs = np.diff(np.concatenate(([0], edges, [seq.size]))).tolist()
        if seq[0]:  # COCO counts start with a run of zeros
            runs.insert(0, 0)
        runs[0] += x0 * H
        tail = (W - x0 - w) * H
        if tail:
            if seq[-1]:
                runs.append(tail)
            else:
                runs[-1] += tail
        counts = runs
    rle = mask_utils.frPyObjects({"counts": counts, "size": [H, W]}, H, W)
    return {"size": [H, W], "counts": rle["counts"].decode("ascii")}


def _r(x: float) -> float:
    return round(float(x), 6)


def _blend_of(params: SceneParams) -> str | None:
    """The blend mode of an image: the one all its pastes share, ``"mixed"``, or None (nothing pasted)."""
    modes = {o.blend.mode for o in params.objects} | {a.blend.mode for a in params.artefacts}
    return None if not modes else modes.pop() if len(modes) == 1 else "mixed"


def render_record(cfg: PasteConfig, assets: Assets, index: int, out_dir: Path) -> dict[str, Any]:
    """Render scene ``index``, write its image file(s) and return its shard record."""
    ext = "png" if cfg.image_format == "png" else "jpg"
    variants = scene_variants(cfg, assets, index)
    images = []
    for k, (suffix, params) in enumerate(variants):
        result = apply_scene(params, assets.instances, assets.backgrounds)
        file_name = f"{IMAGES_DIR}/{index:06d}{suffix}.{ext}"
        atomic_write_bytes(out_dir / file_name, encode_image(cfg, to_uint8(result.image)))
        anns = []
        for obj in result.labelled(cfg.scene.min_visibility):
            x0, y0, x1, y1 = obj.box
            anns.append(
                {
                    "category_id": int(obj.category_id),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "segmentation": window_rle(obj.window_mask, obj.offset, params.canvas),
                    "attributes": {
                        "visibility": _r(obj.visibility),
                        "truncation": _r(obj.truncation),
                        "occlusion": _r(obj.occlusion),
                        "instance": int(obj.instance),
                    },
                }
            )
        H, W = params.canvas
        images.append(
            {
                "id": index * len(variants) + k,
                "file_name": file_name,
                "width": int(W),
                "height": int(H),
                "blend": _blend_of(params),
                "params": params,  # serialised by ShardWriter (as SceneParams.to_dict, without its deep copy)
                "annotations": anns,
            }
        )
    return {"index": index, "images": images}


# ---------------------------------------------------------------------------------------------
# shards


def read_shards(work: Path) -> dict[int, dict[str, Any]]:
    """Every complete record in ``work/*.jsonl`` by scene index (first one wins; a torn or
    unparsable line, which only a killed writer leaves as its last line, is skipped)."""
    done: dict[int, dict[str, Any]] = {}
    if not work.is_dir():
        return done
    for shard in sorted(work.glob(f"{SHARD_PREFIX}*.jsonl")):
        with open(shard, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    break
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                done.setdefault(int(rec["index"]), rec)
    return done


class ShardWriter:
    """Appends records to this process's own shard file, one flushed line per scene."""

    def __init__(self, work: Path):
        work.mkdir(parents=True, exist_ok=True)
        self.path = work / f"{SHARD_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        self._fh = open(self.path, "a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        try:
            self._fh.write(json.dumps(record, separators=(",", ":"), default=json_fields) + "\n")
            self._fh.flush()  # a torn last line (disk full, kill) is skipped by read_shards
        except OSError as exc:
            raise storage_error(exc, self.path) from None

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError as exc:  # flushing what a failed append left in the buffer
            raise storage_error(exc, self.path) from None


# ---------------------------------------------------------------------------------------------
# workers


@dataclass
class _Worker:
    cfg: PasteConfig
    out_dir: Path
    assets: Assets
    shard: ShardWriter
    cfg_data: dict[str, Any] | None = None

    def run(self, indices: list[int]) -> int:
        n = 0
        for i in indices:
            rec = render_record(self.cfg, self.assets, i, self.out_dir)
            self.shard.append(rec)
            n += len(rec["images"])
        return n


_WORKER: _Worker | None = None


def _init_process() -> None:
    """Per-process settings of a generation worker: one thread for torch and OpenCV each."""
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _start_worker(cfg: PasteConfig, out_dir: Path) -> _Worker:
    from synthloop.utils.memory import keep_freed_memory

    assets = build_assets(cfg)
    # only now: memory freed while decoding the assets goes back to the OS, memory freed while
    # rendering (canvases, windows) stays for reuse instead of costing page faults every image
    keep_freed_memory()
    shard = ShardWriter(out_dir / WORK_DIR)
    cats = out_dir / WORK_DIR / CATEGORIES_FILE
    if not cats.is_file():
        atomic_write_json(cats, [{"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in assets.categories])
    return _Worker(cfg, out_dir, assets, shard)


def run_indices(cfg_data: dict[str, Any], out_dir: str, indices: list[int]) -> int:
    """The worker entry point (process pools here, Ray tasks elsewhere): render scenes ``indices``
    of the job ``cfg_data`` (:func:`~synthloop.jobs.paste_config.resolved_dict` of its config)
    into ``out_dir``: each image written atomically, then one record per scene appended to this
    process's shard in ``out_dir/.work/``. Idempotent: the same inputs write the same bytes, so a
    scene rendered twice (a retried task) is harmless (:func:`read_shards` keeps one record).
    :func:`finalize` assembles the annotations once every scene has a record. Returns the
    number of images written. Assets are decoded on the first call in a process (not in a pool
    initializer, so that a bad asset is an exception in the caller rather than a broken pool)."""
    global _WORKER
    if _WORKER is None or _WORKER.out_dir != Path(out_dir) or _WORKER.cfg_data != cfg_data:
        if _WORKER is not None:  # a process reused for another job (a Ray worker)
            _WORKER.shard.close()
        _WORKER = _start_worker(PasteConfig.model_validate(cfg_data), Path(out_dir))
        _WORKER.cfg_data = cfg_data
    return _WORKER.run(indices)


_pool_run = run_indices  # the name before issue 14


def _mp_context():
    methods = mp.get_all_start_methods()
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        # the fork server imports torch & co once; every worker forks from it
        ctx.set_forkserver_preload(["synthloop.jobs.paste"])
        return ctx
    return mp.get_context("spawn")


# ---------------------------------------------------------------------------------------------
# the job


@dataclass
class PasteSummary:
    out_dir: Path
    scenes: int  # scenes in the job
    images: int  # image files in the job
    rendered: int  # images rendered by this call (the rest were done before a resume)
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.rendered / self.seconds if self.seconds > 0 else 0.0


Runner = Callable[[PasteConfig, Path, list[int], int, int, Callable[[int, int], None] | None], int]
"""``runner(cfg, out_dir, todo, images_done, images_total, progress) -> images_done``: renders the
scenes ``todo`` into ``out_dir`` (images + shard lines in ``.work/``), see :func:`run_paste`."""


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for k in range(0, len(items), size):
        yield items[k : k + size]


def run_paste(
    cfg: PasteConfig,
    out_dir: str | Path,
    *,
    workers: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    argv: list[str] | None = None,
    runner: Runner | None = None,
    record: dict[str, Any] | None = None,
) -> PasteSummary:
    """Run (or resume) a paste job into ``out_dir``.

    Args:
        workers: processes rendering in parallel (1 = in this process, which then keeps
            freed memory for reuse, see :func:`~synthloop.utils.memory.keep_freed_memory`). The
            output is the same for any number.
        resume: continue the job already in ``out_dir`` (its config must equal ``cfg``).
        overwrite: replace the outputs of a previous job in a non-empty ``out_dir``.
        progress: called as ``progress(images_done, images_total)`` while images are written.
        argv: the command line, recorded in ``run.json``.
        runner: renders the scenes left to do instead of the local workers (another backend:
            :mod:`synthloop.jobs.paste_ray`, :mod:`synthloop.jobs.paste_torch`); called as
            ``runner(cfg, out_dir, todo, images_done, images_total, progress)``, returns the images done.
        record: more fields for ``run.json`` (``backend`` is ``"local"`` unless given).
    Raises:
        InputError: a non-empty ``out_dir`` without ``resume``/``overwrite``, a config that differs
            from the stored one on resume, or bad assets.
    """
    if workers < 1:
        raise InputError(f"need at least one worker, got {workers}", field="workers")
    out_dir = Path(out_dir)
    cfg.check_paths()
    H, W = cfg.scene.canvas
    check_fits(canvas_bytes(H, W, workers), what=f"a {H}x{W} canvas in each of {workers} worker(s)", field="scene.canvas")
    with run_folder.lock(out_dir):
        previous = run_folder.prepare(
            out_dir, resume=resume, config_file=CONFIG_FILE, config=resolved_dict(cfg), overwrite=overwrite, outputs=OUTPUTS, resume_empty=True
        )
        per_scene = images_per_scene(cfg)
        total = cfg.num_images * per_scene
        work = out_dir / WORK_DIR
        if previous is not None and previous.get("finished") and (out_dir / ANNOTATIONS_FILE).is_file() and not work.exists():
            if progress is not None:
                progress(total, total)
            return PasteSummary(out_dir, cfg.num_images, total, 0, 0.0)

        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / IMAGES_DIR).mkdir(exist_ok=True)
            remove_stray_temps(out_dir)  # images', final files' and yolo/voc ones a killed run left
            atomic_write_text(out_dir / CONFIG_FILE, yaml.safe_dump(resolved_dict(cfg), sort_keys=False))
            run_info = run_folder.start_record(out_dir, seed=cfg.seed, previous=previous, argv=argv, workers=workers, **({"backend": "local"} | (record or {})))

            done = {i: rec for i, rec in read_shards(work).items() if i < cfg.num_images and all((out_dir / im["file_name"]).is_file() for im in rec["images"])}
            todo = [i for i in range(cfg.num_images) if i not in done]
            count = len(done) * per_scene
            if progress is not None:
                progress(count, total)
            t0 = time.perf_counter()
            if todo:
                if runner is not None:
                    count = runner(cfg, out_dir, todo, count, total, progress)
                elif workers == 1:
                    count = _run_here(cfg, out_dir, todo, count, total, progress)
                else:
                    count = _run_pool(cfg, out_dir, todo, workers, count, total, progress)
            seconds = time.perf_counter() - t0

            finalize(cfg, out_dir)
            run_folder.finish_record(out_dir, run_info, images=total)
            return PasteSummary(out_dir, cfg.num_images, total, len(todo) * per_scene, seconds)
        except InputError:
            if previous is None:  # a fresh run that could not start: leave nothing behind
                _undo_failed_start(out_dir)
            raise


def _undo_failed_start(out_dir: Path) -> None:
    """Remove what a fresh run wrote before bad input stopped it, when it wrote no image yet, so
    the corrected command can start in the same folder."""
    images = out_dir / IMAGES_DIR
    if images.is_dir() and any(images.iterdir()):
        return
    for name in OUTPUTS:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


def _run_here(cfg: PasteConfig, out_dir: Path, todo: list[int], count: int, total: int, progress) -> int:
    import cv2
    import torch

    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    worker = None
    try:
        worker = _start_worker(cfg, out_dir)
        for i in todo:
            count += worker.run([i])
            if progress is not None:
                progress(count, total)
    finally:
        if worker is not None:
            worker.shard.close()
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
    return count


def _run_pool(cfg: PasteConfig, out_dir: Path, todo: list[int], workers: int, count: int, total: int, progress) -> int:
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # small chunks keep every worker busy to the end; the order in which chunks finish does not
    # matter, the output is assembled by index. A worker that dies (killed, out of memory) makes
    # the executor raise BrokenProcessPool instead of hanging.
    size = max(1, min(cfg.chunk_size, len(todo) // (workers * 4) or 1))
    cfg_data, out = resolved_dict(cfg), str(out_dir)
    with ProcessPoolExecutor(workers, mp_context=_mp_context(), initializer=_init_process) as pool:
        pending = {pool.submit(_pool_run, cfg_data, out, chunk) for chunk in _chunks(todo, size)}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    count += fut.result()
                if progress is not None:
                    progress(count, total)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    return count


# ---------------------------------------------------------------------------------------------
# assembly


def _dataset(cfg: PasteConfig, out_dir: Path, records: list[dict[str, Any]], categories: list[Category]) -> Dataset:
    images = []
    for rec in records:
        for im in rec["images"]:
            anns = [
                Annotation.from_rle(
                    a["category_id"],
                    tuple(a["bbox"]),
                    {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode("ascii")},
                    attributes=a["attributes"],
                )
                for a in im["annotations"]
            ]
            attrs = {"scene": rec["index"], "seed": im["params"].get("seed"), "blend": im["blend"], "params": im["params"]}
            images.append(ImageEntry(im["id"], im["file_name"], im["width"], im["height"], anns, attrs))
    info = {"description": "synthloop paste", "seed": cfg.seed, "scenes": cfg.num_images}
    return Dataset(root=out_dir, categories=categories, images=images, info=info)


def finalize(cfg: PasteConfig, out_dir: Path) -> Dataset:
    """Assemble ``annotations.json``, ``params.jsonl`` and YOLO/VOC from the shards (each file
    atomically), then remove the shards."""
    from synthloop.data.coco import write_coco_json

    work = out_dir / WORK_DIR
    done = read_shards(work)
    missing = [i for i in range(cfg.num_images) if i not in done]
    if missing:
        raise InputError(f"{len(missing)} scenes are missing from the work shards (first: {missing[0]}); run again with --resume", file=work)
    records = [done[i] for i in range(cfg.num_images)]
    categories = _categories(cfg, work)
    ds = _dataset(cfg, out_dir, records, categories)
    write_coco_json(out_dir / ANNOTATIONS_FILE, ds.images, ds.categories, mask_format=cfg.mask_format, info=ds.info)
    lines = (json.dumps({"id": im.id, "file_name": im.file_name, "params": im.attributes["params"]}, separators=(",", ":")) for im in ds.images)
    atomic_write_text(out_dir / PARAMS_FILE, "".join(line + "\n" for line in lines))
    if "yolo" in cfg.formats:
        from synthloop.data.yolo import write_yolo

        write_yolo(ds, out_dir / "yolo")
    if "voc" in cfg.formats:
        from synthloop.data.voc import write_voc

        write_voc(ds, out_dir / "voc")
    shutil.rmtree(work, ignore_errors=True)
    return ds


def _categories(cfg: PasteConfig, work: Path) -> list[Category]:
    """The categories of the job's instance source, as a worker recorded them (or built again)."""
    path = work / CATEGORIES_FILE
    if path.is_file():
        return [Category(int(c["id"]), str(c["name"]), str(c["supercategory"])) for c in json.loads(path.read_text())]
    return build_assets(cfg).categories

