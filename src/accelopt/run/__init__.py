"""The run layer: everything that manages one run's folder, below the entry points.

- :mod:`~accelopt.run.folder`: the folder itself (writable, locked by one run, Hydra's files);
- :mod:`~accelopt.run.resume`: a run's identity, which checkpoint it resumes from, and whether
  it may start over the record already there;
- :mod:`~accelopt.run.record`: the run record ``metrics.json`` (standard library only);
- :mod:`~accelopt.run.checkpoint`: atomic checkpoint files and ``last.ckpt``'s cadence;
- :mod:`~accelopt.run.recorder`: the Lightning callbacks that fill the record during fit.

Nothing is imported here, so ``accelopt.run.record`` stays importable without torch.
"""
