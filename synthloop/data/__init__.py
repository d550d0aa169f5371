"""Data: built-in sets (``mnist``, ``affnist``, ``backgrounds``) and dataset I/O.

Import the submodules directly; this package imports nothing heavy by itself.
"""
