"""Torch-free paste workers, before/after side by side: peak RSS per worker, time to the first
image and images/s with 2 workers on the throughput workloads (``cutouts``, ``digits``; one cheap
blend mode), each variant in a fresh interpreter, the two interleaved.

``before``: the workers import torch and sample their own scenes (the fork server preloads
``synthloop.jobs.paste``; the path kept for PSIS jobs). ``after``: the parent samples, the workers
(fork server preloading ``synthloop.jobs.paste_worker``) only composite, encode and write.

    python benchmarks/paste_workers.py [--quick] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_result
from throughput import CANVAS, POOL
from throughput_assets import make_cutouts


def _overrides(workload: str, n: int, assets: Path) -> list[str]:
    common = [f"num_images={n}", f"scene.canvas=[{CANVAS[0]},{CANVAS[1]}]", "scene.objects=[3,6]", "scene.blend.modes=[alpha]",
              "formats=[coco]", "image_format=jpg", "jpeg_quality=90", "chunk_size=16"]  # fmt: skip
    if workload == "cutouts":
        return common + make_cutouts(assets)
    return common + ["backgrounds.sources=[builtin]", f"backgrounds.pool={POOL}"]


class WorkerPeaks:
    """Peak RSS of this process and of each grandchild (a pool worker forked by the fork server)."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.parent_mb = 0.0
        self.workers: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = self._proc.pid
        while not self._stop.is_set():
            self.parent_mb = max(self.parent_mb, self._proc.memory_info().rss / 2**20)
            for child in self._proc.children(recursive=True):
                try:
                    if child.ppid() != me:
                        self.workers[child.pid] = max(self.workers.get(child.pid, 0.0), child.memory_info().rss / 2**20)
                except psutil.Error:
                    continue
            time.sleep(0.05)

    def __enter__(self) -> WorkerPeaks:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def one(variant: str, workload: str, n: int, assets: Path) -> dict:
    """Run one job in this (fresh) interpreter."""
    from synthloop.jobs import paste
    from synthloop.jobs.paste_config import load_paste_config

    if variant == "before":
        import multiprocessing as mp

        def before_context():
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(["synthloop.jobs.paste"])
            return ctx

        paste._mp_context = before_context
        paste._run_pool = paste._run_pool_sampling
    cfg = load_paste_config(None, _overrides(workload, n, assets))
    out = Path(tempfile.mkdtemp(prefix=f"pw-{variant}-"))
    marks: list[tuple[float, int]] = []
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    with WorkerPeaks() as peaks:
        paste.run_paste(cfg, out / "job", workers=2, progress=lambda d, t: marks.append((time.perf_counter(), d)))
    t1 = time.perf_counter()
    first = next(t for t, d in marks if d > 0) - t0
    tenth = next((t, d) for t, d in marks if d >= n // 10)
    return {
        "variant": variant,
        "workload": workload,
        "images": n,
        "first_image_s": round(first, 3),
        "images_per_s_total": round(n / (t1 - t0), 1),
        "images_per_s_steady": round((n - tenth[1]) / max(t1 - tenth[0], 1e-9), 1),
        "peak_rss_mb_per_worker": round(max(peaks.workers.values(), default=0.0), 1),
        "workers_seen": len(peaks.workers),
        "peak_rss_mb_parent": round(peaks.parent_mb, 1),
        "load_average_1min_before": round(load, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer images")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--one", nargs=3, metavar=("VARIANT", "WORKLOAD", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--assets", type=Path, default=None)
    args = ap.parse_args()
    assets = args.assets or Path(tempfile.gettempdir()) / "synthloop-throughput-assets"
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], int(args.one[2]), assets)))
        return
    sizes = {"cutouts": 200, "digits": 400} if args.quick else {"cutouts": 600, "digits": 1200}
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for r in range(args.rounds):
        for workload, n in sizes.items():
            for variant in ("before", "after") if r % 2 == 0 else ("after", "before"):
                cmd = [sys.executable, __file__, "--one", variant, workload, str(n), "--assets", str(assets)]
                res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
                row = json.loads(res.stdout.strip().splitlines()[-1]) | {"round": r}
                rows.append(row)
                print(
                    f"{workload:8s} {variant:6s} round {r}: first image {row['first_image_s']:6.2f} s  "
                    f"{row['images_per_s_total']:6.1f} img/s total, {row['images_per_s_steady']:6.1f} steady  "
                    f"peak RSS/worker {row['peak_rss_mb_per_worker']:6.1f} MB  parent {row['peak_rss_mb_parent']:6.1f} MB  "
                    f"load {row['load_average_1min_before']:.2f}",
                    flush=True,
                )
    path = write_result("paste_workers", {"workers": 2, "mode": "alpha", "canvas": list(CANVAS), "rows": rows, "quick": args.quick})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
