"""Pure, batched, differentiable image ops on ``(B, C, H, W)`` float tensors in [0, 1].

Nothing here draws random numbers or keeps state: every function is a deterministic map of its
inputs, works on any device and dtype, and (unless its docstring says otherwise) is differentiable.
"""

# The exports load on first use (PEP 562): importing one NumPy submodule (numpy_ops, blend's
# registry) must not import torch, which dataset-generation workers never load.
from typing import TYPE_CHECKING

# torch-free (torch loads inside its torch ops); bound here so that ``synthloop.functional.blend``
# is the function, as before, and not the submodule of the same name
from synthloop.functional.blend import BLEND_MODES, DIFFERENTIABLE_BLEND_MODES, blend
from synthloop.utils.lazy import lazy_exports

_EXPORTS = {
    "AFFINE_PARAM_NAMES": "geometry",
    "affine_matrix": "geometry",
    "affine_theta": "geometry",
    "identity_params": "geometry",
    "matrix_to_params": "geometry",
    "transformed_corners": "geometry",
    "warp": "geometry",
    "masks_to_boxes": "masks",
    "terse_mask_cleanup": "masks",
    "PHOTOMETRIC_NAMES": "color",
    "identity_photometric": "color",
    "photometric": "color",
    "box_blur": "filters",
    "gaussian_blur": "filters",
    "motion_blur": "filters",
}

if TYPE_CHECKING:
    from synthloop.functional.color import PHOTOMETRIC_NAMES, identity_photometric, photometric
    from synthloop.functional.filters import box_blur, gaussian_blur, motion_blur
    from synthloop.functional.geometry import AFFINE_PARAM_NAMES, affine_matrix, affine_theta, identity_params, matrix_to_params, transformed_corners, warp
    from synthloop.functional.masks import masks_to_boxes, terse_mask_cleanup


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


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
