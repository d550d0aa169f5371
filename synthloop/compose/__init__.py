"""Sample, then apply: parameter samplers, scene params, the deterministic compositor
(:func:`apply_scene`), and the differentiable batched paste used by the learning loops."""

from synthloop.compose.apply import PastedObject, SceneResult, apply_scene
from synthloop.compose.batch import Composite, paste_artefacts_batch, paste_batch
from synthloop.compose.config import ArtefactConfig, BlendConfig, PhotometricConfig, PlacementConfig, SceneConfig
from synthloop.compose.params import ArtefactParams, BlendSpec, ObjectParams, SceneParams
from synthloop.compose.sampler import sample_scene
from synthloop.compose.sources import BankInstances, SolidBackgrounds, TensorInstances

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
