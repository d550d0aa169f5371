"""synthloop: task-aware synthetic training data for computer vision.

Layout (data flows top to bottom):

- ``synthloop.functional``  pure, batched, differentiable ops (no RNG, no state)
- ``synthloop.compose``     parameter samplers -> params dataclasses -> deterministic ``apply``
- ``synthloop.data``        built-in data (MNIST, AffNIST-style, backgrounds), instance banks, COCO/YOLO/VOC I/O
- ``synthloop.models``      synthesizers, discriminators, target adapters
- ``synthloop.loops``       TERSE and other training loops
- ``synthloop.generate``    dataset generation jobs (``synthloop paste``)
- ``synthloop.report``      contact sheets, plots, HTML reports
- ``synthloop.cli``         the command line (parses, builds a config, calls the library)
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("synthloop")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
