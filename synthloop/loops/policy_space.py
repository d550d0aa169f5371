"""The parameter space of the learned generator policy (:mod:`synthloop.loops.policy`).

A *setting* of the random paste generator (the ``synthesizer: random`` path of
:class:`~synthloop.loops.terse_detection.SceneTerse`) is a point of a bounded box; the policy
works on its normalised coordinates ``u`` in ``[0, 1]^d`` (one per dimension, 0 = lower bound,
1 = upper bound), and :meth:`PolicySpace.decode` turns ``u`` into a concrete setting,
:meth:`PolicySpace.overrides` into :class:`~synthloop.loops.terse_detection_config.SceneTerseConfig`
overrides (``loop_config(budget, overrides, seed)``) and :meth:`PolicySpace.backgrounds` into the
background source the scenes are drawn from. No second compositor: the scenes are SceneTerse's.

Dimensions (:func:`default_space`; defaults = the random sampler's defaults, the loop's
:class:`~synthloop.loops.terse_detection_config.SceneRangesConfig` and
:class:`~synthloop.loops.terse_detection_config.PhotometricRangesConfig`):

- ``scale_centre``, ``scale_width``: ``sx`` (and ``sy``, which follows it) uniform in
  ``centre +- width`` (default 0.775 +- 0.325 = 0.45-1.1);
- ``objects``: cut-outs per scene (SceneTerse pastes a fixed K per scene, so this is K, rounded; default 3);
- ``position_spread``: ``tx``/``ty`` uniform in ``+- spread`` of the canvas (default 0.4);
- ``rotation``: ``angle`` uniform in ``+- rotation`` degrees (default 30);
- ``brightness_width``, ``contrast_width``: factors uniform in ``1 +- width`` (default 0.3);
- ``blend:<mode>``: one logit per blend mode of the base setting; the blend probabilities are their
  softmax (default 0: uniform, as the random sampler draws them). SceneTerse draws one mode per
  scene uniformly from ``blend_modes``, so the probabilities are quantised to :data:`BLEND_SLOTS`
  entries of that list (largest remainder), each mode repeated by its share;
- ``background:<source>``: one logit per source of the background bank, only when it has several
  (softmax = the :class:`~synthloop.data.backgrounds.BackgroundBank` ``weights``; default uniform,
  as the bank draws them). A bank with one source (the detection benchmark's photos) has no
  background dimension: there is nothing to choose.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from synthloop.errors import InputError

BLEND_SLOTS = 20
"""Entries of the ``blend_modes`` list a setting's blend probabilities are quantised to (5 % steps)."""
LOGIT_BOUND = 3.0
"""Blend and background logits lie in ``[-3, 3]``: a probability ratio of at most e^6 ~ 400 between two modes."""


@dataclass(frozen=True)
class Dim:
    """One dimension: ``name``, bounds ``low``-``high``, the random sampler's ``default``, and whether it is an integer."""

    name: str
    low: float
    high: float
    default: float
    integer: bool = False

    def __post_init__(self) -> None:
        if not (self.low < self.high and self.low <= self.default <= self.high):
            raise InputError(f"dimension {self.name}: need low < high and the default inside, got {self.low}, {self.high}, {self.default}", field=self.name)


class PolicySpace:
    """The bounded box the policy searches, with the maps to a generator setting.

    Args:
        dims: the dimensions (see the module docstring; :func:`default_space` builds the standard ones).
        blend_modes: the blend modes the ``blend:<mode>`` logits refer to.
        background_sources: the bank's sources the ``background:<source>`` logits refer to (empty: none).
    """

    def __init__(self, dims: Sequence[Dim], blend_modes: Sequence[str], background_sources: Sequence[str] = ()):
        self.dims = tuple(dims)
        self.blend_modes = tuple(blend_modes)
        self.background_sources = tuple(background_sources)
        names = [d.name for d in self.dims]
        if len(set(names)) != len(names):
            raise InputError(f"duplicate dimension names in {names}", field="dims")
        self.low = torch.tensor([d.low for d in self.dims], dtype=torch.float64)
        self.high = torch.tensor([d.high for d in self.dims], dtype=torch.float64)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dims]

    def __len__(self) -> int:
        return len(self.dims)

    def default_vector(self) -> torch.Tensor:
        """The random sampler's defaults in normalised coordinates ``(d,)``."""
        return self.normalise(torch.tensor([d.default for d in self.dims], dtype=torch.float64))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(torch.float64) - self.low) / (self.high - self.low)

    def denormalise(self, u: torch.Tensor) -> torch.Tensor:
        return self.low + u.to(torch.float64).clamp(0.0, 1.0) * (self.high - self.low)

    def decode(self, u: torch.Tensor) -> dict[str, Any]:
        """Normalised ``u`` ``(d,)`` -> the setting: every dimension's value (integers rounded), plus
        ``blend_probabilities`` and ``background_probabilities`` (softmax of their logits)."""
        if u.shape != (len(self),):
            raise InputError(f"expected a vector of {len(self)} coordinates, got shape {tuple(u.shape)}", field="u")
        x = self.denormalise(u).tolist()
        out: dict[str, Any] = {d.name: (round(v) if d.integer else float(v)) for d, v in zip(self.dims, x)}
        out["blend_probabilities"] = _softmax([out[f"blend:{m}"] for m in self.blend_modes], self.blend_modes)
        if len(self.background_sources) > 1:
            out["background_probabilities"] = _softmax([out[f"background:{s}"] for s in self.background_sources], self.background_sources)
        return out

    def overrides(self, setting: Mapping[str, Any]) -> dict[str, Any]:
        """SceneTerseConfig overrides of ``setting`` (ranges, photometric ranges, K, blend modes)."""
        c, w = setting["scale_centre"], setting["scale_width"]
        scale = [max(c - w, 0.05), max(c + w, 0.05 + 1e-6)]
        s, r = setting["position_spread"], setting["rotation"]
        bw, cw = setting["brightness_width"], setting["contrast_width"]
        return {
            "num_objects": int(setting["objects"]),
            "ranges": {"angle": [-r, r], "tx": [-s, s], "ty": [-s, s], "sx": scale, "sy": list(scale)},
            "photometric_ranges": {"brightness": [1.0 - bw, 1.0 + bw], "contrast": [1.0 - cw, 1.0 + cw]},
            "blend_modes": quantise_modes(setting["blend_probabilities"], BLEND_SLOTS),
        }

    def backgrounds(self, setting: Mapping[str, Any], bank: Any) -> Any:
        """The background source of ``setting``: ``bank`` itself when there is no background choice,
        else a :class:`~synthloop.data.backgrounds.BackgroundBank` over the same sources (same crop
        scale, aspect and exclusions) weighted by ``background_probabilities``. Scenes drawn from it
        replay with ``bank`` (the params name the photo or texture, not the weights)."""
        probs = setting.get("background_probabilities")
        if not probs:
            return bank
        from synthloop.data.backgrounds import BackgroundBank

        return BackgroundBank(
            list(self.background_sources), weights=[probs[s] for s in self.background_sources], scale=bank.scale, aspect=bank.aspect, exclude=bank.exclude
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dims": [{"name": d.name, "low": d.low, "high": d.high, "default": d.default, "integer": d.integer} for d in self.dims],
            "blend_modes": list(self.blend_modes),
            "background_sources": list(self.background_sources),
        }


