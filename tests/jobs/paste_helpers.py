"""Shared by the paste tests (local, Ray and torch backends): a tiny, fast job and its output files."""

from __future__ import annotations

from pathlib import Path

from synthloop.jobs.paste_config import PasteConfig, load_paste_config

# tiny, fast jobs: 48x64 canvases, cheap procedural backgrounds, a few hundred digits
TINY = [
    "scene.canvas=[48,64]",
    "scene.objects=[2,4]",
    "instances.limit=300",
    "backgrounds.sources=[gradient,checkers]",
    "chunk_size=2",
]


def tiny_config(num_images: int, *extra: str) -> PasteConfig:
    return load_paste_config(None, [f"num_images={num_images}", *TINY, *extra])


def output_files(out: Path) -> dict[str, bytes]:
    """Every output file except the run record (which holds timestamps and the backend)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != "run.json"}
