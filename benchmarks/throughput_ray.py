"""Scaling of ``synthloop paste --backend ray`` on a multi-node Ray cluster simulated on one machine.

``measure_ray(quick)`` starts ``ray.cluster_utils.Cluster`` with one 1-CPU node, runs the paste
job (640x480, 3-6 MNIST cut-outs, alpha blend, JPEG + COCO), adds a second 1-CPU node and runs it
again; each timed run follows a short warm-up run (Ray starts its worker processes lazily), and
the rate is the images rendered over the time the shards took (the driver's set-up and the
annotation assembly are not in it). It also checks that the 2-node output is byte-identical to
the local backend's (every file but ``run.json``). Returns the ``ray`` section of
``benchmarks/results/throughput.json``::

    {"workers": [1, 2], "images_per_s": [r1, r2], "scaling_efficiency": r2 / (2 r1), "identical_to_local": bool}

Standalone: ``.venv/bin/python benchmarks/throughput_ray.py [--quick]`` prints a table and writes
``benchmarks/results/throughput_ray.json``. On a real cluster (``ray start --head`` on one
machine, ``ray start --address HEAD:6379`` on the others, ``--out`` on a shared file system) the
job itself is ``synthloop paste CONFIG --out DIR --backend ray --address HEAD:6379`` (or with
``RAY_ADDRESS`` set).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_result

CANVAS = (480, 640)


def job_overrides(n: int) -> list[str]:
    return [
        f"num_images={n}",
        f"scene.canvas=[{CANVAS[0]},{CANVAS[1]}]",
        "scene.objects=[3,6]",
        "scene.blend.modes=[alpha]",
        "backgrounds.sources=[builtin]",
        "backgrounds.pool=64",
        "formats=[coco]",
        "chunk_size=16",
    ]


def output_files(out: Path) -> dict[str, bytes]:
    """Every file of a run folder but ``run.json`` (which records the backend), by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != "run.json"}


def one_cpu_nodes(root: Path, warm: Callable[[Path], object], timed: Callable[[Path], float]) -> list[float]:
    """``[timed(root / "ray1"), timed(root / "ray2")]`` on a ``ray.cluster_utils.Cluster`` of one,
    then two 1-CPU nodes, this process connected as the driver; before each timed run, ``warm``
    runs once per node (Ray starts its worker processes lazily, and they load their assets once)."""
    import ray
    from ray.cluster_utils import Cluster

    rates: list[float] = []
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        for workers in (1, 2):
            if workers == 2:
                cluster.add_node(num_cpus=1)
                cluster.wait_for_nodes()
                deadline = time.monotonic() + 60
                while ray.cluster_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
                    time.sleep(0.5)
            for k in range(workers):  # start every node's worker process and decode its assets
                warm(root / f"warm{workers}_{k}")
            rates.append(timed(root / f"ray{workers}"))
        ray.shutdown()
    finally:
        cluster.shutdown()
    return rates


def scaling(rates: list[float]) -> dict:
    """The ``workers`` / ``images_per_s`` / ``scaling_efficiency`` part of a ``ray`` section."""
    return {
        "workers": [1, 2],
        "images_per_s": [round(r, 1) for r in rates],
        "scaling_efficiency": round(rates[1] / (2 * rates[0]), 3) if rates[0] > 0 else 0.0,
    }


def measure_ray(quick: bool = False) -> dict:
    """The ``ray`` section (see the module docstring); ``quick`` runs fewer images."""
    from synthloop.jobs.paste import run_paste
    from synthloop.jobs.paste_config import load_paste_config
    from synthloop.jobs.paste_ray import run_paste_ray

    n = 96 if quick else 600
    cfg = load_paste_config(None, job_overrides(n))
    warm = load_paste_config(None, job_overrides(8))
    with tempfile.TemporaryDirectory(prefix="throughput_ray_") as tmp:
        root = Path(tmp)
        rates = one_cpu_nodes(root, lambda out: run_paste_ray(warm, out), lambda out: run_paste_ray(cfg, out).images_per_s)
        run_paste(cfg, root / "local", workers=1)
        identical = output_files(root / "local") == output_files(root / "ray2")
    return {
        **scaling(rates),
        "identical_to_local": identical,
        "images": n,
        "job": job_overrides(n),
        "cluster": "ray.cluster_utils.Cluster on one machine, 1-CPU nodes",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer images (a smoke test)")
    args = ap.parse_args()
    res = measure_ray(args.quick)
    print(f"{'nodes (1 CPU each)':>20} {'images/s':>10}")
    for w, r in zip(res["workers"], res["images_per_s"]):
        print(f"{w:>20} {r:>10.1f}")
    print(f"scaling efficiency 1 -> 2 nodes: {res['scaling_efficiency']:.2f}; output identical to local: {res['identical_to_local']}")
    path = write_result("throughput_ray", {"ray": res, "quick": args.quick})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
