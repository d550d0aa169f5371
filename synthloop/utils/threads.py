"""How many torch threads a process should use on a shared machine.

torch's default is one intra-op thread per core, whatever else runs: on a loaded 2-core box that
over-subscribes the CPUs (one detector step took 4.4 s with 2 threads against 0.45 s with 1 while
the load average was 4-6). The default here is derived from the CPUs this process may use
(``os.sched_getaffinity``) minus those the 1-minute load average says are busy, divided among
worker processes (at least 1). The choice is made once, at start.

Every training / generation command takes ``--threads N``, and the job configs it reads a
``threads: N`` key (``null`` = the default); the command line wins over the config.
"""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; all CPUs where that is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_threads(workers: int = 1) -> tuple[int, str]:
    """``(threads per process, why)`` for ``workers`` processes sharing the CPUs other work leaves free.

    Other work is the 1-minute load average rounded (0.4 counts as none, 1.3 as one busy CPU). Measured
    on a 2-core box (``examples/terse_detection/digits.yaml``): 2:40 quiet with 2 threads, but 14:34 with
    2 threads at load 1.6-4 and 63 min at load 8-17, so a single busy CPU is reason enough to take fewer.
    """
    cpus = usable_cpus()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    free = max(1, cpus - round(load))
    per = max(1, free // max(1, workers))
    if free < cpus:
        return per, f"machine busy (load {load:.1f} on {cpus} usable CPUs: {free} free / {max(1, workers)} process(es))"
    return per, f"{cpus} usable CPU(s) / {max(1, workers)} process(es)"


def use_threads(threads: int | None = None, workers: int = 1, configured: int | None = None) -> tuple[int, str]:
    """Set torch's intra-op threads and return ``(n, why)``: ``threads`` (``--threads``) when
    given, else ``configured`` (the job config's ``threads`` key), else :func:`default_threads`."""
    import torch

    for value, why in ((threads, "--threads"), (configured, "config threads")):
        if value is not None:
            if value < 1:
                raise ValueError(f"threads must be >= 1, got {value}")
            n = int(value)
            break
    else:
        n, why = default_threads(workers)
    torch.set_num_threads(n)
    return n, why


__all__ = ["default_threads", "usable_cpus", "use_threads"]
