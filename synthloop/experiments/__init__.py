"""Paper protocols as library code: each module nests the loop configs it runs (no copied
fields) and returns a result the benchmarks print and write. Import the submodules directly:

- :mod:`synthloop.experiments.affnist`: TERSE's AffNIST experiments (Fig. 7, Table 1).
"""
