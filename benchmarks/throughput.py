"""End-to-end throughput of ``synthloop paste`` per workload and blend mode (issue 14's contract).

Workloads (640x480, 3-6 objects, 1-3 TERSE background artefacts, photometric jitter on, JPEG q90,
COCO with RLE masks, params.jsonl):

- ``cutouts``: about 60 real cut-outs of 60-200 px (coins and shapes segmented from images that
  ship with scikit-image / scikit-learn, read from a COCO instances file) on 20 photo
  backgrounds (``benchmarks/throughput_assets.py``);
- ``digits``: MNIST digit cut-outs, tinted, on the built-in backgrounds (a pool of 64).

Per workload and mode (``none alpha gaussian box motion poisson pyramid``):

- ``images_per_s_1w`` / ``images_per_s_2w``: :func:`synthloop.jobs.paste.run_paste` with 1 worker
  (in the calling process) and 2 worker processes; the rate over the images after the first 10%,
  including the final assembly of ``annotations.json`` and ``params.jsonl``;
- ``first_image_s_2w``: seconds from the ``run_paste`` call (synthloop already imported, as in
  the CLI once it has parsed the config) until the first image file exists;
- ``peak_rss_mb_total_2w``: peak of the summed RSS of every process of the job (this one, the
  fork server, the workers; psutil, sampled every 50 ms); ``peak_rss_mb_per_worker_2w``: the
  workers' share divided by 2;
- ``cpu_ms_per_image_2w``: worker CPU time per image (on a loaded machine ``2000 / cpu_ms`` is
  what two free cores would give).

``profile``: where the time of a 1-worker job goes (cProfile, cumulative time of the stage
functions over the job's wall time; ``other`` is the rest, and ``profiles[workload].other_top``
names the functions with the most self time outside every stage).
``reference``: a plain PIL paste loop (digits) and the bare floor: a NumPy loop that
alpha-composites the same 3-6 cut-outs onto the same backgrounds (no warp, no annotations) and
writes JPEG q90, in 1 and 2 processes. ``ray`` comes from ``benchmarks/throughput_ray.py`` when it
exists (skip with ``--no-ray``), ``gpu`` from ``benchmarks/throughput_gpu.py`` when a GPU is there.

    .venv/bin/python benchmarks/throughput.py          # writes benchmarks/results/throughput.json
    .venv/bin/python benchmarks/throughput.py --quick  # 10x fewer images, a smoke test
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/throughput.py --quick --workloads cutouts --modes none --no-ray --out /tmp/tp

Targets (2 workers): cutouts >= 300 images/s none/alpha/gaussian/box, >= 150 motion, >= 25 poisson;
digits >= 600 cheap modes; 2 workers >= 1.8x 1 worker; first image <= 2 s; <= 300 MB RSS per worker.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, PeakRSS, write_result
from throughput_assets import describe, make_cutouts, measure_floor

from synthloop.jobs.paste import run_paste
from synthloop.jobs.paste_config import load_paste_config

HERE = Path(__file__).resolve().parent
MODES = ("none", "alpha", "gaussian", "box", "motion", "poisson", "pyramid")
WORKLOADS = ("cutouts", "digits")
IMAGES = {"none": 2000, "alpha": 2000, "gaussian": 2000, "box": 2000, "motion": 1200, "poisson": 240, "pyramid": 600}
CHEAP = ("none", "alpha", "gaussian", "box")
TARGETS_2W = {
    "cutouts": {**dict.fromkeys(CHEAP, 300.0), "motion": 150.0, "poisson": 25.0},
    "digits": dict.fromkeys(CHEAP, 600.0),
}
CANVAS = (480, 640)
POOL = 64
# stage -> the functions whose cumulative time it is (module path suffix, function name)
STAGES = {
    "startup": [("jobs/paste.py", "_start_worker")],
    "sampling": [("jobs/paste.py", "scene_variants")],
    "background": [("compose/apply.py", "_as_hwc"), ("compose/apply.py", "_as_float"), ("compose/sources.py", "render_one")],
    "warp": [("functional/numpy_ops.py", "warp_window")],
    "blend": [("functional/blend.py", "blend_into")],
    "mask_bookkeeping_rle": [("jobs/paste_worker.py", "window_rle"), ("compose/apply.py", "_box")],
    "jpeg_encode": [("jobs/paste_worker.py", "encode"), ("functional/numpy_ops.py", "to_uint8")],
    "file_write": [("utils/atomic.py", "atomic_write_bytes")],
    "params_serialisation": [("jobs/paste_worker.py", "append")],
    "finalize": [("jobs/paste.py", "finalize")],
}


def job_overrides(workload: str, mode: str, n: int, assets_dir: Path) -> list[str]:
    common = [f"num_images={n}", f"scene.canvas=[{CANVAS[0]},{CANVAS[1]}]", "scene.objects=[3,6]", f"scene.blend.modes=[{mode}]",
              "formats=[coco]", "image_format=jpg", "jpeg_quality=90", "chunk_size=16"]  # fmt: skip
    if workload == "cutouts":
        return common + make_cutouts(assets_dir)
    return common + ["backgrounds.sources=[builtin]", f"backgrounds.pool={POOL}"]


class FirstImage:
    """Seconds from ``start()`` until a file appears in ``folder`` (polled every 5 ms)."""

    def __init__(self, folder: Path):
        self.folder, self.seconds = folder, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.is_set():
            try:
                if any(p.suffix == ".jpg" for p in self.folder.iterdir()):
                    self.seconds = round(time.perf_counter() - t0, 3)
                    return
            except OSError:
                pass
            time.sleep(0.005)

    def __enter__(self) -> FirstImage:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timed_job(cfg, workers: int, out: Path) -> dict:
    """Run one paste job; the steady rate excludes the first 10% of images (start-up)."""
    n = cfg.num_images
    first = max(1, n // 10)
    marks: list[tuple[float, int]] = []
    cpu: dict[str, tuple[int, float]] = {}

    def progress(done: int, total: int) -> None:
        marks.append((time.perf_counter(), done))
        if done >= first and "start" not in cpu:
            cpu["start"] = (done, _worker_cpu_s(workers))
        if done == total:
            cpu["end"] = (done, _worker_cpu_s(workers))

    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    with PeakRSS() as rss, FirstImage(out / "images") as first_image:
        run_paste(cfg, out, workers=workers, progress=progress)
    t1 = time.perf_counter()
    start = next((t, d) for t, d in marks if d >= first)
    shutil.rmtree(out, ignore_errors=True)
    (d0, c0), (d1, c1) = cpu["start"], cpu["end"]
    return {
        "images_per_s": round((n - start[1]) / max(t1 - start[0], 1e-9), 1),
        "first_image_s": first_image.seconds,
        "cpu_ms_per_image": round((c1 - c0) / max(d1 - d0, 1) * 1e3, 2),
        "wall_s": round(t1 - t0, 2),
        "peak_rss_mb_total": rss.peak_mb("all"),
        "peak_rss_mb_workers": rss.peak_mb("self" if workers == 1 else "workers"),
        "load_average_1min": round(load, 2),
    }


def profile_job(cfg, out: Path) -> dict:
    """Shares of a 1-worker job's wall time per stage (see ``STAGES``)."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    run_paste(cfg, out, workers=1)
    prof.disable()
    total = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    stats = pstats.Stats(prof).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    shares: dict[str, float] = {}
    for stage, funcs in STAGES.items():
        ct = sum(v[3] for (f, _, name), v in stats.items() if any(f.endswith(suffix) and name == fn for suffix, fn in funcs))
        shares[stage] = round(ct / total, 4)
    # the stages' functions do not call each other; "other" is what no stage holds (Python glue)
    shares["ipc"] = 0.0  # profiled in process (no pool); with workers a task carries params + small cut-outs (see profile_note)
    shares["other"] = round(max(0.0, 1.0 - sum(shares.values())), 4)
    return {
        "shares": shares,
        "other_top": other_top(stats, total),
        "images": cfg.num_images,
        "wall_s": round(total, 2),
        "ms_per_image": round(total / cfg.num_images * 1e3, 2),
    }


