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

Ray is imported only here, and only when this backend is used: it is the optional extra
``synthloop[ray]``.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synthloop.errors import InputError, SynthloopError
from synthloop.jobs.paste import CONFIG_FILE, PasteSummary, run_paste
from synthloop.jobs.paste_config import PasteConfig, resolved_dict

SHARDS_PER_WORKER = 4
"""Shards per CPU of the cluster when the job is cut (smaller shards balance better at the end)."""


def import_ray():
    """The ``ray`` module, or an :class:`InputError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError("the ray backend needs Ray: pip install 'synthloop[ray]'", field="backend") from None
    return ray


def connect(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Connect to Ray unless this process already is: to ``address`` (``"auto"``, ``"HOST:PORT"``,
    ``"ray://HOST:10001"``), else to ``$RAY_ADDRESS``, else to a new local Ray instance (with
    ``num_cpus``). Returns whether this call connected (then :func:`disconnect` when done)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "configure_logging": False}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        kwargs["num_cpus"] = num_cpus
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as exc:
        raise InputError(f"cannot reach the Ray cluster at {address or os.environ.get('RAY_ADDRESS')}: {exc}", field="address") from None
    return True


def disconnect() -> None:
    import_ray().shutdown()


# ---------------------------------------------------------------------------------------------
# the task (runs in a Ray worker process)

_RUN_ID: str | None = None
"""The run this worker process last rendered for. Ray reuses worker processes across runs (and
jobs), while the local worker state in :mod:`synthloop.jobs.paste` lives for a process (its
assets and its open shard file): a new run drops it."""


def _new_run(run_id: str) -> None:
    global _RUN_ID
    if _RUN_ID == run_id:
        return
    from synthloop.jobs import paste

    worker = getattr(paste, "_WORKER", None)
    if worker is not None:
        worker.shard.close()
        paste._WORKER = None
    _RUN_ID = run_id


def render_shard(run_id: str, cfg_data: dict[str, Any], out_dir: str, indices: list[int]) -> int:
    """Render scenes ``indices`` into ``out_dir`` (a Ray task body); returns the images written."""
    import cv2

    from synthloop.jobs.paste import run_indices

    if not (Path(out_dir) / CONFIG_FILE).is_file():
        raise InputError(f"the run folder is not visible on node {socket.gethostname()}: --out must be on a file system every Ray node shares", file=out_dir)
    cv2.setNumThreads(1)  # one CPU per task (Ray sets OMP_NUM_THREADS=1 for torch already)
    _new_run(run_id)
    return run_indices(cfg_data, out_dir, indices)


# ---------------------------------------------------------------------------------------------
# the driver


def cluster_cpus() -> int:
    """CPUs of the connected Ray cluster (at least 1)."""
    return max(1, int(import_ray().cluster_resources().get("CPU", 1)))


def shard_indices(todo: list[int], workers: int, chunk_size: int) -> list[list[int]]:
    """``todo`` cut into shards of consecutive indices: at most ``chunk_size`` scenes, about
    :data:`SHARDS_PER_WORKER` shards per worker (as the local pool cuts its chunks)."""
    size = max(1, min(chunk_size, len(todo) // (workers * SHARDS_PER_WORKER) or 1))
    return [todo[k : k + size] for k in range(0, len(todo), size)]


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
    cpus = cluster_cpus()
    limit = max_in_flight or 2 * cpus
    queue = list(reversed(shards if shards is not None else shard_indices(todo, cpus, cfg.chunk_size)))
    task = ray.remote(num_cpus=1)(render_shard)
    run_id, cfg_ref, out = uuid.uuid4().hex, ray.put(resolved_dict(cfg)), str(Path(out_dir).resolve())
    pending: list[Any] = []
    try:
        while queue or pending:
            while queue and len(pending) < limit:
                pending.append(task.remote(run_id, cfg_ref, out, queue.pop()))
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                count += _result(ray, ref)
            if progress is not None:
                progress(count, total)
    except BaseException:
        for ref in pending:
            ray.cancel(ref)
        ray.wait(pending, num_returns=len(pending), timeout=30)  # let them stop before a resume starts
        raise
    return count


def _result(ray, ref) -> int:
    """A task's result; synthloop's own errors raised in the task (bad input, a full disk) are
    raised as themselves, so the command line reports them as it does for the local backend."""
    try:
        return int(ray.get(ref))
    except ray.exceptions.RayTaskError as exc:
        cause = exc.as_instanceof_cause()
        if isinstance(cause, SynthloopError):
            raise cause from None
        raise


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
        ray = import_ray()
        cpus = cluster_cpus()
        record = {
            "backend": "ray",
            "ray_address": address or os.environ.get("RAY_ADDRESS") or "local",
            "ray_nodes": sum(1 for n in ray.nodes() if n.get("Alive")),
        }

        def runner(cfg, out_dir, todo, count, total, progress):
            return run_shards(cfg, out_dir, todo, count, total, progress, max_in_flight=max_in_flight)

        return run_paste(
            cfg, Path(out_dir).resolve(), workers=cpus, resume=resume, overwrite=overwrite, progress=progress, argv=argv, runner=runner, record=record
        )
    finally:
        if connected:
            disconnect()


__all__ = ["connect", "disconnect", "import_ray", "render_shard", "run_paste_ray", "run_shards", "shard_indices"]
