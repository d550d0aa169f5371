"""The paste job's process-pool worker, which never imports torch.

The parent (:mod:`synthloop.jobs.paste`, which has torch) samples every scene's params, renders
the backgrounds they name and decodes the cut-outs they paste; it puts those arrays once into a
file cache in ``.work/cache/`` (``.npy``, written atomically, read back from the page cache) and
sends each task a chunk of ``(index, [(file suffix, SceneParams)])`` plus the cut-outs'
per-instance facts (shape, alpha support, mean gray). A worker composites with the NumPy/OpenCV
compositor (:func:`~synthloop.compose.apply.apply_scene`), encodes, writes each image atomically
and appends one record per scene to its own shard: the same bytes as the in-process path, which
runs the same :func:`write_scene` on params it samples itself.

Importing this module loads NumPy, OpenCV, pycocotools, simplejpeg and PIL, not torch (tested): a
worker costs well under half the memory of one that imports torch and starts in a fraction of the
time. The fork server preloads this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from synthloop.compose.apply import apply_scene
from synthloop.compose.params import SceneParams, json_fields
from synthloop.data.images import encode_jpeg, encode_png
from synthloop.functional.numpy_ops import to_uint8
from synthloop.utils.atomic import atomic_write_bytes, storage_error

IMAGES_DIR = "images"
SHARD_PREFIX = "shard-"
CACHE_DIR = "cache"  # inside the job's .work/


@dataclass(frozen=True)
class Output:
    """What a worker needs to know about the files it writes (plain values: no config model)."""

    out_dir: Path
    work: Path
    image_format: str  # "jpg" or "png"
    jpeg_quality: int
    min_visibility: float


# ---------------------------------------------------------------------------------------------
# records


def encode(image_format: str, jpeg_quality: int, image_u8: np.ndarray) -> bytes:
    """The bytes written for a rendered ``uint8 (H, W, 3)`` image."""
    return encode_png(image_u8) if image_format == "png" else encode_jpeg(image_u8, jpeg_quality)


def window_rle(window: np.ndarray, offset: tuple[int, int], canvas: tuple[int, int]) -> dict[str, Any]:
    """COCO RLE of a canvas-sized mask that is ``window`` ``(h, w)`` bool at ``offset`` (x0, y0)
    and empty elsewhere: the same string as the RLE of the full mask (tested), from run
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


def blend_of(params: SceneParams) -> str | None:
    """The blend mode of an image: the one all its pastes share, ``"mixed"``, or None (nothing pasted)."""
    modes = {o.blend.mode for o in params.objects} | {a.blend.mode for a in params.artefacts}
    return None if not modes else modes.pop() if len(modes) == 1 else "mixed"


def write_scene(out: Output, index: int, variants: list[tuple[str, SceneParams]], instances: Any, backgrounds: Any) -> dict[str, Any]:
    """Render the images ``variants`` (``[(file suffix, params)]``) of scene ``index``, write each
    atomically and return the scene's shard record."""
    ext = "png" if out.image_format == "png" else "jpg"
    images = []
    for k, (suffix, params) in enumerate(variants):
        result = apply_scene(params, instances, backgrounds)
        file_name = f"{IMAGES_DIR}/{index:06d}{suffix}.{ext}"
        atomic_write_bytes(out.out_dir / file_name, encode(out.image_format, out.jpeg_quality, to_uint8(result.image)))
        anns = []
        for obj in result.labelled(out.min_visibility):
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
                "blend": blend_of(params),
                "params": params,  # serialised by ShardWriter (as SceneParams.to_dict, without its deep copy)
                "annotations": anns,
            }
        )
    return {"index": index, "images": images}


class ShardWriter:
    """Appends records to this process's own shard file, one flushed line per scene."""

    def __init__(self, work: Path):
        work.mkdir(parents=True, exist_ok=True)
        self.path = work / f"{SHARD_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (open for the process lifetime)

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
# the array cache shared by the parent (writes) and the workers (read)


