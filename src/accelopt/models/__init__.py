"""Networks and the LightningModule that trains them in manual optimization."""

from accelopt.models.cnn import ReportCNN
from accelopt.models.mlp import MLP
from accelopt.models.resnet import CifarResNet
from accelopt.models.tag import register_resolver
from accelopt.models.torchvision_models import torchvision_classifier

register_resolver()  # ${accelopt.model_tag:...}: the run folder names in conf/train.yaml

__all__ = ["MLP", "CifarResNet", "ReportCNN", "ClassifierModule", "torchvision_classifier"]


def __getattr__(name: str):  # keep `import accelopt.models.cnn` free of Lightning
    if name == "ClassifierModule":
        from accelopt.models.module import ClassifierModule

        return ClassifierModule
    raise AttributeError(name)
