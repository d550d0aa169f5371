"""``synthloop paste --backend ray``: the paste job's scenes as Ray tasks, on one machine or a cluster.

Scene ``i`` is a pure function of (config, seed, ``i``) (see :mod:`synthloop.jobs.paste`), so the
scenes left to do are cut into shards of consecutive indices and each shard is one Ray task
(``num_cpus=1``), a bounded number in flight. A task runs the local backend's own worker code
(:func:`synthloop.jobs.paste.run_indices`): it writes the shard's images atomically and appends one
flushed line per scene to its process's shard file in ``OUT/.work/``. The driver only counts
images for the progress callback; when every task is done it assembles ``annotations.json``,
``params.jsonl`` and YOLO/VOC with the local backend's :func:`~synthloop.jobs.paste.finalize`.
The output is therefore byte-identical to the local backend's for the same config and seed
(``run.json`` records ``backend: ray``, the address and the cluster's CPUs).

Resume: everything the local backend's ``--resume`` does holds here, since the run folder is the
same (:func:`~synthloop.jobs.paste.run_paste` drives both): scenes whose images and shard line are
complete are skipped, torn shard lines are ignored, the rest is cut into new shards. A task that
Ray retries after a lost worker or node renders its scenes again; duplicate lines are identical
and the first one wins.

A cluster: every node needs the same synthloop installed, and ``--out`` must be a folder that
every node sees at the same path (a shared file system): tasks write the images where they run.
A task on a node that does not see the run folder fails with an error saying so.

Ray is imported only when this backend is used (it is the optional extra ``synthloop[ray]``);
connecting, sharding and running tasks are :mod:`synthloop.jobs.ray_backend`'s, shared with
``synthloop render --backend ray`` (:mod:`synthloop.jobs.render_ray`).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synthloop.jobs.paste import CONFIG_FILE, PasteSummary, run_paste
from synthloop.jobs.paste_config import PasteConfig, resolved_dict
from synthloop.jobs.ray_backend import (  # noqa: F401 - SHARDS_PER_WORKER and cluster_cpus: this module's public names too
    SHARDS_PER_WORKER,
    check_visible,
    cluster_cpus,
    cluster_record,
    connect,
    disconnect,
    import_ray,
    once_per_run,
    run_tasks,
    shard_indices,
)

# ---------------------------------------------------------------------------------------------
# the task (runs in a Ray worker process)


def _drop_worker() -> None:
    """Ray reuses worker processes across runs (and jobs), while the local worker state in
    :mod:`synthloop.jobs.paste` lives for a process (its assets and its open shard file): a new
    run drops it."""
    from synthloop.jobs import paste

    worker = getattr(paste, "_WORKER", None)
    if worker is not None:
        worker.shard.close()
        paste._WORKER = None


def render_shard(run_id: str, cfg_data: dict[str, Any], out_dir: str, indices: list[int]) -> int:
    """Render scenes ``indices`` into ``out_dir`` (a Ray task body); returns the images written."""
    import cv2

    from synthloop.jobs.paste import run_indices

    check_visible(Path(out_dir) / CONFIG_FILE, out_dir)
    cv2.setNumThreads(1)  # one CPU per task (Ray sets OMP_NUM_THREADS=1 for torch already)
    once_per_run("paste", run_id, _drop_worker)
    return run_indices(cfg_data, out_dir, indices)


# ---------------------------------------------------------------------------------------------
# the driver


def run_shards(
    cfg: PasteConfig,
    out_dir: Path,
    todo: list[int],
    count: int,
    total: int,
    progress: Callable[[int, int], None] | None,
    *,
    max_in_flight: int | None = None,
    shards: list[list[int]] | None = None,
) -> int:
    """A :data:`~synthloop.jobs.paste.Runner`: the scenes ``todo`` as Ray tasks, one per shard, at
    most ``max_in_flight`` (default: twice the cluster's CPUs) submitted at a time; ``progress`` is
    called on the driver as shards finish. On an exception (also one raised by ``progress``, or
    Ctrl-C) the tasks in flight are cancelled; what they finished stays for ``--resume``."""
    ray = import_ray()
    shards = shards if shards is not None else shard_indices(todo, cluster_cpus(), cfg.chunk_size)
    run_id, cfg_ref, out = uuid.uuid4().hex, ray.put(resolved_dict(cfg)), str(Path(out_dir).resolve())
    args = [(run_id, cfg_ref, out, shard) for shard in shards]
    with contextlib.closing(run_tasks(render_shard, args, max_in_flight=max_in_flight)) as finished:
        for _, images in finished:
            count += int(images)
            if progress is not None:
                progress(count, total)
    return count


def run_paste_ray(
    cfg: PasteConfig,
    out_dir: str | Path,
    *,
    address: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    argv: list[str] | None = None,
    num_cpus: int | None = None,
    max_in_flight: int | None = None,
) -> PasteSummary:
    """Run (or resume) a paste job into ``out_dir`` on Ray; same output as
    :func:`~synthloop.jobs.paste.run_paste`. Connects as :func:`connect` does (``num_cpus`` for a
    new local instance) and disconnects at the end if it connected."""
    connected = connect(address, num_cpus=num_cpus)
    try:
        cpus, record = cluster_cpus(), cluster_record(address)

        def runner(cfg, out_dir, todo, count, total, progress):
            return run_shards(cfg, out_dir, todo, count, total, progress, max_in_flight=max_in_flight)

        return run_paste(
            cfg, Path(out_dir).resolve(), workers=cpus, resume=resume, overwrite=overwrite, progress=progress, argv=argv, runner=runner, record=record
        )
    finally:
        if connected:
            disconnect()


__all__ = ["connect", "disconnect", "import_ray", "render_shard", "run_paste_ray", "run_shards", "shard_indices"]
