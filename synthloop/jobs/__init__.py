"""What a command runs end to end: the run folder (config, run record, resume), the work, the
records and the report. Import the submodules directly; this package imports nothing heavy:

- :mod:`synthloop.jobs.run_folder`: the one run-folder helper (checks, ``run.json``, resume),
- :mod:`synthloop.jobs.paste`: ``synthloop paste`` (sample, compose, write COCO/YOLO/VOC), with
  :mod:`~synthloop.jobs.paste_config` and :mod:`~synthloop.jobs.paste_assets` (workers:
  :mod:`~synthloop.jobs.paste_worker`; backends: :mod:`~synthloop.jobs.paste_ray`,
  :mod:`~synthloop.jobs.paste_torch`),
- :mod:`synthloop.jobs.replay`: ``synthloop replay`` (re-compose one written image bit-identically),
- :mod:`synthloop.jobs.render`: ``synthloop render`` (glyph images with latent variations, image folder + COCO;
  on Ray: :mod:`~synthloop.jobs.render_ray`),
- :mod:`synthloop.jobs.ray_backend`: what both ``--backend ray`` jobs share (connect, shards, tasks),
- :mod:`synthloop.jobs.refine`: ``synthloop refine`` (CycleGAN / MrGAN / PixelDA refiners),
- :mod:`synthloop.jobs.terse_detection`: ``synthloop terse`` (TERSE on a detector, report), with
  :mod:`~synthloop.jobs.terse_detection_config` and :mod:`~synthloop.jobs.terse_detection_setup`,
- :mod:`synthloop.jobs.imitate`: ``synthloop imitate`` (imitation training, report), with
  :mod:`~synthloop.jobs.imitate_config`,
- :mod:`synthloop.jobs.improve`: ``synthloop improve`` (the feedback loop measured best: imitate or terse),
- :mod:`synthloop.jobs.terse_mnist`: ``synthloop terse-train`` (TERSE on an MNIST classifier),
- :mod:`synthloop.jobs.demo`: ``synthloop demo`` (the quick AffNIST experiment with a report).
"""
