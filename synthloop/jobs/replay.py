"""Re-render a written image from its stored params and check it is bit-identical.

Rendering is a pure function of the params and the assets named in ``config.yaml``, so the
re-render, encoded with the same settings, must reproduce the stored file byte for byte; for
PNG output the stored pixels must also equal the raw render exactly. The labels are rebuilt too
and compared with ``annotations.json``.

For JPEG output the stored pixels differ from the raw (unencoded) render by the JPEG loss, which
is large on thin strokes and sharp edges (a max of 200+ of 255 on a digit's edge is normal; the
mean is far smaller): :meth:`ReplayResult.lines` says what each number compares.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from synthloop.compose.apply import apply_scene
from synthloop.compose.params import SceneParams
from synthloop.data.images import encode_png, load_image
from synthloop.errors import InputError
from synthloop.functional.numpy_ops import to_uint8
from synthloop.jobs.paste import ANNOTATIONS_FILE, CONFIG_FILE, PARAMS_FILE, _rle, encode_image
from synthloop.jobs.paste_assets import build_assets
from synthloop.jobs.paste_config import PasteConfig
from synthloop.utils.atomic import atomic_write_bytes


@dataclass
class ReplayResult:
    image_id: int
    file_name: str
    bytes_identical: bool  # the re-render, encoded with the job's settings, equals the stored file
    pixels_identical: bool  # PNG: stored pixels == raw render; JPEG: decoded stored == decoded re-encode
    labels_identical: bool | None  # boxes (and RLE masks) == annotations.json; None if not checked
    max_abs_diff: int  # stored pixels vs the raw (unencoded) render, 0..255 (JPEG loss for JPEG)
    mean_abs_diff: float = 0.0  # the same, averaged over pixels and channels
    image_format: str = "jpg"  # of the stored file: "jpg" or "png"

    @property
    def identical(self) -> bool:
        return self.bytes_identical and self.pixels_identical and self.labels_identical is not False

    def lines(self) -> list[str]:
        """What was compared and how it came out, for people (``synthloop replay`` prints these)."""

        def same(ok: bool | None) -> str:
            return "not checked" if ok is None else "identical" if ok else "DIFFERENT"

        encoded = "PNG" if self.image_format == "png" else "JPEG"
        out = [
            f"{self.file_name}: {'replays bit-identically' if self.identical else 'does NOT replay identically'} from its params (params.jsonl)",
            f"  re-render encoded as the job did ({encoded}) vs stored file: bytes {same(self.bytes_identical)}, decoded pixels {same(self.pixels_identical)}",
            f"  labels rebuilt from the params vs annotations.json: {same(self.labels_identical)}",
        ]
        diff = f"max |difference| {self.max_abs_diff}, mean {self.mean_abs_diff:.2f} (of 255)"
        if self.image_format == "png":
            out.append(f"  stored PNG vs raw render (lossless): {diff}")
        else:
            out.append(
                f"  stored JPEG vs raw render before encoding: {diff}; this is JPEG's compression loss (expected, largest on thin strokes and sharp edges)"
            )
        return out


def _find_params(out_dir: Path, image_id: int) -> tuple[str, dict, Path, int]:
    path = out_dir / PARAMS_FILE
    if not path.is_file():
        raise InputError(f"no {PARAMS_FILE}: not a finished paste output folder", file=out_dir)
    with open(path, encoding="utf-8", errors="strict") as fh:
        try:
            lines = list(fh)
        except UnicodeDecodeError as e:
            raise InputError(f"not UTF-8 text ({e.reason})", file=path) from None
    for n, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except ValueError:
            raise InputError("not a JSON line", file=path, field=f"line {n}") from None
        if not isinstance(rec, dict):
            raise InputError(f"a record must be a JSON object, got {type(rec).__name__}", file=path, field=f"line {n}")
        if rec.get("id") == image_id and type(rec.get("id")) is int:
            if not isinstance(rec.get("file_name"), str):
                raise InputError(f"file_name must be a string, got {rec.get('file_name')!r}", file=path, field=f"line {n}.file_name")
            if not isinstance(rec.get("params"), dict):
                raise InputError(f"params must be a JSON object, got {type(rec.get('params')).__name__}", file=path, field=f"line {n}.params")
            return rec["file_name"], rec["params"], path, n
    raise InputError(f"no image with id {image_id}", file=path, field="id")


def read_scene_params(out_dir: str | Path, image_id: int) -> tuple[str, SceneParams]:
    """The stored file name and the checked :class:`SceneParams` of image ``image_id`` of a paste
    output folder (from its ``params.jsonl``).

    Raises:
        InputError: naming ``params.jsonl`` and the line (and field) at fault.
    """
    file_name, params, path, n = _find_params(Path(out_dir), image_id)
    try:
        return file_name, SceneParams.from_dict(params)
    except InputError as e:
        raise InputError(e.message, file=path, field=f"line {n}.{e.field or 'params'}") from None


def _stored_labels(out_dir: Path, image_id: int) -> list[dict] | None:
    path = out_dir / ANNOTATIONS_FILE
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    return [a for a in doc.get("annotations", []) if a.get("image_id") == image_id]


def replay_image(out_dir: str | Path, image_id: int, *, save_to: str | Path | None = None) -> ReplayResult:
    """Re-render image ``image_id`` of the paste output ``out_dir`` and compare (see module doc).

    ``save_to``: also write the re-render (raw, before JPEG encoding) there as PNG.
    """
    out_dir = Path(out_dir)
    cfg_path = out_dir / CONFIG_FILE
    if not cfg_path.is_file():
        raise InputError(f"no {CONFIG_FILE}: not a paste output folder", file=out_dir)
    cfg = PasteConfig.model_validate(yaml.safe_load(cfg_path.read_text()))
    file_name, scene = read_scene_params(out_dir, int(image_id))
    assets = build_assets(cfg)
    result = apply_scene(scene, assets.instances, assets.backgrounds)
    raw = to_uint8(result.image)
    stored_path = out_dir / file_name
    if not stored_path.is_file():
        raise InputError("image file is missing", file=stored_path)
    data = encode_image(cfg, raw)
    stored = stored_path.read_bytes()
    stored_px = load_image(stored_path, mode="RGB")
    if cfg.image_format == "png":
        pixels_same = bool(np.array_equal(stored_px, raw))
    else:
        fresh_px = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        pixels_same = bool(np.array_equal(stored_px, fresh_px))
    labels = _stored_labels(out_dir, int(image_id))
    labels_same = None
    if labels is not None:
        fresh = result.labelled(cfg.scene.min_visibility)
        labels_same = len(fresh) == len(labels)
        for obj, ann in zip(fresh, labels):
            x0, y0, x1, y1 = obj.box
            labels_same &= ann["category_id"] == obj.category_id and np.allclose(ann["bbox"], [x0, y0, x1 - x0, y1 - y0])
            if cfg.mask_format == "rle":
                labels_same &= ann["segmentation"] == _rle(obj.mask)
    if save_to is not None:
        atomic_write_bytes(save_to, encode_png(raw))
    if stored_px.shape == raw.shape:
        err = np.abs(stored_px.astype(np.int16) - raw.astype(np.int16))
        diff, mean = int(err.max()), float(err.mean())
    else:
        diff, mean = 255, 255.0
    return ReplayResult(int(image_id), file_name, data == stored, pixels_same, labels_same, diff, mean, "png" if cfg.image_format == "png" else "jpg")
