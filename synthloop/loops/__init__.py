"""Training logic: the loops that make synthetic data useful *for* a model.

Import the submodules directly; this package imports nothing heavy by itself:

- :mod:`synthloop.loops.trainer`: the one optimisation loop every supervised trainer runs,
- :mod:`synthloop.loops.training`: classifier training on device-resident tensors,
- :mod:`synthloop.loops.detection_training`: detector training (real, or real + synthetic at a ratio),
- :mod:`synthloop.loops.mixing`: minibatches with an exact real:synthetic ratio,
- :mod:`synthloop.loops.terse_classification`: the TERSE loop for classifiers (S / T / D),
- :mod:`synthloop.loops.cache`: its class-balanced hard-example cache,
- :mod:`synthloop.loops.terse_detection`: the TERSE scene loop for detectors (config in ``terse_detection_config``),
- :mod:`synthloop.loops.refine`: synthetic-to-real refiners (CycleGAN, MrGAN, PixelDA),
- :mod:`synthloop.loops.export`: exporting a classifier as ``torch.export`` ``.pt2``,
- :mod:`synthloop.loops.checkpoint`: atomic, weights-only checkpoints.
"""
