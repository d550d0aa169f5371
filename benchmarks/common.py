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


def machine_facts(device: str = "cpu") -> dict[str, Any]:
    """CPU, memory, OS and library versions the timings depend on, the load when measured, and the
    GPU when ``device`` is a CUDA device."""
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
    facts = {
        "device": device,
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
    if device.startswith("cuda") and torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return facts


class PeakRSS:
    """Samples the resident memory of this process and its descendants in a background thread.

    ``peak_mb(kind)``: the peak over time of the summed RSS of ``"self"`` (this process),
    ``"workers"`` (grandchildren: pool workers forked by a fork server) or ``"all"``. Summed RSS
    counts pages shared between processes (the torch libraries: ~0.5 GB per process) once per
    process, so it overstates the memory used; ``"self_uss"`` and ``"workers_uss"`` are the
    same sums of unique set sizes (memory that only that process holds), sampled less often
    because reading them is slower.
    """

    def __init__(self, interval_s: float = 0.05, uss_every: int = 20):
        import psutil

        self._proc = psutil.Process()
        self.interval_s = interval_s
        self.uss_every = uss_every
        self.peaks = {"self": 0.0, "workers": 0.0, "all": 0.0, "self_uss": 0.0, "workers_uss": 0.0}
        self._n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, uss: bool = False) -> None:
        import psutil

        me = self._proc.pid
        rss = self._proc.memory_info().rss
        total = {"self": rss, "workers": 0, "all": rss}
        if uss:
            total |= {"self_uss": self._proc.memory_full_info().uss, "workers_uss": 0}
        for child in self._proc.children(recursive=True):
            try:
                rss = child.memory_info().rss
                if child.ppid() != me:
                    total["workers"] += rss
                    if uss:
                        total["workers_uss"] += child.memory_full_info().uss
                total["all"] += rss
            except psutil.Error:  # exited between listing and reading
                continue
        for k, v in total.items():
            self.peaks[k] = max(self.peaks[k], v / 2**20)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample(uss=self._n % self.uss_every == 0)
            self._n += 1
            time.sleep(self.interval_s)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(uss=True)

    def peak_mb(self, kind: str = "all") -> float:
        return round(self.peaks[kind], 1)


def write_result(name: str, result: dict[str, Any], *, device: str = "cpu", results_dir: Path = RESULTS) -> Path:
    """Write ``result`` with commit and machine facts to ``<results_dir>/<name>.json`` atomically."""
    facts = machine_facts(device)
    doc = {"commit": git_commit(), "dirty": git_dirty(), "cpu_count": facts["cpu_count"], "machine": facts, **result}
    path = Path(results_dir) / f"{name}.json"
    atomic_write_json(path, doc)
    return path


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it, else absolute."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(Path(path).resolve())


class TeeLog:
    """``log(msg)``: prints ``[elapsed s] msg`` and appends it to ``path`` (flushed per line); ``start``
    is the ``time.perf_counter()`` the elapsed times count from. Call ``close()`` at the end."""

    def __init__(self, path: Path):
        self.start = time.perf_counter()
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def __call__(self, msg: str) -> None:
        line = f"[{time.perf_counter() - self.start:7.1f}s] {msg}"
        print(line, flush=True)
        self._fh.write(line + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()
