"""Divergence detection for the refiners: non-finite losses and mode collapse.

:class:`DivergenceMonitor` watches for non-finite losses and mode collapse (the refined batch's
per-pixel standard deviation across samples falling below a threshold) and raises
:class:`DivergenceError` or records a :class:`DivergenceEvent`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from pydantic import Field

from synthloop.config import Config
from synthloop.errors import SynthloopError
from synthloop.loops.faults import bad_grads


class DivergenceConfig(Config):
    """What counts as divergence and what happens then.

    ``action="raise"`` stops with :class:`DivergenceError`; ``"record"`` keeps a
    :class:`DivergenceEvent` and carries on (a step with a non-finite loss makes no update).
    Mode collapse: the refined batch's per-pixel std across samples, averaged over pixels, below
    ``min_batch_std`` for ``patience`` consecutive steps.
    """

    action: Literal["raise", "record"] = "raise"
    min_batch_std: float = Field(1e-3, ge=0)
    patience: int = Field(1, ge=1)


@dataclass
class DivergenceEvent:
    """A detected divergence: ``kind`` is ``"non_finite_loss"``, ``"non_finite_grad"`` or ``"mode_collapse"``."""

    step: int
    kind: str
    message: str
    value: float | None = None
    source: str = ""
    losses: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DivergenceError(SynthloopError):
    """Training diverged; ``event`` says how."""

    def __init__(self, event: DivergenceEvent):
        self.event = event
        super().__init__(event.message)


class DivergenceMonitor:
    """Checks losses and refined outputs each step; raises or records per :class:`DivergenceConfig`."""

    def __init__(self, cfg: DivergenceConfig | None = None, source: str = ""):
        self.cfg = cfg or DivergenceConfig()
        self.source = source
        self.events: list[DivergenceEvent] = []
        self._low_steps = 0

    def _fire(self, event: DivergenceEvent) -> None:
        self.events.append(event)
        if self.cfg.action == "raise":
            raise DivergenceError(event)

    def check_losses(self, step: int, losses: Mapping[str, torch.Tensor]) -> bool:
        """``True`` if every loss is finite; otherwise fire a ``non_finite_loss`` event and return ``False``
        (the caller then skips the update)."""
        values = {k: float(v.detach()) for k, v in losses.items()}
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if not bad:
            return True
        where = f"{self.source}: " if self.source else ""
        shown = ", ".join(f"{k}={v}" for k, v in bad.items())
        tail = "training stopped" if self.cfg.action == "raise" else "the update was skipped"
        self._fire(
            DivergenceEvent(step, "non_finite_loss", f"{where}step {step}: non-finite loss ({shown}); {tail}", None, self.source, values)
        )
        return False

    def check_grads(self, step: int, *optimizers: torch.optim.Optimizer) -> bool:
        """``True`` if every gradient of the optimisers' parameters is finite (call after ``backward``);
        otherwise clear those gradients, fire a ``non_finite_grad`` event and return ``False`` (skip the update)."""
        params = [p for opt in optimizers for group in opt.param_groups for p in group["params"]]
        bad = bad_grads(params)
        if not bad:
            return True
        for p in params:
            p.grad = None
        where = f"{self.source}: " if self.source else ""
        tail = "training stopped" if self.cfg.action == "raise" else "the update was skipped"
        self._fire(DivergenceEvent(step, "non_finite_grad", f"{where}step {step}: non-finite gradient in {len(bad)} tensor(s); {tail}", None, self.source))
        return False

    def check_outputs(self, step: int, refined: torch.Tensor) -> float:
        """Per-batch std of ``refined`` ``Tensor[B, C, H, W]`` (std across the batch per pixel, averaged);
        fires ``mode_collapse`` once it has stayed below ``min_batch_std`` for ``patience`` steps.
        Returns the std (NaN for ``B < 2``, where it is undefined and not checked)."""
        if refined.shape[0] < 2:
            return float("nan")
        std = float(refined.detach().float().std(0).mean())
        if not math.isfinite(std):
            return std  # non-finite outputs show up as non-finite losses
        self._low_steps = self._low_steps + 1 if std < self.cfg.min_batch_std else 0
        if self._low_steps == self.cfg.patience:
            where = f"{self.source}: " if self.source else ""
            self._fire(
                DivergenceEvent(
                    step,
                    "mode_collapse",
                    f"{where}step {step}: mode collapse: refined outputs' per-batch std {std:.3g} < {self.cfg.min_batch_std:g} "
                    f"for {self.cfg.patience} step(s) (the generator ignores its input)",
                    std,
                    self.source,
                )
            )
        return std

    def state_dict(self) -> dict[str, Any]:
        return {"events": [e.to_dict() for e in self.events], "low_steps": self._low_steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.events = [DivergenceEvent(**e) for e in state["events"]]
        self._low_steps = int(state["low_steps"])
