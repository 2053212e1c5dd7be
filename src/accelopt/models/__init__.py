"""Networks and the LightningModule that trains them in manual optimization."""

from accelopt.models.cnn import ReportCNN
from accelopt.models.mlp import MLP
from accelopt.models.resnet import CifarResNet
from accelopt.models.torchvision_models import torchvision_classifier

__all__ = ["MLP", "CifarResNet", "ReportCNN", "ClassifierModule", "torchvision_classifier"]


def __getattr__(name: str):  # keep `import accelopt.models.cnn` free of Lightning
    if name == "ClassifierModule":
        from accelopt.models.module import ClassifierModule

        return ClassifierModule
    raise AttributeError(name)
