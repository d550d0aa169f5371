"""Detectors by name: ``small_fcos`` (:class:`~synthloop.models.detection.SmallDetector`) or any
torchvision detection builder, randomly initialised (nothing is downloaded), with the builder's
keyword arguments checked (torchvision drops unknown ones silently)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from synthloop.errors import InputError

SMALL_FCOS = "small_fcos"


def build_detector(spec: Mapping[str, Any], num_classes: int, image_size: Sequence[int]) -> nn.Module:
    """The detector of a ``model.json``-style spec (``name``, ``args``) for ``num_classes``
    (background included) at ``image_size`` (H, W). Randomly initialised, nothing downloaded."""
    from synthloop.models.detection import SmallDetector, torchvision_detector

    args = dict(spec.get("args") or {})
    args.pop("num_classes", None)
    name = str(spec.get("name", SMALL_FCOS))
    try:
        if name == SMALL_FCOS:
            model = SmallDetector(num_classes=num_classes, image_size=tuple(image_size), **args)
        else:
            model = torchvision_detector(name, num_classes, tuple(image_size), **args)
    except TypeError as exc:  # an unknown keyword of the builder
        raise InputError(f"{name}: {exc}", field="model.args") from None
    _check_args(name, model, args)
    return model


# keywords torchvision's detection models pass on to their GeneralizedRCNNTransform via **kwargs
_TRANSFORM_KWARGS = frozenset({"size_divisible", "fixed_size"})


def _check_args(name: str, model: nn.Module, args: Mapping[str, Any]) -> None:
    """torchvision's detection builders and model classes take ``**kwargs`` and drop the ones
    nobody reads, so a misspelt argument would be ignored silently: every key must be a parameter
    of the builder or of a class the model derives from."""
    import inspect

    import torchvision

    allowed = set(_TRANSFORM_KWARGS)
    if name != SMALL_FCOS:
        allowed |= set(inspect.signature(torchvision.models.get_model_builder(name)).parameters)
    for cls in type(model).__mro__:
        if "__init__" in vars(cls) and issubclass(cls, nn.Module) and cls is not nn.Module:
            allowed |= set(inspect.signature(cls.__init__).parameters)
    allowed -= {"self", "args", "kwargs", "progress"}
    for key in args:
        if key not in allowed:
            raise InputError(f"{name} has no argument {key!r}; valid: {', '.join(sorted(allowed))}", field=f"model.args.{key}")


__all__ = ["SMALL_FCOS", "build_detector"]