def other_top(stats: dict, total: float, top: int = 10) -> dict[str, float]:
    """What ``other`` is: the functions with the most self time (share of the wall time) that run
    outside every stage's functions. A function is inside a stage when it is a stage function or
    every function calling it is inside one (a fixpoint over cProfile's caller graph); one with
    callers both inside and outside counts as outside, so this over- rather than under-states."""
    staged = {k for k in stats if any(k[0].endswith(suffix) and k[2] == fn for funcs in STAGES.values() for suffix, fn in funcs)}
    inside = set(staged)
    changed = True
    while changed:
        changed = False
        for key, (_, _, _, _, callers) in stats.items():
            if key not in inside and callers and all(c in inside for c in callers):
                inside.add(key)
                changed = True
    rows = sorted(((v[2], k) for k, v in stats.items() if k not in inside), reverse=True)[:top]
    return {f"{Path(f).parent.name}/{Path(f).name}:{name}" if f != "~" else name: round(tt / total, 4) for tt, (f, _, name) in rows}


def _worker_cpu_s(workers: int) -> float:
    """CPU seconds used so far by the job's workers: this process for 1 worker, else the pool
    processes (grandchildren: forked by the fork server)."""
    import psutil

    me = psutil.Process()
    if workers == 1:
        return time.process_time()
    total = 0.0
    for child in me.children(recursive=True):
        try:
            if child.ppid() != me.pid:
                t = child.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            continue
    return total


