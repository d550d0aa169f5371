"""Paper protocols as library code: each module nests the loop configs it runs (no copied
fields) and returns results the benchmarks print and write. Import the submodules directly:

- :mod:`synthloop.experiments.affnist`: TERSE's AffNIST experiments (Fig. 7, Table 1),
- :mod:`synthloop.experiments.detection`: TERSE for detection on digits in scenes (Table 4, Fig. 8, Table 2),
- :mod:`synthloop.experiments.limited_real`: MrGAN's limited-real-data tables on MNIST + rendered digits.
"""
