"""Sample, then apply: parameter samplers, scene params, the deterministic renderer, and the
differentiable batched paste used by the learning loops."""

from synthloop.compose.batch import Composite, paste_artefacts_batch, paste_batch
from synthloop.compose.config import ArtefactConfig, BlendConfig, PhotometricConfig, PlacementConfig, SceneConfig
from synthloop.compose.params import ArtefactParams, BlendSpec, ObjectParams, SceneParams
from synthloop.compose.render import RenderedObject, SceneResult, render_scene
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
    "PhotometricConfig",
    "PlacementConfig",
    "RenderedObject",
    "SceneConfig",
    "SceneParams",
    "SceneResult",
    "SolidBackgrounds",
    "TensorInstances",
    "paste_artefacts_batch",
    "paste_batch",
    "render_scene",
    "sample_scene",
]
