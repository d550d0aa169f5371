"""The run folder every job writes: checks before anything is written, the resolved config, and
``run.json`` (version, commit, seed, command, start / resume / finish times).

One helper for every command, so ``--resume`` and ``--overwrite`` mean the same everywhere:

- :func:`prepare` checks the folder (and, when resuming, that the stored config is the same) and
  returns the previous ``run.json`` (``{}`` when there is none) or ``None`` for a fresh run;
- :func:`start_record` writes ``run.json`` with ``finished: null``; :func:`finish_record` stamps it;
- :func:`lock` holds ``.synthloop.lock`` in the folder while a job writes it, so a second run into
  the same folder fails with the holder's PID instead of interleaving its files; the lock of a
  killed run (its PID gone, or reused by a process that started at another time) is taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from synthloop.errors import InputError
from synthloop.utils.atomic import atomic_write_json
from synthloop.utils.records import check_same_config, utc_now
from synthloop.utils.threads import usable_cpus

RUN_FILE = "run.json"
LOCK_FILE = ".synthloop.lock"


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
    busy = out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir())
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
            if name == LOCK_FILE:
                continue  # a live run's lock is never an output
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
        "torch_threads": torch.get_num_threads(),
        "cpus_usable": usable_cpus(),
        **extra,
    }


def process_start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot on Linux, else psutil's time), ``None``
    when unknown; with the PID it names one process even after the PID is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.Process(pid).create_time() * 1000)
    except Exception:  # noqa: BLE001 - no psutil, no such process, no access
        return None


def _exists(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:  # ProcessLookupError and the rest
        return False
    return True


def _alive(holder: Mapping[str, Any]) -> bool:
    """Whether the process recorded in a lock still runs (a lock from another host counts as live)."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if holder.get("host") != socket.gethostname():
        return True  # cannot look at another machine's processes
    if not _exists(pid):
        return False
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rindex(")") + 2 :].split()[0] in ("Z", "X"):
            return False  # killed, not yet reaped
    started = holder.get("process_start")
    return started is None or process_start_time(pid) in (None, started)


def lock_holder(out_dir: str | Path) -> dict[str, Any] | None:
    """The record of the live run that holds ``out_dir`` (``None`` when none does)."""
    try:
        holder = json.loads((Path(out_dir) / LOCK_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and _alive(holder) else None


@contextlib.contextmanager
def lock(out_dir: str | Path) -> Iterator[dict[str, Any]]:
    """Hold ``out_dir`` (created if missing) for this process while the block runs.

    Writes ``out_dir/.synthloop.lock`` (pid, host, process start time, when) atomically, and
    removes it on exit, also on an exception; a folder the lock created and left empty is
    removed too. The lock of a run that no longer lives is taken over.

    Raises:
        InputError: a live run (this process included) holds ``out_dir``: names the folder and
            the holder's PID.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("the output path exists and is not a folder", file=out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    pid = os.getpid()
    me = {"pid": pid, "host": socket.gethostname(), "process_start": process_start_time(pid), "acquired": utc_now(), "token": uuid.uuid4().hex}
    data = (json.dumps(me) + "\n").encode()
    _acquire(out, path, data)
    try:
        yield me
    finally:
        with contextlib.suppress(OSError):
            if path.read_bytes() == data:
                path.unlink()
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty


def _acquire(out: Path, path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data`` unless a live run holds it; a stale lock is moved aside
    and removed (checking that what was moved is the stale lock, not a newer one)."""
    tmp = out / f"{LOCK_FILE}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_bytes(data)
    try:
        for _ in range(20):
            try:
                _create(path, tmp, data)
                return
            except FileExistsError:
                pass
            try:
                seen = path.read_bytes()
            except FileNotFoundError:
                continue
            try:
                holder = json.loads(seen)
            except ValueError:
                holder = {}
            if isinstance(holder, dict) and _alive(holder):
                host = f" on {holder.get('host')}" if holder.get("host") != socket.gethostname() else ""
                raise InputError(
                    f"another run (PID {holder.get('pid')}{host}, since {holder.get('acquired')}) is writing to this folder; "
                    f"wait for it to finish, or remove {LOCK_FILE} if that run is gone",
                    file=out,
                )
            aside = out / f"{LOCK_FILE}.stale.{uuid.uuid4().hex[:8]}"
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                continue
            if aside.read_bytes() != seen:  # another run took the stale lock over first: give it back
                with contextlib.suppress(FileExistsError):
                    os.link(aside, path)
            aside.unlink()
        raise InputError("could not take the run folder's lock (other runs keep taking it)", file=out)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _create(path: Path, tmp: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` in one step (a hard link of ``tmp``); raises FileExistsError."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: exclusive create, then write
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)


def finish_record(out_dir: str | Path, record: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Stamp ``record`` as finished now (adding ``extra``) and rewrite ``run.json``."""
    record.update(finished=utc_now(), **extra)
    atomic_write_json(Path(out_dir) / RUN_FILE, record)
    return record


__all__ = ["LOCK_FILE", "RUN_FILE", "finish_record", "git_commit", "lock", "lock_holder", "prepare", "read_record", "run_record", "start_record"]
