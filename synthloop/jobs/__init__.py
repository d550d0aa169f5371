"""What a command runs end to end: the run folder (config, run record, resume), the work, the
records and the report. Import the submodules directly; this package imports nothing heavy:

- :mod:`synthloop.jobs.run_folder`: the one run-folder helper (checks, ``run.json``, resume),
- :mod:`synthloop.jobs.paste`: ``synthloop paste`` (sample, compose, write COCO/YOLO/VOC), with
  :mod:`~synthloop.jobs.paste_config` and :mod:`~synthloop.jobs.paste_assets`,
- :mod:`synthloop.jobs.replay`: ``synthloop replay`` (re-compose one written image bit-identically),
- :mod:`synthloop.jobs.render`: ``synthloop render`` (glyph images with latent variations, image folder + COCO),
- :mod:`synthloop.jobs.refine`: ``synthloop refine`` (CycleGAN / MrGAN / PixelDA refiners),
- :mod:`synthloop.jobs.terse_detection`: ``synthloop terse`` (TERSE on a detector, report), with
  :mod:`~synthloop.jobs.terse_detection_config` and :mod:`~synthloop.jobs.terse_detection_setup`,
- :mod:`synthloop.jobs.terse_mnist`: ``synthloop terse-train`` (TERSE on an MNIST classifier),
- :mod:`synthloop.jobs.demo`: ``synthloop demo`` (the quick AffNIST experiment with a report).
"""
