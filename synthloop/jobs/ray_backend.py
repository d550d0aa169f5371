"""What every ``--backend ray`` job shares: connecting to Ray, cutting the work, running tasks.

:func:`connect` / :func:`disconnect` join a cluster (or start a local instance),
:func:`cluster_cpus` and :func:`cluster_record` describe it, :func:`shard_indices` cuts a job's
indices into shards and :func:`run_tasks` runs one Ray task (``num_cpus=1``) per argument tuple, a
bounded number in flight, yielding results on the driver and cancelling what is in flight when the
driver stops. In a task, :func:`once_per_run` sets up a reused worker process for another run and
:func:`check_visible` fails clearly on a node that does not see the run's folder.

Ray is imported only here, and only when a Ray backend is used: it is the optional extra
``synthloop[ray]``. The jobs: :mod:`synthloop.jobs.paste_ray`, :mod:`synthloop.jobs.render_ray`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from synthloop.errors import InputError, SynthloopError

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


def cluster_cpus() -> int:
    """CPUs of the connected Ray cluster (at least 1)."""
    return max(1, int(import_ray().cluster_resources().get("CPU", 1)))


def cluster_record(address: str | None) -> dict[str, Any]:
    """What ``run.json`` records about the connected cluster: ``backend``, ``ray_address``, ``ray_nodes``."""
    nodes = sum(1 for n in import_ray().nodes() if n.get("Alive"))
    return {"backend": "ray", "ray_address": address or os.environ.get("RAY_ADDRESS") or "local", "ray_nodes": nodes}


def shard_indices(todo: list[int], workers: int, chunk_size: int) -> list[list[int]]:
    """``todo`` cut into shards of consecutive indices: at most ``chunk_size`` items, about
    :data:`SHARDS_PER_WORKER` shards per worker (as the local pool cuts its chunks)."""
    size = max(1, min(chunk_size, len(todo) // (workers * SHARDS_PER_WORKER) or 1))
    return [todo[k : k + size] for k in range(0, len(todo), size)]


# ---------------------------------------------------------------------------------------------
# in a task (a Ray worker process)

_RUNS: dict[str, str] = {}


def once_per_run(kind: str, run_id: str, setup: Callable[[], object]) -> None:
    """Call ``setup()`` when this worker process first works for run ``run_id`` of job ``kind``:
    Ray reuses worker processes across runs and jobs, so a task drops (or rebuilds) the state its
    process kept for the previous run. A ``setup`` that raises is tried again by the next task."""
    if _RUNS.get(kind) != run_id:
        _RUNS.pop(kind, None)
        setup()
        _RUNS[kind] = run_id


def check_visible(path: str | Path, folder: str | Path) -> None:
    """An :class:`InputError` naming ``folder`` unless ``path`` (a file or folder the driver made
    in it) exists on this node: ``--out`` must be on a file system every Ray node shares."""
    if not Path(path).exists():
        raise InputError(
            f"the run folder {folder} is not visible on node {socket.gethostname()}: --out must be on a file system every Ray node shares", file=str(folder)
        )


# ---------------------------------------------------------------------------------------------
# on the driver


def run_tasks(fn: Callable[..., Any], args: Sequence[tuple], *, max_in_flight: int | None = None, ordered: bool = False) -> Iterator[tuple[int, Any]]:
    """Run ``fn(*args[k])`` for every ``k`` as a Ray task (``num_cpus=1``) and yield ``(k, result)``
    as tasks finish (``ordered``: in the order of ``args``). At most ``max_in_flight`` (default:
    twice the cluster's CPUs) tasks are submitted, or finished and waiting for their turn, at a
    time. Large arguments shared by all tasks should be ``ray.put`` references.

    When the driver stops (an exception here or in the consumer, Ctrl-C, or ``close()`` of this
    generator: consume it in ``contextlib.closing``), the tasks in flight are cancelled and given up
    to 30 s to stop. synthloop's own errors raised in a task are raised as themselves."""
    ray = import_ray()
    limit = max(1, max_in_flight or 2 * cluster_cpus())
    task = ray.remote(num_cpus=1)(fn)
    refs: dict[Any, int] = {}
    done: dict[int, Any] = {}
    submitted = following = 0
    try:
        while submitted < len(args) or refs or done:
            while submitted < len(args) and len(refs) + len(done) < limit:
                refs[task.remote(*args[submitted])] = submitted
                submitted += 1
            if ordered and following in done:
                yield following, done.pop(following)
                following += 1
                continue
            ready, _ = ray.wait(list(refs), num_returns=1)
            k = refs.pop(ready[0])
            if not ordered:
                yield k, _result(ray, ready[0])
            else:
                done[k] = _result(ray, ready[0])
    except BaseException:
        pending = list(refs)
        for ref in pending:
            ray.cancel(ref)
        if pending:
            ray.wait(pending, num_returns=len(pending), timeout=30)  # let them stop before a resume starts
        raise


def _result(ray, ref) -> Any:
    """A task's result; synthloop's own errors raised in the task (bad input, a full disk) are
    raised as themselves, so the command line reports them as it does for the local backend."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.as_instanceof_cause()
        if isinstance(cause, SynthloopError):
            raise cause from None
        raise


__all__ = [
    "SHARDS_PER_WORKER",
    "check_visible",
    "cluster_cpus",
    "cluster_record",
    "connect",
    "disconnect",
    "import_ray",
    "once_per_run",
    "run_tasks",
    "shard_indices",
]
