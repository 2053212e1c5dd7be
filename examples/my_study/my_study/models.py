"""A small two-block CNN, sized from the data set as accelopt's own models are."""

from __future__ import annotations

from torch import Tensor, nn


class TwoConvNet(nn.Module):
    """conv(c→w, k3, p1) · ReLU · pool2 · conv(w→2w, k3, p1) · ReLU · pool2 · linear(→classes).

    ``in_channels``, ``image_size`` and ``num_classes`` come from the data set config
    (``${dataset.in_channels}`` ...). With s = image_size // 4 the parameter count is
    (9·c·w + w) + (9·w·2w + 2w) + (2w·s² · k + k) for k classes: 1,828 on the 1×12×12, 4-class
    synthetic set and 9,098 on MNIST at the default width 8.
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, width: int = 8
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2 or image_size < 4 or width < 1:
            raise ValueError(
                f"TwoConvNet needs in_channels >= 1, num_classes >= 2, image_size >= 4 and "
                f"width >= 1; got in_channels={in_channels}, num_classes={num_classes}, "
                f"image_size={image_size}, width={width}."
            )
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Linear(2 * width * side * side, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))
