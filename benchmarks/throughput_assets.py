"""The ``cutouts`` workload of the throughput benchmark: real cut-outs and photo backgrounds made
deterministically from images that ship with scikit-image and scikit-learn (no download).

- cut-outs: the coins of ``skimage.data.coins`` (segmented by a threshold, holes filled, each
  coin its own connected component, scaled up 3x so they are 80-170 px) and shapes drawn by
  ``skimage.draw.random_shapes`` (fixed seeds, 60-200 px) filled with the pixels of photos
  (``china.jpg``, ``flower.jpg``, astronaut, coffee, rocket, chelsea), written as a COCO
  instances file with RLE masks, as a user's own segmented data would be;
- backgrounds: 20 photos of 640x480 (crops of the same images and of hubble / immunohistochemistry
  / retina, flipped), as JPEG files in a folder.

``make_cutouts(root)`` writes ``root/instances.json``, ``root/images/`` and ``root/backgrounds/``
and returns the config overrides that read them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np

CANVAS = (480, 640)


def _photos() -> dict[str, np.ndarray]:
    import skimage.data as d
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    return {
        "china": china,
        "flower": flower,
        "astronaut": d.astronaut(),
        "coffee": d.coffee(),
        "rocket": d.rocket(),
        "chelsea": d.chelsea(),
        "hubble": d.hubble_deep_field(),
        "ihc": d.immunohistochemistry(),
        "retina": d.retina(),
    }


def _coins() -> tuple[np.ndarray, list[np.ndarray]]:
    """The coins image (RGB, 3x) and one mask per coin of 60-200 px."""
    import skimage.data as d
    from scipy import ndimage

    gray = cv2.resize(d.coins(), None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    smooth = cv2.GaussianBlur(gray, (0, 0), 3)
    on = ndimage.binary_fill_holes(ndimage.binary_opening(smooth > 110, iterations=3))
    labels, _ = ndimage.label(on)
    masks = []
    for k, sl in enumerate(ndimage.find_objects(labels), 1):
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        touches = sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == gray.shape[0] or sl[1].stop == gray.shape[1]
        if 60 <= min(h, w) and max(h, w) <= 200 and not touches:
            masks.append(labels == k)
    return np.dstack([gray] * 3), masks


def _shapes(photo: np.ndarray, seed: int) -> list[np.ndarray]:
    """Masks of random shapes of 60-200 px drawn on ``photo``'s canvas."""
    from skimage.draw import random_shapes

    img, labels = random_shapes(photo.shape[:2], max_shapes=7, min_shapes=5, min_size=60, max_size=200, num_channels=1, rng=seed, allow_overlap=False)
    masks = []
    for _, ((r0, r1), (c0, c1)) in labels:
        m = np.zeros(photo.shape[:2], bool)
        m[r0:r1, c0:c1] = img[r0:r1, c0:c1, 0] < 255
        if m.sum() >= 400:
            masks.append(m)
    return masks


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _backgrounds(photos: dict[str, np.ndarray], n: int = 20) -> list[np.ndarray]:
    H, W = CANVAS
    names = sorted(photos)
    out = []
    rng = np.random.default_rng(7)
    for k in range(n):
        img = photos[names[k % len(names)]]
        h, w = img.shape[:2]
        s = rng.uniform(0.6, 1.0)
        ch, cw = int(h * s), int(min(w, h * s * W / H))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = cv2.resize(img[y : y + ch, x : x + cw], (W, H), interpolation=cv2.INTER_AREA)
        out.append(crop[:, ::-1] if k % 2 else crop)
    return out


