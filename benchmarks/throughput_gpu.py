"""Images per second of ``synthloop paste --device cuda`` (the torch compositor + GPU JPEG encoding).

``measure_gpu(quick)`` returns the ``gpu`` section of ``benchmarks/results/throughput.json``,
``{"device": name, "images_per_s": float, "commit": sha, ...}``, or ``None`` when no CUDA GPU is
present (then nothing is written: the section exists only when measured). The job is the one of
``benchmarks/throughput_ray.py`` (640x480, 3-6 cut-outs, alpha blend, JPEG + COCO); a short
warm-up run comes first (CUDA context, cuDNN autotuning), and the rate counts the images written
over the time the batches took (written = encoded, on disk, shard line appended).

Standalone: ``.venv/bin/python benchmarks/throughput_gpu.py [--quick] [--batch N]``; writes
``benchmarks/results/throughput_gpu.json`` when CUDA is present.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import git_commit, write_result
from throughput_ray import job_overrides


def measure_gpu(quick: bool = False, batch_size: int | None = None) -> dict | None:
    import torch

    if not torch.cuda.is_available():
        return None
    from synthloop.jobs.paste_config import load_paste_config
    from synthloop.jobs.paste_torch import DEFAULT_BATCH, run_paste_torch

    n = 512 if quick else 4096
    batch = batch_size or DEFAULT_BATCH["cuda"]
    with tempfile.TemporaryDirectory(prefix="throughput_gpu_") as tmp:
        run_paste_torch(load_paste_config(None, job_overrides(2 * batch)), Path(tmp) / "warm", device="cuda", batch_size=batch)
        summary = run_paste_torch(load_paste_config(None, job_overrides(n)), Path(tmp) / "run", device="cuda", batch_size=batch)
    return {
        "device": torch.cuda.get_device_name(0),
        "images_per_s": round(summary.images_per_s, 1),
        "commit": git_commit(),
        "images": n,
        "batch_size": batch,
        "job": job_overrides(n),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer images (a smoke test)")
    ap.add_argument("--batch", type=int, default=None, help="scenes per batch (default: synthloop.jobs.paste_torch.DEFAULT_BATCH)")
    args = ap.parse_args()
    res = measure_gpu(args.quick, args.batch)
    if res is None:
        print("no CUDA GPU: nothing measured, no gpu section written")
        return
    print(f"{res['device']}: {res['images_per_s']:,.0f} images/s written (batch {res['batch_size']}, {res['images']} images)")
    print(f"wrote {write_result('throughput_gpu', {'gpu': res, 'quick': args.quick}, device='cuda')}")


if __name__ == "__main__":
    main()
