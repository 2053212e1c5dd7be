"""The run layer: everything that manages one run's folder, below the entry points.

- :mod:`~accelopt.run.session`: a run's life in its folder (its record, the checks before any
  work, fit, the end), which :func:`accelopt.train.train` strings together;
- :mod:`~accelopt.run.build`: the Lightning objects (data module, module, trainer) from the config;
- :mod:`~accelopt.run.folder`: the folder itself (writable, locked by one run, Hydra's files);
- :mod:`~accelopt.run.resume`: a run's identity, which checkpoint it resumes from (readable,
  written by this version, the same run), and whether it may start over the record already there;
- :mod:`~accelopt.run.record`, :mod:`~accelopt.run.record_check`: the run record
  ``metrics.json`` and its checks on reading (standard library only);
- :mod:`~accelopt.run.recorder`: the Lightning callback that fills the record during fit;
- :mod:`~accelopt.run.checkpoint`: atomic checkpoint files and ``last.ckpt``'s cadence;
- :mod:`~accelopt.run.timer`, :mod:`~accelopt.run.signals`, :mod:`~accelopt.run.summary`: the
  epoch timer, Ctrl+C as a graceful stop, the end-of-run summary.

Nothing is imported here, so ``accelopt.run.record`` stays importable without torch.
"""
