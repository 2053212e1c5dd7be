"""Hydra launcher plugin ``gpu_pool``: a sweep's jobs in parallel, each pinned to one GPU."""

__version__ = "0.1.0"
