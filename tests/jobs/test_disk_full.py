"""Disk full / file too large, simulated with ``RLIMIT_FSIZE`` in a subprocess (``SIGXFSZ`` ignored,
so a write past the limit fails with ``EFBIG``): a clear error naming the path, no corrupt final
file, and ``--resume`` finishes the job byte-identically once the limit is lifted."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from synthloop.errors import StorageError
from synthloop.jobs.paste import run_paste
from synthloop.jobs.paste_config import load_paste_config
from synthloop.loops.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE semantics")

BASE = ["num_images=6", "scene.canvas=[48,64]", "scene.objects=[2,4]", "instances.limit=300", "backgrounds.sources=[gradient,checkers]", "chunk_size=2"]

PRELUDE = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
from synthloop.errors import StorageError
try:
{body}
except StorageError as e:
    print("STORAGE", e.path, e)
    sys.exit(3)
"""


def run_limited(limit: int, body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    code = PRELUDE.format(limit=limit, body=textwrap.indent(textwrap.dedent(body), "    "))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)


def files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != "run.json"}


def test_checkpoint_write_past_the_limit_keeps_the_old_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"w": torch.zeros(4)})
    old = path.read_bytes()
    body = f"""
    import torch
    from synthloop.loops.checkpoint import save_checkpoint
    save_checkpoint({str(path)!r}, {{"w": torch.zeros(100_000)}})
    """
    proc = run_limited(len(old) + 1000, body, tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert f"STORAGE {path}" in proc.stdout and "file-size limit" in proc.stdout
    assert path.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temp file left
    assert load_checkpoint(path)["w"].shape == (4,)


def test_storage_error_pickles():
    import pickle

    e = pickle.loads(pickle.dumps(StorageError("x: no room", "x", 27)))
    assert (str(e), e.path, e.errno) == ("x: no room", "x", 27)


@pytest.mark.parametrize("workers", [2])
def test_paste_stops_cleanly_and_resumes_identically(tmp_path, workers):
    ref = tmp_path / "ref"
    run_paste(load_paste_config(None, BASE), ref)
    out = tmp_path / "out"
    body = f"""
    from synthloop.jobs.paste import run_paste
    from synthloop.jobs.paste_config import load_paste_config
    run_paste(load_paste_config(None, {BASE!r}), {str(out)!r}, workers={workers})
    """
    shard_size = max(p.stat().st_size for p in [ref / "params.jsonl"]) // 3  # fails after a few scenes
    proc = run_limited(shard_size, body, tmp_path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "STORAGE" in proc.stdout and str(out) in proc.stdout and "Traceback" not in proc.stderr
    assert not (out / "annotations.json").exists()  # never a partial final file
    assert not [p for p in out.rglob("*.tmp")]
    run_paste(load_paste_config(None, BASE), out, resume=True, workers=workers)
    assert files(out) == files(ref)


def test_remove_stray_temps(tmp_path):
    from synthloop.utils.atomic import atomic_write_bytes, remove_stray_temps

    atomic_write_bytes(tmp_path / "a.bin", b"a")
    (tmp_path / "sub").mkdir()
    stray = [tmp_path / ".a.bin.abc.tmp", tmp_path / "sub" / ".b.json.def.tmp"]
    for p in stray:
        p.write_bytes(b"half")
    assert remove_stray_temps(tmp_path, recursive=False) == stray[:1]
    assert remove_stray_temps(tmp_path) == stray[1:]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.bin", "sub"]
