"""Training logic: the loops that make synthetic data useful *for* a model.

Import the submodules directly; this package imports nothing heavy by itself:

- :mod:`synthloop.loops.trainer`: the one optimisation loop every supervised trainer runs,
- :mod:`synthloop.loops.training`: classifier training on device-resident tensors,
- :mod:`synthloop.loops.detection_training`: detector training (real, or real + synthetic at a ratio),
- :mod:`synthloop.loops.mixing`: minibatches with an exact real:synthetic ratio,
- :mod:`synthloop.loops.terse_classification`: the TERSE loop for classifiers (S / T / D; config in
  ``terse_classification_config``, methods beyond the paper in ``terse_methods``, per-cycle
  diagnostics in ``terse_diagnostics``),
- :mod:`synthloop.loops.cache`: its class-balanced hard-example cache,
- :mod:`synthloop.loops.terse_detection`: the TERSE scene loop for detectors (config in
  ``terse_detection_config``, scenes in ``terse_detection_scenes``, teacher objective / worst-of-k /
  replay in ``terse_detection_objectives``, plausibility constraints in ``scene_constraints``),
- :mod:`synthloop.loops.imitation`: imitation training, re-simulating a detector's failures on
  real validation data (failure mining and re-simulation in ``imitation_failures``),
- :mod:`synthloop.loops.policy`: a learned generator policy (cross-entropy method over the paste
  generator's parameters, space in ``policy_space``), rewarded by validation AP,
- :mod:`synthloop.loops.faults`: the non-finite loss / gradient check every step runs,
- :mod:`synthloop.loops.refine`: synthetic-to-real refiners (CycleGAN, MrGAN, PixelDA),
- :mod:`synthloop.loops.export`: exporting a classifier as ``torch.export`` ``.pt2``,
- :mod:`synthloop.loops.checkpoint`: atomic, weights-only checkpoints.
"""
