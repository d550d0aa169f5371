"""Throughput of the glyph renderer (``synthloop.render``), per set of latent variations.

The sets follow MrGAN's Table 1 (texture, + lighting, + background, + camera views, + 2D
augmentation), then every variation (adding occlusion, stroke width and elastic distortion).
For each set it measures images per second rendered in memory (``sample`` + ``apply``, batches
of ``--batch``) and, for the plain and full sets, written to disk by ``write_dataset`` (PNG
files, COCO, params.jsonl) in one process (renderer set-up excluded, reported separately) and
with ``output.workers=2`` (two spawned processes; their start-up included). When Ray is
installed, the ``ray`` entry writes the full set with ``--backend ray`` on a simulated cluster of
one, then two 1-CPU nodes (``benchmarks/throughput_ray.py``'s helpers; ``--no-ray`` skips it).

    .venv/bin/python benchmarks/render_throughput.py            # writes benchmarks/results/render_throughput.json
    .venv/bin/python benchmarks/render_throughput.py --quick    # fewer images, for a smoke test

The target is 2,000 images/s at 28x28 grey with every variation on, on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_result  # noqa: E402

from synthloop.jobs.render import RenderJobConfig, write_dataset  # noqa: E402
from synthloop.render import VARIATIONS, Renderer  # noqa: E402

CUMULATIVE = ("texture", "lighting", "background", "camera", "augment")
SETS: list[tuple[str, tuple[str, ...]]] = [("none", ())]
SETS += [("+".join(CUMULATIVE[: k + 1]), CUMULATIVE[: k + 1]) for k in range(len(CUMULATIVE))]
SETS += [("all", VARIATIONS)]
TARGET = 2000.0


def config(on: tuple[str, ...], **kw) -> RenderJobConfig:
    return RenderJobConfig(**{v: {"enabled": v in on} for v in VARIATIONS}, **kw)


def in_memory(cfg: RenderJobConfig, images: int, batch: int) -> dict:
    t0 = time.perf_counter()
    r = Renderer(cfg)
    setup = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    r.render(batch, g)  # warm-up: decodes photos, builds dilation levels
    done, t0 = 0, time.perf_counter()
    while done < images:
        r.render(batch, g)
        done += batch
    dt = time.perf_counter() - t0
    return {"images": done, "seconds": round(dt, 3), "images_per_s": round(done / dt, 1), "setup_s": round(setup, 3)}


def file_create_us(folder: str | None, n: int = 1000) -> float:
    """Microseconds to create one small file in a fresh folder under ``folder``: the floor the
    file system puts under writing an image-folder dataset."""
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        t0 = time.perf_counter()
        for i in range(n):
            (Path(tmp) / f"{i:06d}.png").write_bytes(b"\0" * 300)
        return round((time.perf_counter() - t0) / n * 1e6, 1)


def with_writing(cfg: RenderJobConfig, images: int, batch: int, workers: int = 1, folder: str | None = None) -> dict:
    cfg = cfg.model_copy(update={"count": images, "batch_size": batch, "output": cfg.output.model_copy(update={"workers": workers})})
    t0 = time.perf_counter()
    Renderer(cfg)  # the set-up write_dataset repeats (fonts are cached by then; photos are not)
    setup = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        t0 = time.perf_counter()
        write_dataset(cfg, Path(tmp) / "out")
        dt = time.perf_counter() - t0
    return {
        "images": images,
        "workers": workers,
        "seconds": round(dt, 3),
        "images_per_s": round(images / max(dt - setup, 1e-9), 1),
        "images_per_s_incl_setup": round(images / dt, 1),
        "setup_s": round(setup, 3),
    }


def measure_render_ray(cfg: RenderJobConfig, images: int, batch: int, folder: str | None = None) -> dict:
    """``write_dataset`` on Ray (``synthloop render --backend ray``) on a simulated cluster of one,
    then two 1-CPU nodes (:func:`throughput_ray.one_cpu_nodes`), and whether the 2-node folder is
    byte-identical to the local backend's. The rate includes the set-up (the driver's renderer and
    each task's, made once per run in each worker process) and the driver's assembly."""
    from throughput_ray import one_cpu_nodes, output_files, scaling

    from synthloop.jobs.render_ray import write_dataset_ray

    cfg = cfg.model_copy(update={"count": images, "batch_size": batch})
    warm = cfg.model_copy(update={"count": 8, "batch_size": 1})  # 8 small tasks: they reach every node

    def timed(out: Path) -> float:
        return images / write_dataset_ray(cfg, out)["seconds"]

    with tempfile.TemporaryDirectory(prefix="render_ray_", dir=folder) as tmp:
        root = Path(tmp)
        rates = one_cpu_nodes(root, lambda out: write_dataset_ray(warm, out), timed)
        write_dataset(cfg, root / "local")
        identical = output_files(root / "local") == output_files(root / "ray2")
    return {
        **scaling(rates),
        "identical_to_local": identical,
        "images": images,
        "batch": batch,
        "cluster": "ray.cluster_utils.Cluster on one machine, 1-CPU nodes",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20480, help="images per in-memory measurement")
    ap.add_argument("--write-images", type=int, default=10240, help="images per write measurement")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch intra-op thread counts to measure in memory")
    ap.add_argument("--quick", action="store_true", help="2048 / 1024 images")
    ap.add_argument("--tmp", default=None, help="folder for the written datasets (default: the system temp folder)")
    ap.add_argument("--no-save", action="store_true", help="print only")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray entry (measured when Ray is installed)")
    args = ap.parse_args()
    if args.quick:
        args.images, args.write_images = 2048, 1024

    figures = []
    grey = {"size": (28, 28), "channels": 1}
    for name, on in SETS:
        row = {"set": name, "variations": list(on), "size": [28, 28], "channels": 1, "batch": args.batch, "in_memory": {}}
        for threads in args.threads:
            torch.set_num_threads(threads)
            row["in_memory"][f"{threads}_threads"] = in_memory(config(on, **grey), args.images, args.batch)
        torch.set_num_threads(1)
        if name in ("none", "all"):
            row["written"] = with_writing(config(on, **grey), args.write_images, args.batch, folder=args.tmp)
            row["written_2_workers"] = with_writing(config(on, **grey), args.write_images, args.batch, workers=2, folder=args.tmp)
        figures.append(row)
        rates = "  ".join(f"{k.split('_')[0]} thr {v['images_per_s']:>7.0f}/s" for k, v in row["in_memory"].items())
        written = ""
        if "written" in row:
            written = f"  | written {row['written']['images_per_s']:>5.0f}/s, 2 workers {row['written_2_workers']['images_per_s_incl_setup']:>5.0f}/s incl. start-up"
        print(f"{name:44s} in memory: {rates}{written}", flush=True)
    torch.set_num_threads(1)
    rgb = {"set": "all", "variations": list(VARIATIONS), "size": [64, 64], "channels": 3, "batch": 256, "supersample": 2}
    rgb["in_memory"] = {"1_threads": in_memory(config(VARIATIONS, size=(64, 64), channels=3, supersample=2), max(args.images // 8, 256), 256)}
    figures.append(rgb)
    print(f"{'all, 64x64 RGB, 2x supersampled':44s} in memory: 1 thr {rgb['in_memory']['1_threads']['images_per_s']:>7.0f}/s")

    full = next(f for f in figures if f["set"] == "all" and f["channels"] == 1)
    best_threads, best = max(full["in_memory"].items(), key=lambda kv: kv[1]["images_per_s"])
    written = max(full["written"]["images_per_s"], full["written_2_workers"]["images_per_s_incl_setup"])
    summary = {
        "target_images_per_s": TARGET,
        "all_in_memory_images_per_s": best["images_per_s"],
        "all_in_memory_best_threads": int(best_threads.split("_")[0]),
        "all_written_images_per_s": written,
        "file_create_us": file_create_us(args.tmp),
        "meets_target_in_memory": best["images_per_s"] >= TARGET,
        "meets_target_written": written >= TARGET,
    }
    print(summary)
    result = {"benchmark": "render_throughput", "threads": args.threads, "summary": summary, "figures": figures}
    if not args.no_ray and importlib.util.find_spec("ray") is not None:
        result["ray"] = measure_render_ray(config(VARIATIONS, **grey), args.write_images, args.batch, folder=args.tmp)
        ray_rates, same = result["ray"]["images_per_s"], result["ray"]["identical_to_local"]
        print(f"{'all, written, Ray on 1 / 2 one-CPU nodes':44s} {ray_rates[0]:>7.0f}/s / {ray_rates[1]:>7.0f}/s incl. set-up, identical to local: {same}")
    if not args.no_save:
        path = write_result("render_throughput", result)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
