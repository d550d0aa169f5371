"""Learning loops that make synthetic data useful *for* a model.

Import the submodules directly; this package imports nothing heavy by itself:

- :mod:`synthloop.loops.terse_classification`: the TERSE loop for classifiers (S / T / D),
- :mod:`synthloop.loops.cache`: its class-balanced hard-example cache,
- :mod:`synthloop.loops.trainer`: the one optimisation loop every supervised trainer runs,
- :mod:`synthloop.loops.training`: supervised training on device-resident tensors,
- :mod:`synthloop.loops.refine`: synthetic-to-real refiners (CycleGAN, MrGAN, PixelDA),
- :mod:`synthloop.loops.export`: exporting a classifier as ``torch.export`` ``.pt2``,
- :mod:`synthloop.loops.checkpoint`: atomic checkpoints,
- :mod:`synthloop.experiments.affnist`: the TERSE AffNIST experiments (Fig. 7, Table 1),
- :mod:`synthloop.jobs.demo`: the TERSE demo with an HTML report.
"""
