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

Workers: with ``workers`` > 1 this process samples every scene's params and the worker processes
(:mod:`synthloop.jobs.paste_worker`, preloaded by a fork server) only composite, encode and write;
they never import torch (~80-160 MB each instead of ~0.4-0.55 GB, first image in ~1-1.7 s instead
of ~2.3-4 s, see ``benchmarks/paste_workers.py``). Each worker's first task is one scene, the
next ones ``chunk_size`` scenes, taken back in order. PSIS jobs and other backends (Ray) call
:func:`run_indices`, which samples inside the worker.

Resumability: a scene is one work unit. Its images are written atomically (temp file + rename);
only then is one JSON line with everything needed for the annotations appended to the worker's
own shard file in ``.work/``. ``--resume`` rereads the shards (a torn last line is ignored),
skips the scenes already done and renders the rest; the final files are assembled from the
shards, each written atomically, and ``.work/`` is removed last.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing as mp
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pycocotools import mask as mask_utils

from synthloop.compose.params import SceneParams
from synthloop.compose.sampler import sample_blend
from synthloop.data.dataset import Annotation, Category, Dataset, ImageEntry
from synthloop.errors import InputError
from synthloop.jobs import run_folder
from synthloop.jobs.paste_assets import Assets, build_assets
from synthloop.jobs.paste_config import PasteConfig, resolved_dict
from synthloop.jobs.paste_worker import (  # noqa: F401 (ShardWriter, window_rle: re-exported)
    CACHE_DIR,
    SHARD_PREFIX,
    Output,
    ShardWriter,
    background_key,
    blend_of,
    cache_key,
    cache_path,
    encode,
    window_rle,
    write_scene,
)
from synthloop.utils.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, remove_stray_temps
from synthloop.utils.memory import canvas_bytes, check_fits
from synthloop.utils.seeding import derive_seed, make_generator

WORK_DIR = ".work"
CONFIG_FILE = "config.yaml"
PARAMS_FILE = "params.jsonl"
ANNOTATIONS_FILE = "annotations.json"
IMAGES_DIR = "images"  # the same as paste_worker.IMAGES_DIR
CATEGORIES_FILE = "categories.json"
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
    return encode(cfg.image_format, cfg.jpeg_quality, image_u8)


