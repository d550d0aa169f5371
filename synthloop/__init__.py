"""synthloop: task-aware synthetic training data for computer vision.

Layers, bottom to top (every import points down; ``tests/test_layout.py`` checks it):

- ``synthloop.errors``, ``synthloop.config``, ``synthloop.utils``  foundations
- ``synthloop.functional``   pure, batched, differentiable ops (no RNG, no state); the blend registry
- ``synthloop.data``         readers/writers, datasets, built-in data, backgrounds, instance banks
- ``synthloop.compose``      the scene schema, samplers, deterministic NumPy and torch compositors
- ``synthloop.render``       the glyph renderer (config, params, sample, apply)
- ``synthloop.models``       networks and target adapters (no file I/O)
- ``synthloop.metrics``      accuracy, hardness, COCO AP
- ``synthloop.report``       figures, contact sheets, HTML reports
- ``synthloop.loops``        training logic: one trainer, checkpoints, TERSE loops, refiners
- ``synthloop.experiments``  paper protocols as library code
- ``synthloop.jobs``         what a command runs end to end (run folder, records, reports)
- ``synthloop.cli``          the command line (parses, builds a config, calls a job)
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("synthloop")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
