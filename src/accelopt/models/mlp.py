"""A fully connected classifier: flatten, ``depth`` hidden layers of ``width`` units, linear."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from accelopt.models.cnn import _activation


class MLP(nn.Module):
    """flatten(c·s·s) · [linear(→width) · act] × depth · linear(→classes).

    The input size ``in_channels · image_size²`` comes from the data set (784 on MNIST, 3,072
    on CIFAR-10). ``widths`` (a list) sets each hidden layer's width and overrides
    ``width``/``depth``; ``depth=0`` is multinomial logistic regression. ``activation``:
    ``relu`` or ``softplus`` (β = ``softplus_beta``), as for the CNN.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        width: int = 256,
        depth: int = 2,
        widths: Sequence[int] | None = None,
        activation: str = "relu",
        softplus_beta: float = 5.0,
    ) -> None:
        super().__init__()
        hidden = [int(w) for w in widths] if widths is not None else [width] * depth
        if in_channels < 1 or num_classes < 2 or image_size < 1 or depth < 0:
            raise ValueError(
                f"MLP needs in_channels >= 1, num_classes >= 2, image_size >= 1 and depth >= 0; "
                f"got in_channels={in_channels}, num_classes={num_classes}, "
                f"image_size={image_size}, depth={depth}."
            )
        if any(w < 1 for w in hidden):
            raise ValueError(f"MLP hidden widths {hidden} are invalid: each must be >= 1.")
        layers: list[nn.Module] = [nn.Flatten()]
        size = in_channels * image_size * image_size
        for w in hidden:
            layers += [nn.Linear(size, w), _activation(activation, softplus_beta)]
            size = w
        layers.append(nn.Linear(size, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