def cache_key(*parts: Any) -> str:
    """File stem of a cached array: a hash of its JSON description."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cache_path(work: Path, key: str) -> Path:
    return work / CACHE_DIR / f"{key}.npy"


def background_key(params: dict[str, Any], canvas: tuple[int, int]) -> tuple[str, bool]:
    """``(cache key, flip)`` of a background: a pooled one is cached unflipped (one file per pool
    entry), flipped by the worker as :class:`~synthloop.compose.sources.PooledBackgrounds` does."""
    H, W = int(canvas[0]), int(canvas[1])
    if params.get("kind") == "pooled" and "source" in params:
        return cache_key("pooled", params["source"], H, W), bool(params.get("flip"))
    return cache_key("background", params, H, W), False


class CachedBackgrounds:
    """Backgrounds read from the parent's cache files (the last ``keep`` kept in memory)."""

    def __init__(self, work: Path, keep: int = 128):
        self.work = work
        self.keep = int(keep)
        self._arrays: OrderedDict[str, np.ndarray] = OrderedDict()

    def render_one(self, params: dict[str, Any], size: tuple[int, int]) -> np.ndarray:
        key, flip = background_key(params, size)
        img = self._arrays.get(key)
        if img is None:
            img = np.load(cache_path(self.work, key))
            img.setflags(write=False)
            self._arrays[key] = img
            if len(self._arrays) > self.keep:
                self._arrays.popitem(last=False)
        else:
            self._arrays.move_to_end(key)
        return cv2.flip(img, 1) if flip else img


class CachedInstances:
    """Cut-outs read from the parent's cache files as ``float32 (h, w, 4)`` RGBA (the last ``keep``
    kept), with the per-instance facts the compositor caches on its source (shape, alpha support,
    mean gray) filled in from the parent's values, so that they are the same numbers bit for bit."""

    def __init__(self, work: Path, keep: int = 4096):
        self.work = work
        self.keep = int(keep)
        self._rgba: OrderedDict[int, np.ndarray] = OrderedDict()
        self._keys: dict[int, str] = {}

    def add(self, index: int, facts: dict[str, Any]) -> None:
        """Register instance ``index``: ``{"shape", "support", "mean_gray"}`` and either ``"key"``
        (its cache file) or ``"rgba"`` (the array itself, for small cut-outs)."""
        if "rgba" in facts:
            rgba = facts["rgba"]
            rgba.setflags(write=False)
            self._remember(index, rgba)
        else:
            self._keys[index] = facts["key"]
        self.__dict__.setdefault("_shape_cache", {})[index] = tuple(facts["shape"])
        self.__dict__.setdefault("_support_cache", {})[index] = tuple(facts["support"])
        if facts.get("mean_gray") is not None:
            self.__dict__.setdefault("_mean_gray_cache", {})[index] = facts["mean_gray"]

    def _remember(self, index: int, rgba: np.ndarray) -> None:
        self._rgba[index] = rgba
        self._rgba.move_to_end(index)
        if len(self._rgba) > self.keep:
            self._rgba.popitem(last=False)

    def rgba(self, index: int) -> np.ndarray:
        hit = self._rgba.get(index)
        if hit is None:  # a file-cached cut-out (a small one comes with every task that pastes it)
            hit = np.load(cache_path(self.work, self._keys[index]))
            hit.setflags(write=False)
            self._remember(index, hit)
        else:
            self._rgba.move_to_end(index)
        return hit

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rgba = self.rgba(index)
        return rgba[..., :3], rgba[..., 3]


# ---------------------------------------------------------------------------------------------
# the process


@dataclass
class _State:
    out: Output
    shard: ShardWriter
    instances: CachedInstances
    backgrounds: CachedBackgrounds


_STATE: _State | None = None


def init_process(out: Output) -> None:
    """Pool initializer: one OpenCV thread, this process's shard and caches (nothing that can
    fail on bad input: the parent has decoded the assets)."""
    global _STATE
    from synthloop.utils.memory import keep_freed_memory

    cv2.setNumThreads(1)
    keep_freed_memory()
    _STATE = _State(out, ShardWriter(out.work), CachedInstances(out.work), CachedBackgrounds(out.work))


def run_chunk(scenes: list[tuple[int, list[tuple[str, SceneParams]]]], facts: dict[int, dict[str, Any]]) -> int:
    """Render and record the scenes of one task; returns the number of images written."""
    if _STATE is None:
        raise RuntimeError("paste worker not initialised (init_process)")
    for index, f in facts.items():
        _STATE.instances.add(index, f)
    n = 0
    for index, variants in scenes:
        rec = write_scene(_STATE.out, index, variants, _STATE.instances, _STATE.backgrounds)
        _STATE.shard.append(rec)
        n += len(rec["images"])
    return n


def torch_loaded() -> bool:
    """Whether this process has imported torch (a worker should not have; tests and benchmarks ask)."""
    import sys

    return "torch" in sys.modules
