"""Built-in data: MNIST (``synthloop.data.mnist``), AffNIST-style sets (``synthloop.data.affnist``)
and background sources (``synthloop.data.backgrounds``).

Import the submodules directly; this package imports nothing heavy by itself.
"""
