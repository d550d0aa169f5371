"""Pure, batched, differentiable image ops on ``(B, C, H, W)`` float tensors in [0, 1].

Nothing here draws random numbers or keeps state: every function is a deterministic map of its
inputs, works on any device and dtype, and (unless its docstring says otherwise) is differentiable.
"""

from synthloop.functional.geometry import (
    AFFINE_PARAM_NAMES,
    affine_matrix,
    affine_theta,
    identity_params,
    matrix_to_params,
    transformed_corners,
    warp,
)
from synthloop.functional.masks import masks_to_boxes, terse_mask_cleanup
from synthloop.functional.blend import BLEND_MODES, DIFFERENTIABLE_BLEND_MODES, blend
from synthloop.functional.color import PHOTOMETRIC_NAMES, identity_photometric, photometric
from synthloop.functional.filters import box_blur, gaussian_blur, motion_blur

__all__ = [
    "AFFINE_PARAM_NAMES",
    "BLEND_MODES",
    "DIFFERENTIABLE_BLEND_MODES",
    "PHOTOMETRIC_NAMES",
    "affine_matrix",
    "affine_theta",
    "blend",
    "box_blur",
    "gaussian_blur",
    "identity_params",
    "identity_photometric",
    "masks_to_boxes",
    "matrix_to_params",
    "motion_blur",
    "photometric",
    "terse_mask_cleanup",
    "transformed_corners",
    "warp",
]
