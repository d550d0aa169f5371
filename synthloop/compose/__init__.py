"""Sample, then apply: parameter samplers, scene params, the deterministic compositor
(:func:`apply_scene`), and the differentiable batched paste used by the learning loops."""

# The exports load on first use (PEP 562): the NumPy compositor (apply, params) is what
# dataset-generation workers import, and they never load torch (the samplers and the batched
# paste do).
from typing import TYPE_CHECKING

from synthloop.utils.lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


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
