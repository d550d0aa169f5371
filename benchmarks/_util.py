"""Helpers of the AffNIST benchmarks: the commit and machine facts recorded with every result,
and an atomic JSON write into ``benchmarks/results/``."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from synthloop.utils.atomic import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def git_commit() -> str | None:
    """``HEAD`` of the checkout the benchmark runs from (``None`` outside a git checkout)."""
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = res.stdout.strip() if res.returncode == 0 else ""
    return commit or None


def git_dirty() -> bool | None:
    """Whether tracked files differ from ``HEAD``."""
    try:
        res = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(res.stdout.strip()) if res.returncode == 0 else None


def machine(device: str = "cpu") -> dict[str, Any]:
    """CPU, GPU, OS and library facts that the timings depend on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts: dict[str, Any] = {
        "device": device,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return facts


def write_result(name: str, result: dict[str, Any], *, device: str = "cpu", results_dir: Path = RESULTS) -> Path:
    """Write ``result`` with commit and machine facts to ``<results_dir>/<name>.json`` atomically."""
    path = Path(results_dir) / f"{name}.json"
    atomic_write_json(path, {"commit": git_commit(), "dirty": git_dirty(), "machine": machine(device), **result})
    return path


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it, else absolute."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(Path(path).resolve())
