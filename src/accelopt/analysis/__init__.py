"""Studies of the optimizers beyond training runs; ``benchmarks/`` are command lines over them.

- :mod:`accelopt.analysis.saddles`: saddle test problems and a time-to-threshold race on them.
- :mod:`accelopt.analysis.heldout_nc`: whether negative curvature found by Lanczos on a search
  batch is real on held-out data; :mod:`accelopt.analysis.heldout_nc_tables` renders it.
- :mod:`accelopt.analysis.timing`: the median time of a call, CUDA-synchronised.

Above ``accelopt.curvature`` and ``accelopt.optim``: these may load data and models.
"""
