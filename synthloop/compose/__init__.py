"""Sample, then apply: parameter samplers, scene params, the deterministic compositor
(:func:`apply_scene`), and the differentiable batched paste used by the learning loops."""

# The exports load on first use (PEP 562): the NumPy compositor (apply, params) is what
# dataset-generation workers import, and they never load torch (the samplers and the batched
# paste do).
from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "PastedObject": "apply",
    "SceneResult": "apply",
    "apply_scene": "apply",
    "Composite": "batch",
    "paste_artefacts_batch": "batch",
    "paste_batch": "batch",
    "ArtefactConfig": "config",
    "BlendConfig": "config",
    "PhotometricConfig": "config",
    "PlacementConfig": "config",
    "SceneConfig": "config",
    "ArtefactParams": "params",
    "BlendSpec": "params",
    "ObjectParams": "params",
    "SceneParams": "params",
    "sample_scene": "sampler",
    "BankInstances": "sources",
    "SolidBackgrounds": "sources",
    "TensorInstances": "sources",
}

if TYPE_CHECKING:
    from synthloop.compose.apply import PastedObject, SceneResult, apply_scene
    from synthloop.compose.batch import Composite, paste_artefacts_batch, paste_batch
    from synthloop.compose.config import ArtefactConfig, BlendConfig, PhotometricConfig, PlacementConfig, SceneConfig
    from synthloop.compose.params import ArtefactParams, BlendSpec, ObjectParams, SceneParams
    from synthloop.compose.sampler import sample_scene
    from synthloop.compose.sources import BankInstances, SolidBackgrounds, TensorInstances


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "ArtefactConfig",
    "ArtefactParams",
    "BankInstances",
    "BlendConfig",
    "BlendSpec",
    "Composite",
    "ObjectParams",
    "PastedObject",
    "PhotometricConfig",
    "PlacementConfig",
    "SceneConfig",
    "SceneParams",
    "SceneResult",
    "SolidBackgrounds",
    "TensorInstances",
    "apply_scene",
    "paste_artefacts_batch",
    "paste_batch",
    "sample_scene",
]