def apply_setting(base: Any, space: PolicySpace, setting: Mapping[str, Any]) -> Any:
    """``base`` (a :class:`~synthloop.loops.terse_detection_config.SceneTerseConfig`, e.g. the random
    paste row's ``loop_config``) with ``setting``'s overrides; range fields the setting does not
    set (``shear``) keep ``base``'s values. Raises ``InputError`` via the config's validation."""
    from synthloop.loops.terse_detection_config import SceneTerseConfig

    doc = base.to_dict()
    for key, value in space.overrides(setting).items():
        doc[key] = {**doc[key], **value} if isinstance(value, dict) else value
    try:
        return SceneTerseConfig(**doc)
    except ValueError as exc:  # pydantic's ValidationError: the setting maps outside the loop's valid configs
        raise InputError(f"the policy setting gives an invalid loop config: {exc}", field="setting") from None


def _softmax(logits: Sequence[float], names: Sequence[str]) -> dict[str, float]:
    p = torch.softmax(torch.tensor(logits, dtype=torch.float64), 0).tolist()
    return {n: float(v) for n, v in zip(names, p)}


def quantise_modes(probabilities: Mapping[str, float], slots: int = BLEND_SLOTS) -> list[str]:
    """A ``blend_modes`` list of ``slots`` entries whose shares follow ``probabilities`` (largest
    remainder rounding; modes rounded to 0 entries are left out, so at least one stays)."""
    names = list(probabilities)
    raw = [probabilities[n] * slots for n in names]
    counts = [math.floor(v) for v in raw]
    for i in sorted(range(len(names)), key=lambda i: (-(raw[i] - counts[i]), i))[: slots - sum(counts)]:
        counts[i] += 1
    return [n for n, c in zip(names, counts) for _ in range(c)]


def default_space(blend_modes: Sequence[str], background_sources: Sequence[str] = (), *, max_objects: int = 6) -> PolicySpace:
    """The standard space (see the module docstring); defaults are the random sampler's: the loop's
    default ranges (sx 0.45-1.1, tx/ty +-0.4, angle +-30, brightness/contrast 0.7-1.3), K = 3 and
    uniform blend (and background) choice."""
    if not blend_modes:
        raise InputError("the policy needs at least one blend mode", field="blend_modes")
    dims = [
        Dim("scale_centre", 0.35, 1.2, 0.775),
        Dim("scale_width", 0.02, 0.45, 0.325),
        Dim("objects", 1.0, float(max_objects), 3.0, integer=True),
        Dim("position_spread", 0.05, 0.45, 0.4),
        Dim("rotation", 0.0, 45.0, 30.0),
        Dim("brightness_width", 0.0, 0.5, 0.3),
        Dim("contrast_width", 0.0, 0.5, 0.3),
    ]
    dims += [Dim(f"blend:{m}", -LOGIT_BOUND, LOGIT_BOUND, 0.0) for m in blend_modes]
    if len(background_sources) > 1:
        dims += [Dim(f"background:{s}", -LOGIT_BOUND, LOGIT_BOUND, 0.0) for s in background_sources]
    return PolicySpace(dims, blend_modes, background_sources if len(background_sources) > 1 else ())


__all__ = ["BLEND_SLOTS", "LOGIT_BOUND", "Dim", "PolicySpace", "apply_setting", "default_space", "quantise_modes"]
