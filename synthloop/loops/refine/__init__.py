"""Synthetic-to-real refinement: CycleGAN, MrGAN (two stacked CycleGANs) and PixelDA training.

- :mod:`~synthloop.loops.refine.common`: domains, label-aligned pairing, the history pool and the
  machinery the trainers share (step loop, state, device),
- :mod:`~synthloop.loops.refine.divergence`: non-finite-loss and mode-collapse detection,
- :mod:`~synthloop.loops.refine.cyclegan`, :mod:`~synthloop.loops.refine.mrgan`,
  :mod:`~synthloop.loops.refine.pixelda`: the three trainers and their configs,
- :mod:`~synthloop.loops.refine.checkpoint`: saving and restoring any of them.

Every step returns its losses as a ``dict[str, float]``. Everything random (weight init, batch
sampling, history pool, label noise, PixelDA's ``z``) draws from ``torch.Generator`` s derived
from the seed, and a checkpoint holds their states, so a resumed run continues exactly as an
uninterrupted one. The ``synthloop refine`` job is :mod:`synthloop.jobs.refine`.
"""
