"""Small helpers for run records: UTC timestamps, the keys in which two configs differ, and the
one resume check every job and loop uses (:func:`check_same_config`)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from synthloop.errors import InputError


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


def _at(d: Any, path: str) -> Any:
    for k in path.split(".") if path != "<root>" else []:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_same_config(stored: Any, current: Any, *, ignore: tuple[str, ...] = (), file: str | Path | None = None) -> None:
    """Refuse to resume a run whose stored config differs from ``current`` (nested dicts).

    Keys in ``ignore`` (dotted, e.g. ``"loop.cycles"``: more cycles extend a run), and everything
    below them, may differ.

    Raises:
        InputError: naming ``file``, the first differing key as the field, and every change.
    """
    diff = [k for k in diff_keys(stored, current) if not any(k == i or k.startswith(i + ".") for i in ignore)]
    if diff:
        detail = ", ".join(f"{k}: {_short(_at(stored, k))} -> {_short(_at(current, k))}" for k in diff)
        allowed = f" (only {', '.join(ignore)} may change)" if ignore else ""
        raise InputError(f"the run was started with a different configuration (changed: {detail}); resume with the same settings{allowed}", file=file, field=diff[0])


__all__ = ["check_same_config", "diff_keys", "utc_now"]
