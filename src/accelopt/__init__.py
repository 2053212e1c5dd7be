"""accelopt: accelerated and negative-curvature optimizers for CNNs."""

__version__ = "0.1.0"
