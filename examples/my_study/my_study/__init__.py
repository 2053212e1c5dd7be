"""A user's own study package: a model and an optimizer that accelopt trains through Hydra."""

from my_study.models import TwoConvNet
from my_study.optim import Signum

__all__ = ["Signum", "TwoConvNet"]
