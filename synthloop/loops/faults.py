"""Non-finite losses and gradients: one check for every training step, and the run-folder record.

Every optimiser step in synthloop calls :func:`check_loss` before ``backward`` and
:func:`check_grads` after it (or :func:`finite_backward`, which does both and reports instead of
raising), so a NaN or infinity is caught in the step that produced it, before any parameter is
updated. :class:`NonFiniteError` names the loop, the step and the offending value; the loops that
own a run folder append its :attr:`~NonFiniteError.event` to ``events.json`` there
(:func:`record_event`) and stop, which leaves the last good checkpoint in place: ``--resume``
continues from it (after lowering the learning rate, say).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synthloop.errors import InputError
from synthloop.utils.atomic import atomic_write_json
from synthloop.utils.records import utc_now

EVENTS_FILE = "events.json"

Params = Iterable[torch.Tensor] | Iterable[tuple[str, torch.Tensor]] | nn.Module


class NonFiniteError(InputError):
    """A loss or gradient became NaN or infinite. ``event`` is the record for ``events.json``
    (``kind`` ``"non_finite_loss"`` or ``"non_finite_grad"``, ``what``, ``step``, ``loss``, ``params``)."""

    def __init__(self, message: str, event: dict[str, Any]):
        self.event = {**event, "message": message}
        super().__init__(message, field="lr")


def _named(params: Params) -> list[tuple[str, torch.Tensor]]:
    if isinstance(params, nn.Module):
        return list(params.named_parameters())
    out = []
    for i, p in enumerate(params):
        out.append(p if isinstance(p, tuple) else (f"param[{i}]", p))
    return out


def bad_grads(params: Params) -> list[str]:
    """Names of the parameters whose gradient holds a NaN or an infinity (one device sync)."""
    named = [(n, p.grad) for n, p in _named(params) if p.grad is not None]
    if not named:
        return []
    flags = torch.stack([torch.isfinite(g).all() for _, g in named]).cpu().tolist()
    return [n for (n, _), ok in zip(named, flags) if not ok]


def check_loss(loss: torch.Tensor, *, step: int, what: str) -> None:
    """Raise :class:`NonFiniteError` when the scalar ``loss`` is NaN or infinite."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteError(
            f"the {what} loss became {value} at step {step}; lower the learning rate",
            {"kind": "non_finite_loss", "what": what, "step": step, "loss": value, "params": []},
        )


def check_grads(params: Params, *, step: int, what: str, loss: torch.Tensor | float | None = None) -> None:
    """Raise :class:`NonFiniteError` when a gradient of ``params`` (a module, tensors or
    ``(name, tensor)`` pairs) holds a NaN or an infinity; call between ``backward`` and ``step``."""
    bad = bad_grads(params)
    if bad:
        value = float(loss) if loss is not None else None
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise NonFiniteError(
            f"the {what} gradient became non-finite at step {step} (loss {value}; in {shown}); lower the learning rate",
            {"kind": "non_finite_grad", "what": what, "step": step, "loss": value, "params": bad},
        )


def check_step(loss: torch.Tensor, params: Params, *, step: int, what: str) -> None:
    """:func:`check_loss`, ``loss.backward()``, :func:`check_grads`: the caller then steps its optimiser."""
    check_loss(loss, step=step, what=what)
    loss.backward()
    check_grads(params, step=step, what=what, loss=loss.detach())


def finite_backward(loss: torch.Tensor, params: Params) -> bool:
    """``loss.backward()`` when ``loss`` is finite; ``True`` if the loss and every gradient of
    ``params`` are finite. Otherwise the gradients are cleared and ``False`` says: skip this update."""
    if not bool(torch.isfinite(loss.detach())):
        return False
    loss.backward()
    named = _named(params)
    if bad_grads(named):
        for _, p in named:
            p.grad = None
        return False
    return True


def read_events(run_dir: str | Path) -> list[dict[str, Any]]:
    """The events recorded in ``run_dir/events.json`` (``[]`` when there are none)."""
    path = Path(run_dir) / EVENTS_FILE
    if not path.is_file():
        return []
    try:
        events = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the event log: {exc}", file=path) from None
    if not isinstance(events, list):
        raise InputError("the event log must be a JSON list", file=path)
    return events


def record_event(run_dir: str | Path, event: dict[str, Any], **extra: Any) -> Path:
    """Append ``event`` (plus ``extra`` fields and the time) to ``run_dir/events.json``, atomically."""
    path = Path(run_dir) / EVENTS_FILE
    events = read_events(run_dir)
    events.append({**event, **extra, "time": utc_now()})
    atomic_write_json(path, events)
    return path


__all__ = [
    "EVENTS_FILE",
    "NonFiniteError",
    "bad_grads",
    "check_grads",
    "check_loss",
    "check_step",
    "finite_backward",
    "read_events",
    "record_event",
]
