"""Compare two run folders of the same config: what a resumed (or re-run) job must reproduce.

Used by the kill -9 benchmark (``benchmarks/reliability.py``) and handy for checking any resume:
``differences(reference, resumed)`` lists the files that differ in content (timings, timestamps and
run records left out; JSON / checkpoints / ``.npz`` compared by value), ``leftovers`` the temporary
files a finished run must not leave, ``duplicate_ids`` repeated image / annotation / params ids.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

VOLATILE = re.compile(r"(seconds|time|_at$|^started|^finished|^resumed|^acquired|^argv|^pid|duration|elapsed|wall|^written|^host)", re.IGNORECASE)
SKIP_FILES = {"run.json", ".synthloop.lock", "report.html"}  # run records (timestamps), the lock, the HTML report (timings)


def _normal(x: Any) -> Any:
    """``x`` with volatile keys (timings, timestamps) dropped; JSON strings parsed; tensors as lists."""
    if isinstance(x, dict):
        return {k: _normal(v) for k, v in x.items() if not (isinstance(k, str) and VOLATILE.search(k))}
    if isinstance(x, (list, tuple)):
        return [_normal(v) for v in x]
    if isinstance(x, torch.Tensor):
        return ("tensor", str(x.dtype), tuple(x.shape), x.detach().cpu().flatten().tolist())
    if isinstance(x, str) and x[:1] in "[{":
        try:
            return _normal(json.loads(x))
        except ValueError:
            return x
    return x


def _content(path: Path) -> Any:
    suffix = path.suffix
    if suffix == ".json":
        return _normal(json.loads(path.read_text()))
    if suffix == ".pt":
        return _normal(torch.load(path, map_location="cpu", weights_only=True))
    if suffix == ".npz":
        with np.load(path) as z:
            return {k: z[k].tolist() for k in sorted(z.files)}
    if suffix in (".yaml", ".yml"):
        return [line for line in path.read_text().splitlines() if not line.startswith("#")]  # headers carry a timestamp
    return path.read_bytes()


def snapshot(out: Path) -> dict[str, Any]:
    return {p.relative_to(out).as_posix(): p for p in sorted(out.rglob("*")) if p.is_file() and p.name not in SKIP_FILES}


def differences(ref: Path, out: Path) -> list[str]:
    a, b = snapshot(ref), snapshot(out)
    diff = sorted(set(a) ^ set(b))
    for name in sorted(set(a) & set(b)):
        pa, pb = a[name], b[name]
        if pa.read_bytes() == pb.read_bytes():
            continue
        if pa.suffix == ".pt2":  # torch.export archives embed nondeterministic names; compare the weights
            continue
        try:
            same = _content(pa) == _content(pb)
        except Exception:  # noqa: BLE001 - unreadable: counts as different
            same = False
        if not same:
            diff.append(name)
    return diff


def leftovers(out: Path) -> list[str]:
    """Temporary files a finished run must not leave: ``.*.tmp``, ``.work/``, the run lock, staging siblings."""
    found = [p for p in out.rglob("*") if re.fullmatch(r"\..*\.tmp", p.name) or p.name in (".work", ".synthloop.lock")]
    found += [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    return sorted(str(p) for p in found)


def duplicate_ids(out: Path) -> int:
    dups = 0
    for ann in out.rglob("annotations.json"):
        doc = json.loads(ann.read_text())
        if isinstance(doc, dict):
            for key in ("images", "annotations"):
                ids = [e["id"] for e in doc.get(key, [])]
                dups += len(ids) - len(set(ids))
    for params in out.rglob("params.jsonl"):
        ids = [json.loads(line).get("id") for line in params.read_text().splitlines() if line.strip()]
        dups += len(ids) - len(set(ids))
    return dups


__all__ = ["differences", "duplicate_ids", "leftovers", "snapshot"]
