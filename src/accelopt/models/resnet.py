"""He et al.'s CIFAR ResNets (ResNet-20/32/44/56/110, depth 6n+2), option-A shortcuts.

"Deep Residual Learning for Image Recognition" (He, Zhang, Ren, Sun; CVPR 2016), section 4.2:
a 3×3 conv with 16 filters, then three stages of ``n`` basic blocks on feature maps of 16, 32
and 64 channels (the first block of stages 2 and 3 subsamples with stride 2), global average
pooling and one linear layer: ``6n + 2`` weighted layers. Every conv is followed by BatchNorm.
Shortcuts are identities; where a block halves the map and doubles the channels the shortcut
takes every second pixel and pads the new channels with zeros (the paper's option A, no
parameters). Parameters with 10 classes: ResNet-20 269,722 (the paper's "0.27M"), ResNet-32
464,154 ("0.46M"), ResNet-56 853,018 ("0.85M").
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PadShortcut(nn.Module):
    """Option A: subsample by 2 (every second row and column), zero-pad the extra channels."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.extra = out_planes - in_planes

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, ::2, ::2]
        front = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, front, self.extra - front))


class BasicBlock(nn.Module):
    """relu(bn(conv3×3(relu(bn(conv3×3(x))))) + shortcut(x))."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        changes = stride != 1 or in_planes != planes
        self.shortcut = PadShortcut(in_planes, planes) if changes else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-``depth`` for small images: conv3×3(c→16) · 3 stages × n blocks · avg-pool · linear.

    ``depth = 6n + 2`` (20, 32, 44, 56, 110, ...). ``width``: channels of the first stage (the
    paper's 16; stages have width, 2·width, 4·width). ``image_size`` is only checked (global
    average pooling makes the network size-agnostic; two stride-2 stages need at least 4 px).
    """

    def __init__(
        self,
        depth: int = 20,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        width: int = 16,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(
                f"depth={depth} is invalid: a CIFAR ResNet has 6n+2 layers (n >= 1), e.g. 20, "
                "32, 44, 56 or 110."
            )
        if in_channels < 1 or num_classes < 2 or image_size < 4 or width < 1:
            raise ValueError(
                f"CifarResNet needs in_channels >= 1, num_classes >= 2, image_size >= 4 and "
                f"width >= 1; got in_channels={in_channels}, num_classes={num_classes}, "
                f"image_size={image_size}, width={width}."
            )
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        blocks: list[nn.Module] = []
        in_planes = width
        for stage, planes in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # He et al. 2015

    def forward(self, x: Tensor) -> Tensor:
        out = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))
