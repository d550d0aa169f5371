"""Dataset generation jobs: ``synthloop paste`` (sample, render, write COCO/YOLO/VOC) and replay.

- :func:`run_paste` runs or resumes a job described by a :class:`PasteConfig`;
- :func:`replay_image` re-renders one written image from its stored params and checks it is
  bit-identical;
- :mod:`synthloop.generate.builtin` holds the built-in demo assets (MNIST digits as tinted
  cut-outs, the background bank).
"""

from synthloop.generate.config import BackgroundsConfig, CocoSource, InstancesConfig, PasteConfig, load_paste_config
from synthloop.generate.paste import PasteSummary, run_paste
from synthloop.generate.replay import ReplayResult, replay_image

__all__ = [
    "BackgroundsConfig",
    "CocoSource",
    "InstancesConfig",
    "PasteConfig",
    "PasteSummary",
    "ReplayResult",
    "load_paste_config",
    "replay_image",
    "run_paste",
]
