"""Export a trained classifier so it loads without synthloop: ``torch.export`` ``.pt2`` (preferred)
or TorchScript, plus a JSON description of its input and output.

Load it with::

    import torch
    model = torch.export.load("target.pt2").module()   # or torch.jit.load("target.ts")
    logits = model(images)                             # images: float32 (N, 1, 40, 40) in [0, 1]
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synthloop.utils.atomic import atomic_open, atomic_write_json


def _input_spec(input_shape: tuple[int, ...], num_classes: int, description: str) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "images",
                "shape": ["N", *input_shape],
                "dtype": "float32",
                "range": [0.0, 1.0],
                "layout": "NCHW",
                "description": description,
            }
        ],
        "outputs": [{"name": "logits", "shape": ["N", num_classes], "dtype": "float32", "description": "unnormalised class scores; softmax gives probabilities"}],
        "classes": list(range(num_classes)),
    }


def export_classifier(
    model: nn.Module,
    path: str | Path,
    *,
    input_shape: tuple[int, ...] = (1, 40, 40),
    num_classes: int = 10,
    description: str = "white digit on a black background",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export ``model`` (``Tensor[N, *input_shape] -> logits Tensor[N, num_classes]``) in eval mode.

    Writes ``path`` (``.pt2`` via ``torch.export`` with a dynamic batch dimension; if export
    fails, TorchScript at ``path`` with suffix ``.ts``) and ``<path stem>.json`` with the format,
    the file name, the input/output spec and ``extra``, both atomically. The model is copied to
    the CPU first, so the export does not depend on the training device. Returns the JSON dict.
    """
    path = Path(path)
    net = copy.deepcopy(model).cpu().eval()
    example = torch.rand(2, *input_shape)
    spec = _input_spec(tuple(input_shape), num_classes, description)
    try:
        batch = torch.export.Dim("batch", min=1, max=1 << 20)
        program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
        with atomic_open(path, "wb") as fh:
            torch.export.save(program, fh)
        info = {"format": "torch.export", "file": path.name, "load": f"torch.export.load({path.name!r}).module()"}
    except Exception as exc:  # noqa: BLE001 - any export failure falls back to TorchScript
        path = path.with_suffix(".ts")
        scripted = torch.jit.trace(net, example)
        with atomic_open(path, "wb") as fh:
            torch.jit.save(scripted, fh)
        info = {"format": "torchscript", "file": path.name, "load": f"torch.jit.load({path.name!r})", "export_error": str(exc)}
    info.update(spec)
    info["torch_version"] = torch.__version__
    if extra:
        info.update(extra)
    atomic_write_json(path.with_suffix(".json"), info)
    return info


def load_exported(path: str | Path) -> nn.Module:
    """Load a model written by :func:`export_classifier` (``.pt2`` or ``.ts``) as a callable module."""
    path = Path(path)
    if path.suffix == ".json":
        path = path.with_name(json.loads(path.read_text())["file"])
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module()
    return torch.jit.load(str(path))
