"""Any torchvision classifier, untrained, sized to the data set and adapted to small images.

``torchvision_classifier(name, ...)`` builds ``torchvision.models.get_model(name, weights=None,
num_classes=...)`` (every name of ``torchvision.models.list_models(module=torchvision.models)``)
and adapts its stem so that small (28–32 px), grey or colour images fit:

=========================================  ==================================================
family                                     what is adapted
=========================================  ==================================================
ResNet, ResNeXt, Wide ResNet               ``conv1`` → 3×3 stride-1 conv, ``maxpool`` dropped
                                           (``small_stem``; the usual CIFAR variant)
DenseNet                                   ``features.conv0`` → 3×3 stride 1, ``pool0`` dropped
                                           (``small_stem``)
ViT                                        ``image_size`` passed to the constructor
GoogLeNet, Inception v3                    built with ``aux_logits=False`` (one output)
every family                               the first ``Conv2d`` takes ``in_channels`` inputs
=========================================  ==================================================

Other families (VGG, MobileNet, EfficientNet, RegNet, ConvNeXt, Swin, ...) keep their strided
stems. A model that still cannot classify a batch of ``in_channels×image_size×image_size`` images
after this is refused with one line (a ``ValueError``), found by one forward pass of two zero
images at construction (random state and BatchNorm statistics untouched). Measured with
torchvision 0.29: at 3×32×32 AlexNet, Inception v3 and MaxViT are refused; at 1×28×28 also VGG,
ConvNeXt and ViT-B/16 (16 ∤ 28); ResNet, DenseNet, MobileNet, EfficientNet, RegNet, GoogLeNet,
Swin, SqueezeNet and ShuffleNet run at both.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _conv_like(old: nn.Conv2d, in_channels: int, **changes: object) -> nn.Conv2d:
    """A fresh conv with ``old``'s settings, ``in_channels`` inputs and ``changes`` applied."""
    kw = {
        "kernel_size": old.kernel_size, "stride": old.stride, "padding": old.padding,
        "dilation": old.dilation, "groups": old.groups, "bias": old.bias is not None,
        "padding_mode": old.padding_mode,
    }  # fmt: skip
    kw.update(changes)
    return nn.Conv2d(in_channels, old.out_channels, **kw)


def _small_stem(model: nn.Module, in_channels: int) -> bool:
    """ResNet / DenseNet: 3×3 stride-1 first conv, no max-pool. Whether ``model`` was one."""
    from torchvision.models import DenseNet, ResNet

    small = {"kernel_size": 3, "stride": 1, "padding": 1}
    if isinstance(model, ResNet):
        model.conv1 = _conv_like(model.conv1, in_channels, **small)
        model.maxpool = nn.Identity()
        return True
    if isinstance(model, DenseNet):
        model.features.conv0 = _conv_like(model.features.conv0, in_channels, **small)
        model.features.pool0 = nn.Identity()
        return True
    return False


def _first_conv_in_channels(model: nn.Module, in_channels: int) -> None:
    """Give the first ``Conv2d`` (in module order: the stem) ``in_channels`` inputs."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels != in_channels:
                model.set_submodule(name, _conv_like(module, in_channels))
            return


def _unusable(name: str, shape: tuple[int, int, int], err: Exception) -> ValueError:
    detail = " ".join(str(err).split())[:160]
    return ValueError(
        f"model.name={name!r} cannot classify {shape[0]}×{shape[1]}×{shape[2]} images "
        f"({type(err).__name__}: {detail}); its stem cannot be adapted to this input size: "
        "use larger images, or another model (e.g. resnet18, mobilenet_v2, densenet121)."
    )


def _dry_run(model: nn.Module, name: str, shape: tuple[int, int, int], num_classes: int) -> None:
    """One training-mode forward of two zero images; RNG and buffers are left as they were."""
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            out = model(torch.zeros(2, *shape))
    except Exception as err:  # noqa: BLE001 - any failure means: not usable at this size
        raise _unusable(name, shape, err) from err
    finally:
        for k, v in model.named_buffers():
            v.copy_(buffers[k])
    if not isinstance(out, Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"model.name={name!r} returns {got} for a batch of 2, not logits of shape "
            f"(2, {num_classes}); pick a classifier that returns one logits tensor."
        )


def torchvision_classifier(
    name: str,
    in_channels: int = 3,
    num_classes: int = 10,
    image_size: int = 32,
    small_stem: bool = True,
) -> nn.Module:
    """``torchvision.models.get_model(name, weights=None)`` adapted as the module docstring says."""
    import torchvision.models as tvm

    names = tvm.list_models(module=tvm)
    if name not in names:
        raise ValueError(
            f"model.name={name!r} is not a torchvision classifier; accepted: any of "
            f"torchvision.models.list_models(module=torchvision.models), e.g. "
            f"{', '.join(n for n in names if n in ('resnet18', 'vgg11_bn', 'mobilenet_v2'))}."
        )
    kwargs: dict[str, object] = {"weights": None, "num_classes": num_classes}
    if name.startswith("vit_"):
        kwargs["image_size"] = image_size
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=True)
    shape = (in_channels, image_size, image_size)
    try:
        model = tvm.get_model(name, **kwargs)
    except (AssertionError, ValueError, RuntimeError) as err:  # e.g. ViT: patch ∤ image size
        raise _unusable(name, shape, err) from err
    if not (small_stem and _small_stem(model, in_channels)):
        _first_conv_in_channels(model, in_channels)
    _dry_run(model, name, shape, num_classes)
    return model
