"""The report's CNN: three conv-ReLU-maxpool blocks and one linear layer.

The network of Zhiping (Patricia) Xiao's 2019 report "Accelerated Optimization Methods on
Convolutional Neural Networks" (ECE236C, UCLA; ``MyCNN`` in PatriciaXiao/AcceleratedSGDMethods):
conv(c→32, k5, stride 1, pad 2) + ReLU + 2×2 max-pool, conv(32→64, k3, pad 1) + ReLU + max-pool,
conv(64→64, k3, pad 1) + ReLU + max-pool, then one linear layer to the classes (no dropout, no
batch norm). MNIST (1×28×28) → 576 features, 62,026 parameters; CIFAR-10 (3×32×32) → 1,024
features, 68,106 parameters. See ``docs/algorithms.md`` for the study it was trained in.
"""

from __future__ import annotations

from torch import Tensor, nn

ACTIVATIONS = ("relu", "softplus")


def _activation(name: str, softplus_beta: float) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "softplus":
        return nn.Softplus(beta=softplus_beta)
    raise ValueError(f"activation={name!r} is not supported; choose one of {ACTIVATIONS}.")


class ReportCNN(nn.Module):
    """conv(c→32, k5, p2) · conv(32→64, k3, p1) · conv(64→64, k3, p1) · linear(64·s²→classes).

    Each conv is followed by the activation and a 2×2 max-pool, so a 28×28 MNIST image ends as
    64×3×3 (576 features, 62,026 parameters) and a 32×32 CIFAR-10 image as 64×4×4 (1,024
    features, 68,106 parameters), as in the report. ``activation="softplus"`` (β = 5 by default)
    gives a smooth Hessian; ``"relu"`` is the report's.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        activation: str = "relu",
        softplus_beta: float = 5.0,
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2 or image_size < 8:
            raise ValueError(
                f"ReportCNN needs in_channels >= 1, num_classes >= 2 and image_size >= 8; got "
                f"in_channels={in_channels}, num_classes={num_classes}, image_size={image_size}."
            )
        act = lambda: _activation(activation, softplus_beta)  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=5, padding=2),
            act(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            act(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, kernel_size=3, padding=1),
            act(),
            nn.MaxPool2d(2),
        )
        side = image_size // 2 // 2 // 2
        self.classifier = nn.Linear(64 * side * side, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))
