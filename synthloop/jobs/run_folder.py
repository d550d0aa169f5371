"""The run folder every job writes: checks before anything is written, the resolved config, and
``run.json`` (version, commit, seed, command, start / resume / finish times).

One helper for every command, so ``--resume`` and ``--overwrite`` mean the same everywhere:

- :func:`prepare` checks the folder (and, when resuming, that the stored config is the same) and
  returns the previous ``run.json`` (``{}`` when there is none) or ``None`` for a fresh run;
- :func:`start_record` writes ``run.json`` with ``finished: null``; :func:`finish_record` stamps it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from synthloop.errors import InputError
from synthloop.utils.atomic import atomic_write_json
from synthloop.utils.records import check_same_config, utc_now

RUN_FILE = "run.json"


def git_commit() -> str | None:
    """The commit of the synthloop source tree when it runs from a git checkout of it, else ``None``
    (an installed copy)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def read_record(out_dir: str | Path) -> dict[str, Any]:
    """The ``run.json`` of ``out_dir`` (``{}`` when there is none)."""
    return _read_json(Path(out_dir) / RUN_FILE)


def _read_json(path: Path) -> dict[str, Any]:
    import json

    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"unreadable run record ({e})", file=path) from None


def prepare(
    out_dir: str | Path,
    *,
    resume: bool,
    config_file: str,
    config: Mapping[str, Any],
    ignore: tuple[str, ...] = (),
    overwrite: bool = False,
    outputs: Sequence[str] | None = None,
    resume_empty: bool = False,
) -> dict[str, Any] | None:
    """Check ``out_dir`` before a job writes anything to it.

    Args:
        resume: continue the run in a non-empty folder; its ``config_file`` must hold ``config``
            (up to the dotted keys in ``ignore``).
        overwrite: remove ``outputs`` (names inside ``out_dir``) of a previous run first; only
            for jobs that list their ``outputs``.
        resume_empty: whether ``resume`` into an empty or missing folder starts a fresh run
            (otherwise it is an error: nothing to resume).

    Returns:
        ``None`` for a fresh run, else the previous ``run.json`` (``{}`` when it is missing).

    Raises:
        InputError: the path is a file; a non-empty folder without ``resume``/``overwrite``;
            nothing to resume; a different config.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("the output path exists and is not a folder", file=out)
    busy = out.is_dir() and any(out.iterdir())
    if resume and (busy or not resume_empty):
        stored_file = out / config_file
        if not stored_file.is_file():
            raise InputError(f"nothing to resume: no {config_file} in this folder", file=out)
        stored = yaml.safe_load(stored_file.read_text())
        check_same_config(stored, dict(config), ignore=ignore, file=stored_file)
        return read_record(out)
    if busy and not overwrite:
        hint = "or --overwrite to replace it" if outputs is not None else "or choose another folder"
        raise InputError(f"the output folder is not empty; pass --resume to continue the run in it, {hint}", file=out)
    if busy and outputs is not None:
        for name in outputs:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    return None


def start_record(out_dir: str | Path, *, seed: int, previous: Mapping[str, Any] | None, argv: Sequence[str] | None = None, **extra: Any) -> dict[str, Any]:
    """Write ``out_dir/run.json`` for a run that starts (or resumes, when ``previous`` is not
    ``None``) now, with ``finished: null``; returns the record for :func:`finish_record`."""
    now = utc_now()
    record = run_record(seed=seed, argv=argv, **extra)
    record.update(started=(previous or {}).get("started") or now, resumed=[*(previous or {}).get("resumed", []), now] if previous is not None else [], finished=None)
    atomic_write_json(Path(out_dir) / RUN_FILE, record)
    return record


def run_record(*, seed: int, argv: Sequence[str] | None = None, **extra: Any) -> dict[str, Any]:
    """What every ``run.json`` holds: seed, synthloop and torch versions, git commit, command line, ``extra``."""
    import torch

    from synthloop import __version__

    return {
        "seed": seed,
        "synthloop_version": __version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "command": list(argv) if argv is not None else list(sys.argv),
        **extra,
    }


def finish_record(out_dir: str | Path, record: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Stamp ``record`` as finished now (adding ``extra``) and rewrite ``run.json``."""
    record.update(finished=utc_now(), **extra)
    atomic_write_json(Path(out_dir) / RUN_FILE, record)
    return record


__all__ = ["RUN_FILE", "finish_record", "git_commit", "prepare", "read_record", "run_record", "start_record"]