def make_cutouts(root: Path) -> list[str]:
    """Write the workload's COCO instances and backgrounds under ``root``; the paste config
    overrides that use them."""
    root = Path(root)
    if not (root / "instances.json").is_file():
        photos = _photos()
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "backgrounds").mkdir(parents=True, exist_ok=True)
        coins, coin_masks = _coins()
        sources = [("coins.png", coins, coin_masks, 1)]
        for k, name in enumerate(("china", "flower", "astronaut", "coffee", "rocket", "chelsea")):
            sources.append((f"{name}.png", photos[name], _shapes(photos[name], seed=100 + k), 2))
        images, anns = [], []
        for i, (file_name, img, masks, cat) in enumerate(sources):
            cv2.imwrite(str(root / "images" / file_name), cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR))
            images.append({"id": i + 1, "file_name": file_name, "height": int(img.shape[0]), "width": int(img.shape[1])})
            for m in masks:
                rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
                box = [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
                anns.append(
                    {"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "bbox": box, "area": int(m.sum()), "iscrowd": 0, "segmentation": _rle(m)}
                )
        doc = {
            "images": images,
            "annotations": anns,
            "categories": [{"id": 1, "name": "coin", "supercategory": "object"}, {"id": 2, "name": "shape", "supercategory": "object"}],
        }
        for k, bg in enumerate(_backgrounds(photos)):
            cv2.imwrite(str(root / "backgrounds" / f"bg{k:02d}.jpg"), cv2.cvtColor(np.ascontiguousarray(bg), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        (root / "instances.json").write_text(json.dumps(doc))
    return [
        f"instances.coco.json={root / 'instances.json'}",
        f"instances.coco.images={root / 'images'}",
        f"backgrounds.sources=[{root / 'backgrounds'}]",
        "backgrounds.pool=20",
        # cut-outs keep their own size (60-200 px): scale 1 of the longer side of the mask box
        # relative to the canvas' shorter side is about 0.12-0.42
        "scene.placement.scale=[0.12,0.42]",
    ]


def describe(root: Path) -> dict:
    """Counts and sizes of the written cut-outs (for the JSON)."""
    doc = json.loads((Path(root) / "instances.json").read_text())
    sides = [max(a["bbox"][2], a["bbox"][3]) for a in doc["annotations"]]
    return {"cutouts": len(sides), "side_px": [min(sides), max(sides)], "backgrounds": len(list((Path(root) / "backgrounds").glob("*.jpg")))}


def _load_cutouts(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(rgb uint8 (h, w, 3), alpha float32 (h, w, 1))`` of every cut-out, cropped to its box."""
    from pycocotools import mask as mask_utils

    doc = json.loads((Path(root) / "instances.json").read_text())
    files = {im["id"]: im["file_name"] for im in doc["images"]}
    images: dict[int, np.ndarray] = {}
    out = []
    for a in doc["annotations"]:
        img = images.get(a["image_id"])
        if img is None:
            img = images[a["image_id"]] = cv2.cvtColor(cv2.imread(str(Path(root) / "images" / files[a["image_id"]])), cv2.COLOR_BGR2RGB)
        m = mask_utils.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
        x, y, w, h = a["bbox"]
        out.append((np.ascontiguousarray(img[y : y + h, x : x + w]), m[y : y + h, x : x + w, None].astype(np.float32)))
    return out


def floor_worker(args: tuple[str, str, int, int, str]) -> tuple[int, float]:
    """The bare floor of the issue, one process: per image copy a background, alpha-composite 3-6
    cut-outs at random places (no warp, no annotations), encode JPEG q90 with ``encoder``
    (``simplejpeg`` or ``pil``) and write it. Returns (images, seconds after loading)."""
    root, out_dir, n, seed, encoder = args
    import io

    cv2.setNumThreads(1)
    cuts = _load_cutouts(Path(root))
    bgs = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted((Path(root) / "backgrounds").glob("*.jpg"))]
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    H, W = CANVAS
    t0 = time.perf_counter()
    for i in range(n):
        img = bgs[int(rng.integers(len(bgs)))].copy()
        for _ in range(int(rng.integers(3, 7))):
            rgb, a = cuts[int(rng.integers(len(cuts)))]
            h, w = a.shape[:2]
            y, x = int(rng.integers(0, H - h)), int(rng.integers(0, W - w))
            win = img[y : y + h, x : x + w]
            win[...] = (a * rgb + (1.0 - a) * win + 0.5).astype(np.uint8)
        if encoder == "simplejpeg":
            import simplejpeg

            data = simplejpeg.encode_jpeg(img, quality=90, colorspace="RGB", colorsubsampling="420")
        else:
            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(img).save(buf, "JPEG", quality=90)
            data = buf.getvalue()
        (out / f"{seed}-{i:06d}.jpg").write_bytes(data)
    return n, time.perf_counter() - t0


def measure_floor(root: Path, out_dir: Path, n: int, processes: int, encoder: str) -> float:
    """Images per second of :func:`floor_worker` in ``processes`` fresh processes (spawned: they
    import NumPy, OpenCV and the encoder only)."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(processes) as pool:
        res = pool.map(floor_worker, [(str(root), str(out_dir), n, k, encoder) for k in range(processes)])
    return round(sum(k for k, _ in res) / max(s for _, s in res), 1)
