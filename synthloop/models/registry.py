"""Name -> model-factory registry (``register_model`` / ``create_model``), timm style.

A factory is any callable returning an ``nn.Module`` (usually the class itself). Model modules
register themselves when :mod:`synthloop.models` is imported, so configs can name a network
(``synthesizer: mnist_synthesizer``) and :func:`create_model` builds it with keyword overrides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from synthloop.errors import InputError

FactoryT = TypeVar("FactoryT", bound=Callable[..., nn.Module])

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[FactoryT], FactoryT]:
    """Decorator registering a factory (class or function) under ``name``.

    Raises:
        ValueError: ``name`` is empty or already registered.
    """
    if not name:
        raise ValueError("model name must be a non-empty string")

    def decorator(factory: FactoryT) -> FactoryT:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered (by {_MODELS[name]!r})")
        _MODELS[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    """Sorted names of every registered model."""
    return sorted(_MODELS)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with ``kwargs`` passed to its factory.

    Raises:
        InputError: no model is registered under ``name`` (the message lists the valid names).
    """
    try:
        factory = _MODELS[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; registered models: {', '.join(list_models())}", field="model") from None
    return factory(**kwargs)


@register_model("small_detector")
def _small_detector(**kwargs: Any) -> nn.Module:
    # imported on use: torchvision's detection stack adds about a second to ``import synthloop.models``
    from synthloop.models.detection import SmallDetector

    return SmallDetector(**kwargs)