def pil_reference(n: int, root: Path, seed: int = 0) -> dict:
    """A plain single-process PIL paste loop with comparable work per image (see module doc)."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    from synthloop.data.builtin import MnistDigits
    from synthloop.jobs.paste_assets import build_backgrounds
    from synthloop.jobs.paste_config import BackgroundsConfig
    from synthloop.utils.atomic import atomic_write_json

    H, W = CANVAS
    bank = build_backgrounds(BackgroundsConfig(sources=["builtin"], pool=POOL), seed)
    pool = [Image.fromarray(np.ascontiguousarray(bank.render_one(bank.sample_one(CANVAS, _gen(k)), CANVAS))) for k in range(POOL)]
    digits = MnistDigits.load(seed, limit=5000)
    cutouts = [Image.fromarray(np.clip(digits.rgba(i) * 255 + 0.5, 0, 255).astype(np.uint8), "RGBA") for i in range(len(digits))]
    rng = random.Random(seed)
    out = root / "pil"
    (out / "images").mkdir(parents=True)
    records = []
    t, c = time.perf_counter(), time.process_time()
    for i in range(n):
        img = pool[rng.randrange(POOL)].copy()
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        anns = []
        for _ in range(rng.randint(3, 6)):
            k = rng.randrange(len(cutouts))
            side = max(8, round(28 * rng.uniform(0.15, 0.5) * H / 20))
            cut = cutouts[k].resize((side, side), Image.Resampling.BILINEAR).rotate(rng.uniform(-30, 30), Image.Resampling.BILINEAR, expand=True)
            x, y = rng.randrange(-cut.width // 4, W - 3 * cut.width // 4), rng.randrange(-cut.height // 4, H - 3 * cut.height // 4)
            img.paste(cut, (x, y), cut)
            mask = np.zeros((H, W), np.uint8, order="F")
            a = np.asarray(cut.getchannel("A")) > 127
            x0, y0 = max(x, 0), max(y, 0)
            x1, y1 = min(x + cut.width, W), min(y + cut.height, H)
            mask[y0:y1, x0:x1] = a[y0 - y : y1 - y, x0 - x : x1 - x]
            rle = mask_utils.encode(mask)
            anns.append(
                {
                    "category_id": digits.category_of(k),
                    "bbox": mask_utils.toBbox(rle).tolist(),
                    "segmentation": {"size": [H, W], "counts": rle["counts"].decode()},
                }
            )
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        (out / "images" / f"{i:06d}.jpg").write_bytes(buf.getvalue())
        records.append({"id": i, "file_name": f"images/{i:06d}.jpg", "annotations": anns})
    atomic_write_json(out / "annotations.json", records, indent=None)
    rate = n / (time.perf_counter() - t)
    cpu_ms = (time.process_time() - c) / n * 1e3
    shutil.rmtree(out, ignore_errors=True)
    return {"images": n, "images_per_s": round(rate, 1), "cpu_ms_per_image": round(cpu_ms, 2)}


def _gen(k: int):
    from synthloop.utils.seeding import make_generator

    return make_generator(0, "reference-pool", k)


def batch_rate(mode: str = "alpha", batch: int = 64, size: int = 128, iters: int = 20) -> dict:
    """Composites per second of the differentiable torch path, one thread."""
    import torch

    from synthloop.compose.batch import paste_batch
    from synthloop.data.builtin import MnistDigits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        digits = MnistDigits.load(0, limit=batch)
        fg = torch.stack([digits.tensor(i)[0] for i in range(batch)])
        alpha = torch.stack([digits.tensor(i)[1] for i in range(batch)])
        bg = torch.rand(batch, 3, size, size, generator=g)
        affine = torch.stack([torch.rand(batch, generator=g) * 60 - 30, torch.rand(batch, generator=g) * 40 - 20, torch.rand(batch, generator=g) * 40 - 20,
                              torch.zeros(batch), 1.5 + torch.rand(batch, generator=g) * 2, 1.5 + torch.rand(batch, generator=g) * 2], 1)  # fmt: skip
        photo = torch.stack([0.8 + 0.4 * torch.rand(batch, generator=g) for _ in range(3)] + [0.06 * torch.rand(batch, generator=g) - 0.03], 1)
        paste_batch(fg, alpha, bg, affine, photometric_params=photo, blend_mode=mode)
        t = time.perf_counter()
        for _ in range(iters):
            paste_batch(fg, alpha, bg, affine, photometric_params=photo, blend_mode=mode)
        rate = batch * iters / (time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    return {
        "what": f"paste_batch, B={batch}, {size}x{size}, one 28x28 digit per canvas, photometric on, blend {mode}, torch CPU 1 thread",
        "images_per_s": round(rate, 1),
    }


def _optional(name: str, func: str, **kwargs):
    """``benchmarks/<name>.py``'s ``func(**kwargs)`` when that file exists (another section's
    benchmark), else None."""
    if not (HERE / f"{name}.py").is_file():
        return None
    module = __import__(name)
    return getattr(module, func)(**kwargs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10x fewer images (smoke test)")
    ap.add_argument("--scale", type=float, default=None, help="fraction of the full image counts (overrides --quick; recorded)")
    ap.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    ap.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=WORKLOADS)
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray section (benchmarks/throughput_ray.py)")
    ap.add_argument("--no-gpu", action="store_true", help="skip the GPU section (benchmarks/throughput_gpu.py)")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the jobs' output (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON (default: benchmarks/results)")
    args = ap.parse_args()
    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)

    from rich.console import Console
    from rich.table import Table

    console = Console()
    root = Path(tempfile.mkdtemp(prefix="synthloop-bench-", dir=args.tmp))
    assets_dir = root / "cutout-assets"
    result: dict = {"workloads": {}, "settings": {"canvas_hw": list(CANVAS), "objects": [3, 6], "artefacts": [1, 3], "image_format": "jpg q90", "mask_format": "rle",
                                                  "quick": args.quick, "scale": scale, "rate": "images after the first 10%, including the final annotations.json/params.jsonl assembly"}}  # fmt: skip
    try:
        make_cutouts(assets_dir)
        result["settings"]["cutouts"] = describe(assets_dir)
        console.print("[bold]reference[/]: PIL loop (digits), bare composite+JPEG floor (cutouts) ...")
        nf = max(40, int(600 * scale))
        result["reference"] = {
            "pil_loop_digits": {
                "what": "single-process PIL loop: pooled background copy + flip, per digit resize + rotate + paste with alpha mask + RLE, JPEG q90, JSON",
                **pil_reference(max(20, int(400 * scale)), root),
            },
            "floor_cutouts": {
                "what": "bare NumPy loop: background copy, alpha-composite 3-6 of the same cut-outs (no warp, no annotations), JPEG q90, write",
                **{f"images_per_s_{p}p_{enc}": measure_floor(assets_dir, root / "floor", nf, p, enc) for p in (1, 2) for enc in ("simplejpeg", "pil")},
            },
        }
        console.print(f"  {result['reference']}")
        result["batch"] = batch_rate()
        result["profile"], profiles = {}, {}
        for workload in args.workloads:
            n = max(60, int(600 * scale))
            profiles[workload] = profile_job(load_paste_config(None, job_overrides(workload, "none", n, assets_dir)), root / f"profile-{workload}")
            console.print(f"[bold]profile[/] {workload}: {profiles[workload]}")
        # the contract's one profile: the cutouts workload (the one the targets are about)
        result["profile"] = profiles.get("cutouts", next(iter(profiles.values())))["shares"]
        result["profiles"] = profiles
        result["profile_note"] = ("shares of a 1-worker job's wall time (cProfile cumulative time of each stage's functions, blend mode none); "
                                  "other_top: the functions with the most self time outside every stage (what other is); "
                                  "ipc is 0 in this in-process profile; in a pool run the parent samples the params and a task carries them (plus cut-outs up to 64 KiB; larger ones and backgrounds go through .npy files in .work/cache), images and records are written by the worker")  # fmt: skip
        for workload in args.workloads:
            modes: dict[str, dict] = {}
            for mode in args.modes:
                n = max(20, int(IMAGES[mode] * scale))
                console.print(f"[bold]{workload} {mode}[/]: {n} images, 1 worker then 2 ...")
                cfg = load_paste_config(None, job_overrides(workload, mode, n, assets_dir))
                one = timed_job(cfg, 1, root / f"{workload}-{mode}-1w")
                two = timed_job(cfg, 2, root / f"{workload}-{mode}-2w")
                target = TARGETS_2W[workload].get(mode)
                modes[mode] = {
                    "images_per_s_1w": one["images_per_s"],
                    "images_per_s_2w": two["images_per_s"],
                    "first_image_s_2w": two["first_image_s"],
                    "peak_rss_mb_total_2w": two["peak_rss_mb_total"],
                    "peak_rss_mb_per_worker_2w": round(two["peak_rss_mb_workers"] / 2, 1),
                    "first_image_s_1w": one["first_image_s"],
                    "peak_rss_mb_total_1w": one["peak_rss_mb_total"],
                    "scaling_2w_over_1w": round(two["images_per_s"] / max(one["images_per_s"], 1e-9), 2),
                    "cpu_ms_per_image_1w": one["cpu_ms_per_image"],
                    "cpu_ms_per_image_2w": two["cpu_ms_per_image"],
                    "images_per_s_2w_if_cores_were_free": round(2 * 1000 / max(two["cpu_ms_per_image"], 1e-9), 1),
                    "target_2w": target,
                    "meets_target": None if target is None else two["images_per_s"] >= target,
                    "images": n,
                    "wall_s_1w": one["wall_s"],
                    "wall_s_2w": two["wall_s"],
                    "load_average_1min": [one["load_average_1min"], two["load_average_1min"]],
                }
                console.print(
                    f"  1w {one['images_per_s']}/s, 2w {two['images_per_s']}/s, first image {two['first_image_s']} s, RSS {two['peak_rss_mb_total']} MB"
                )
            result["workloads"][workload] = {"modes": modes}
    finally:
        shutil.rmtree(root, ignore_errors=True)

    # ---- other backends: filled by their own benchmark files when they exist ---------------
    if not args.no_ray:
        ray = _optional("throughput_ray", "measure_ray", quick=args.quick)
        if ray is not None:
            result["ray"] = ray
    if not args.no_gpu:
        gpu = _optional("throughput_gpu", "measure_gpu", quick=args.quick)
        if gpu is not None:
            result["gpu"] = gpu

    floor = result["reference"]["floor_cutouts"]["images_per_s_2p_simplejpeg"]
    for workload, w in result["workloads"].items():
        table = Table(title=f"synthloop paste, {workload}, {CANVAS[1]}x{CANVAS[0]}, 3-6 objects (bare floor, 2 processes: {floor} img/s)")
        for col in ("mode", "1w img/s", "2w img/s", "target", "2w/1w", "first image s", "RSS MB total (2w)", "CPU ms/img (2w)", "2w if cores free"):
            table.add_column(col, justify="right")
        for mode, m in w["modes"].items():
            ok = m["meets_target"]
            mark = "" if ok is None else (" [green]ok[/]" if ok else " [red]below[/]")
            table.add_row(mode, f"{m['images_per_s_1w']:.0f}", f"{m['images_per_s_2w']:.0f}{mark}", "-" if m["target_2w"] is None else f"{m['target_2w']:.0f}",
                          f"{m['scaling_2w_over_1w']:.2f}", f"{m['first_image_s_2w']}", f"{m['peak_rss_mb_total_2w']:.0f}",
                          f"{m['cpu_ms_per_image_2w']:.2f}", f"{m['images_per_s_2w_if_cores_were_free']:.0f}")  # fmt: skip
        console.print(table)
    console.print("profile (cutouts, share of a 1-worker job): " + ", ".join(f"{k} {v:.0%}" for k, v in result["profile"].items()))
    path = write_result("throughput", result, results_dir=args.out)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
