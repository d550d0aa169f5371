"""Shared helpers of the renderer tests: one bundled font, configs with chosen variations, mask IoU."""

import numpy as np

from synthloop.render import VARIATIONS, RenderConfig, bundled_font_dir

FONT = str(bundled_font_dir() / "DejaVuSans.ttf")


def make_config(photo_dir, on=(), p=1.0, **kw):
    """One font; only the variations in ``on`` enabled, each with probability ``p``."""
    switches = {v: {"enabled": v in on, "p": p} for v in VARIATIONS}
    switches["background"]["photo_sources"] = [photo_dir]
    for k, v in kw.pop("extra", {}).items():
        switches[k].update(v)
    return RenderConfig(fonts=[FONT], **switches, **kw)


def iou(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return (a & b).sum() / max((a | b).sum(), 1)