def _rle(mask: np.ndarray) -> dict[str, Any]:
    # the renderer builds masks in Fortran order, which pycocotools encodes without a copy
    rle = mask_utils.encode(np.asfortranarray(mask).view(np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


_blend_of = blend_of  # the names before the torch-free worker module


def _output(cfg: PasteConfig, out_dir: Path) -> Output:
    return Output(out_dir, out_dir / WORK_DIR, cfg.image_format, cfg.jpeg_quality, cfg.scene.min_visibility)


def render_record(cfg: PasteConfig, assets: Assets, index: int, out_dir: Path) -> dict[str, Any]:
    """Render scene ``index``, write its image file(s) and return its shard record."""
    return write_scene(_output(cfg, out_dir), index, scene_variants(cfg, assets, index), assets.instances, assets.backgrounds)


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
        # the fork server imports the torch-free worker module once; every worker forks from it
        ctx.set_forkserver_preload(["synthloop.jobs.paste_worker"])
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
    if cfg.scene.placement.strategy == "psis":  # dataset scenes: the workers sample and render themselves (with torch)
        return _run_pool_sampling(cfg, out_dir, todo, workers, count, total, progress)
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    from synthloop.jobs import paste_worker

    out = _output(cfg, out_dir)
    # started first: the fork server and the workers come up while this process decodes the assets
    pool = ProcessPoolExecutor(workers, mp_context=_mp_context(), initializer=paste_worker.init_process, initargs=(out,))
    with _main_module_hidden():  # every worker starts here (one per submit), not importing the caller's script
        for _ in range(workers):
            pool.submit(paste_worker.torch_loaded)
    try:
        assets = _parent_assets(cfg, out_dir)
        feeder = _Feeder(cfg, assets, out.work)
        # the first task of each worker is one scene (the first image is written as soon as a
        # worker is up), then chunks of chunk_size; results are taken in order (an ordered imap)
        # with at most 2 tasks per worker in flight, so the parent's sampling keeps ahead of the
        # workers without holding the whole job's params in memory
        size = max(1, min(cfg.chunk_size, len(todo) // (workers * 4) or 1))
        chunks = [todo[k : k + 1] for k in range(min(workers, len(todo)))]
        chunks += list(_chunks(todo[len(chunks) :], size))
        pending: deque = deque()
        for chunk in chunks:
            while len(pending) >= 2 * workers:
                count += pending.popleft().result()
                if progress is not None:
                    progress(count, total)
            pending.append(pool.submit(paste_worker.run_chunk, *feeder.task(chunk)))
        while pending:
            count += pending.popleft().result()
            if progress is not None:
                progress(count, total)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return count


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """While processes start, hide the ``__main__`` module's file and spec from multiprocessing:
    a fork-server or spawned child otherwise runs the caller's script again as ``__mp_main__``
    before its first task, and a script that imports torch (most do) would load it in every
    torch-free worker (measured: 570 MB instead of ~100 MB per worker). The workers run only
    functions of :mod:`synthloop.jobs.paste_worker`, never one from ``__main__``."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _parent_assets(cfg: PasteConfig, out_dir: Path) -> Assets:
    assets = build_assets(cfg)
    cats = out_dir / WORK_DIR / CATEGORIES_FILE
    if not cats.is_file():
        atomic_write_json(cats, [{"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in assets.categories])
    return assets


INLINE_BYTES = 64 * 1024  # cut-outs up to this size are sent with each task that pastes them


class _Feeder:
    """The parent's side of the torch-free workers: samples each scene's params and puts the
    backgrounds and cut-outs they use into the job's array cache (once each)."""

    def __init__(self, cfg: PasteConfig, assets: Assets, work: Path):
        from synthloop.compose import apply

        self.cfg, self.assets, self.work = cfg, assets, work
        self._apply = apply
        self._facts: dict[int, dict[str, Any]] = {}
        self._written: set[str] = set()
        (work / CACHE_DIR).mkdir(parents=True, exist_ok=True)

    def task(self, chunk: list[int]) -> tuple[list[tuple[int, list[tuple[str, SceneParams]]]], dict[int, dict[str, Any]]]:
        scenes, facts = [], {}
        for i in chunk:
            variants = scene_variants(self.cfg, self.assets, i)
            for _, params in variants:
                self._background(params.background, params.canvas)
                if params.artefact_background is not None:
                    self._background(params.artefact_background, params.canvas)
                for inst in [o.instance for o in params.objects] + [a.instance for a in params.artefacts]:
                    facts[int(inst)] = self._instance(int(inst), params)
            scenes.append((i, variants))
        return scenes, facts

    def _store(self, key: str, array: np.ndarray) -> None:
        if key in self._written:
            return
        path = cache_path(self.work, key)
        if not path.is_file():  # a resumed job may have it
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
            atomic_write_bytes(path, buf.getvalue())
        self._written.add(key)

    def _background(self, params: dict[str, Any], canvas: tuple[int, int]) -> None:
        key, _ = background_key(params, canvas)
        if key in self._written:
            return
        if params.get("kind") == "pooled" and "source" in params:  # cached unflipped, flipped by the worker
            params = {**params, "flip": False}
        self._store(key, np.asarray(self.assets.backgrounds.render_one(params, tuple(canvas))))

    def _instance(self, index: int, params: SceneParams) -> dict[str, Any]:
        hit = self._facts.get(index)
        if hit is None:
            apply, src = self._apply, self.assets.instances
            rgba = apply.rgba_of(src, index)
            hit = {"shape": apply.instance_shape(src, index), "support": apply.instance_support(src, index), "mean_gray": apply._instance_mean_gray(src, index)}
            if rgba.nbytes > INLINE_BYTES:  # a cut-out goes through the file cache once, whichever worker pastes it
                hit["key"] = cache_key("instance", index)
                self._store(hit["key"], rgba)
            self._facts[index] = hit
        if "key" in hit:
            return hit
        # a digit (12.5 kB) travels with every task that pastes it (a file each costs more); not
        # kept here, where a job over all of MNIST would hold 0.6 GB
        return {**hit, "rgba": self._apply.rgba_of(self.assets.instances, index)}


def _run_pool_sampling(cfg: PasteConfig, out_dir: Path, todo: list[int], workers: int, count: int, total: int, progress) -> int:
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
