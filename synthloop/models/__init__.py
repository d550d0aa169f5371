"""Networks of the TERSE loop: target classifiers T, synthesizers S, discriminator D, adapters.

Importing this package registers every model (see :mod:`synthloop.models.registry`):
``mnist_classifier``, ``mnist_classifier_deep``, ``mnist_synthesizer``, ``scene_synthesizer``,
``patch_discriminator``.
"""

from synthloop.models.registry import create_model, list_models, register_model
from synthloop.models.classifiers import MNISTClassifier, MNISTClassifierDeep
from synthloop.models.synthesizer import (
    PHOTOMETRIC_HEAD_NAMES,
    AffineHead,
    MNISTSynthesizer,
    ParamRanges,
    PhotometricRanges,
    SceneSynthesizer,
    init_xavier,
    to_color_params,
)
from synthloop.models.discriminator import PatchDiscriminator
from synthloop.models.refiners import PixelDAGenerator, ResnetGenerator, SmallResNet  # noqa: F401  (registers them)
from synthloop.models.targets import (
    ClassifierTarget,
    Target,
    freeze,
    hardness_from_probs,
    is_frozen,
    is_hard_from_probs,
    trainable_parameters,
    unfreeze,
)

__all__ = [
    "PHOTOMETRIC_HEAD_NAMES",
    "AffineHead",
    "ClassifierTarget",
    "MNISTClassifier",
    "MNISTClassifierDeep",
    "MNISTSynthesizer",
    "ParamRanges",
    "PatchDiscriminator",
    "PhotometricRanges",
    "SceneSynthesizer",
    "Target",
    "create_model",
    "freeze",
    "hardness_from_probs",
    "init_xavier",
    "is_frozen",
    "is_hard_from_probs",
    "list_models",
    "register_model",
    "to_color_params",
    "trainable_parameters",
    "unfreeze",
]
