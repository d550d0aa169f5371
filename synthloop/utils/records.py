"""Small helpers for run records: UTC timestamps and the keys in which two configs differ."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (e.g. ``2026-11-23T08:30:00+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted paths (``"loop.cycles"``) at which two nested dicts differ, sorted; ``"<root>"`` when
    they are not both dicts and differ. Used to name what changed when a run is resumed."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix or "<root>"]


__all__ = ["diff_keys", "utc_now"]
