"""``synthloop render --backend ray``: the render job's batches as Ray tasks, on one machine or a cluster.

Batch ``b`` is a pure function of (config, seed, ``b``) (see :func:`synthloop.jobs.render.write_dataset`),
and the local worker processes each render and write whole batches. Here each batch is one Ray
task (``num_cpus=1``), a bounded number in flight (:func:`synthloop.jobs.ray_backend.run_tasks`),
running the local worker's own code (:func:`synthloop.jobs.render._run_job`): it writes the
batch's PNG files into the run's staging folder and returns its ``params.jsonl`` lines and
annotation rows. The driver takes the results in batch order and assembles ``params.jsonl``,
``annotations.json``, ``config.yaml`` and ``run.json`` exactly as the local backend does, then
renames the staging folder onto ``--out``. The output is therefore byte-identical to the local
backend's for the same config and seed (``run.json`` records ``backend: ray``, the address, the
cluster's nodes and CPUs); ``output.workers`` is not used (the cluster's CPUs are the workers).

Resume: ``render`` has none on either backend. A run that fails or is stopped removes its staging
folder and leaves ``--out`` as it was; run it again. A task that Ray retries after a lost worker
or node renders its batch again, into the same files with the same bytes.

A cluster: every node needs the same synthloop installed, and ``--out`` must be a folder that
every node sees at the same path (a shared file system): the staging folder is ``--out``'s hidden
sibling and tasks write the images where they run. A task on a node that does not see it fails
with an :class:`~synthloop.errors.InputError` naming the folder.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from synthloop.jobs import render
from synthloop.jobs.ray_backend import check_visible, cluster_cpus, cluster_record, connect, disconnect, import_ray, once_per_run, run_tasks
from synthloop.jobs.render import BatchJob, BatchResult, RenderJobConfig, write_dataset


def render_batch(run_id: str, cfg_data: dict[str, Any], stage: str, job: BatchJob) -> BatchResult:
    """Render batch ``job = (b, start, m)`` into the staging folder ``stage`` (a Ray task body); the
    result is :class:`~synthloop.jobs.render._BatchWriter`'s, as from a local worker process."""
    import cv2

    check_visible(Path(stage) / "images", stage)
    cv2.setNumThreads(1)  # one CPU per task
    once_per_run("render", run_id, lambda: render._init_worker(cfg_data, stage))  # a reused process: a new renderer per run
    return render._run_job(job)


def ray_runner(*, max_in_flight: int | None = None) -> render.Runner:
    """A :data:`~synthloop.jobs.render.Runner` running each batch as a Ray task on the connected cluster."""

    def run(config: RenderJobConfig, stage: Path, jobs: list[BatchJob]) -> Iterator[BatchResult]:
        run_id, cfg_ref = uuid.uuid4().hex, import_ray().put(config.model_dump())
        args = [(run_id, cfg_ref, str(Path(stage).resolve()), job) for job in jobs]
        with contextlib.closing(run_tasks(render_batch, args, max_in_flight=max_in_flight, ordered=True)) as results:
            for _, result in results:
                yield result

    return run


def write_dataset_ray(
    config: RenderJobConfig,
    out_dir: str | Path,
    *,
    address: str | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    argv: Sequence[str] | None = None,
    num_cpus: int | None = None,
    max_in_flight: int | None = None,
) -> dict[str, Any]:
    """Render ``config.count`` images into ``out_dir`` on Ray; same output as
    :func:`~synthloop.jobs.render.write_dataset`. Connects as
    :func:`~synthloop.jobs.ray_backend.connect` does (``num_cpus`` for a new local instance) and
    disconnects at the end if it connected. Returns the ``run.json`` contents."""
    connected = connect(address, num_cpus=num_cpus)
    try:
        ray = import_ray()
        node_cpus = max((int(n.get("Resources", {}).get("CPU", 1)) for n in ray.nodes() if n.get("Alive")), default=1)
        record = cluster_record(address) | {"workers": cluster_cpus()}
        return write_dataset(
            config,
            Path(out_dir).resolve(),
            overwrite=overwrite,
            progress=progress,
            argv=argv,
            runner=ray_runner(max_in_flight=max_in_flight),
            record=record,
            in_flight=node_cpus,  # a node renders at most one batch per CPU at a time
        )
    finally:
        if connected:
            disconnect()


__all__ = ["ray_runner", "render_batch", "write_dataset_ray"]
