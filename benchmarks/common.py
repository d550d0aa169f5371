"""Helpers shared by the benchmarks: the commit and machine facts recorded with every result,
peak memory of a process tree, and an atomic JSON write into ``benchmarks/results/``."""

from __future__ import annotations

import os
import platform
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from synthloop.utils.atomic import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _git(*args: str) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


def git_commit() -> str | None:
    """``HEAD`` of the checkout the benchmark runs from (``None`` outside a git checkout)."""
    out = _git("rev-parse", "HEAD")
    return (out.strip() or None) if out else None


def git_dirty() -> bool | None:
    """Whether tracked files differ from ``HEAD`` (the figures then describe uncommitted code)."""
    out = _git("status", "--porcelain", "--untracked-files=no")
    return None if out is None else bool(out.strip())


def machine_facts() -> dict[str, Any]:
    """CPU, memory, OS and library versions the timings depend on, and the load when measured."""
    import cv2
    import numpy as np
    import PIL
    import psutil
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
    }


class PeakRSS:
    """Samples the resident memory of this process and its descendants in a background thread.

    ``peak_mb(kind)``: the peak over time of the summed RSS of ``"self"`` (this process),
    ``"workers"`` (grandchildren: pool workers forked by a fork server) or ``"all"``. Summed RSS
    counts pages shared between processes once per process, so it overstates the memory used.
    """

    def __init__(self, interval_s: float = 0.05):
        import psutil

        self._proc = psutil.Process()
        self.interval_s = interval_s
        self.peaks = {"self": 0.0, "workers": 0.0, "all": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = self._proc.pid
        total = {"self": self._proc.memory_info().rss, "workers": 0, "all": self._proc.memory_info().rss}
        for child in self._proc.children(recursive=True):
            try:
                rss = child.memory_info().rss
                if child.ppid() != me:
                    total["workers"] += rss
                total["all"] += rss
            except psutil.Error:  # exited between listing and reading
                continue
        for k, v in total.items():
            self.peaks[k] = max(self.peaks[k], v / 2**20)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval_s)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def peak_mb(self, kind: str = "all") -> float:
        return round(self.peaks[kind], 1)


def write_result(name: str, result: dict[str, Any], *, results_dir: Path = RESULTS) -> Path:
    """Write ``result`` with commit and machine facts to ``<results_dir>/<name>.json`` atomically."""
    facts = machine_facts()
    doc = {"commit": git_commit(), "dirty": git_dirty(), "cpu_count": facts["cpu_count"], "machine": facts, **result}
    path = Path(results_dir) / f"{name}.json"
    atomic_write_json(path, doc)
    return path
