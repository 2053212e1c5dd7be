"""Studies of the optimizers beyond training runs; ``benchmarks/`` are command lines over them.

- :mod:`accelopt.analysis.saddles`: saddle test problems and a time-to-threshold race on them.
- :mod:`accelopt.analysis.heldout_nc`: whether negative curvature found by Lanczos on a search
  batch is real on held-out data; :mod:`accelopt.analysis.heldout_nc_tables` renders it.
- :mod:`accelopt.analysis.timing`: the median time of a call, CUDA-synchronised.
- :mod:`accelopt.analysis.regression`: the NC presets' regression run, the platform fingerprint
  and the comparisons with a stored reference (bit for bit on the reference's machine).

Above ``accelopt.curvature`` and ``accelopt.optim``: these may load data and models.
"""
