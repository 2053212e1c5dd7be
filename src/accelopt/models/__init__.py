"""Networks and the LightningModule that trains them in manual optimization."""

from accelopt.models.cnn import ReportCNN
from accelopt.models.resnet import CifarResNet

__all__ = ["CifarResNet", "ReportCNN", "ClassifierModule"]


def __getattr__(name: str):  # keep `import accelopt.models.cnn` free of Lightning
    if name == "ClassifierModule":
        from accelopt.models.module import ClassifierModule

        return ClassifierModule
    raise AttributeError(name)
