import pytest
import torch

from accelopt.models import CifarResNet, ReportCNN
from accelopt.models.resnet import PadShortcut


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_the_report():
    assert n_params(ReportCNN(in_channels=1, num_classes=10, image_size=28)) == 62_026
    assert n_params(ReportCNN(in_channels=3, num_classes=10, image_size=32)) == 68_106


@pytest.mark.parametrize(("c", "s", "features"), [(1, 28, 576), (3, 32, 1024)])
def test_shapes(c, s, features):
    m = ReportCNN(in_channels=c, image_size=s)
    assert m.classifier.in_features == features
    assert m(torch.zeros(5, c, s, s)).shape == (5, 10)


def test_softplus_is_smooth_and_relu_is_default():
    assert isinstance(ReportCNN().features[1], torch.nn.ReLU)
    sp = ReportCNN(activation="softplus", softplus_beta=5.0).features[1]
    assert isinstance(sp, torch.nn.Softplus) and sp.beta == 5.0


def test_bad_activation_names_value_and_choices():
    with pytest.raises(ValueError, match=r"activation='tanh'.*relu.*softplus"):
        ReportCNN(activation="tanh")


# -- He et al. 2016's CIFAR ResNets -----------------------------------------------------------
# Table 6 of "Deep Residual Learning for Image Recognition": 0.27M, 0.46M, 0.85M parameters.
@pytest.mark.parametrize(("depth", "paper_millions"), [(20, 0.27), (32, 0.46), (56, 0.85)])
def test_cifar_resnet_parameter_counts_match_the_paper(depth, paper_millions):
    m = CifarResNet(depth=depth, in_channels=3, num_classes=10)
    assert round(n_params(m) / 1e6, 2) == paper_millions
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    linears = [x for x in m.modules() if isinstance(x, torch.nn.Linear)]
    assert len(convs) + len(linears) == depth  # 6n + 2 weighted layers, no projection convs
    assert sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules()) == len(convs)


def test_cifar_resnet_shapes_and_option_a_shortcut():
    m = CifarResNet(depth=20, in_channels=1, num_classes=7, image_size=28)
    assert m(torch.zeros(3, 1, 28, 28)).shape == (3, 7)
    pad = PadShortcut(16, 32)
    x = torch.randn(2, 16, 8, 8)
    y = pad(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])  # the input, subsampled, in the middle
    assert not y[:, :8].any() and not y[:, 24:].any()  # new channels are zeros


def test_cifar_resnet_refuses_a_depth_that_is_not_6n_plus_2():
    with pytest.raises(ValueError, match=r"depth=21 is invalid.*6n\+2"):
        CifarResNet(depth=21)


def _train_tiny(make_cfg, *overrides: str) -> dict:
    from accelopt.train import train

    cfg = make_cfg(
        *overrides,
        "dataset.synthetic_train=96",
        "dataset.synthetic_test=32",
        "dataset.val_size=32",
        "trainer.limit_train_batches=2",
    )
    record = train(cfg)
    assert record["status"] == "completed"
    return record


def test_resnet20_trains_on_cifar_shaped_data(make_cfg):
    rec = _train_tiny(
        make_cfg, "model=resnet20", "dataset.in_channels=3", "dataset.image_size=32",
        "dataset.mean=[0.5,0.5,0.5]", "dataset.std=[0.25,0.25,0.25]",
    )  # fmt: skip
    assert rec["final"]["test/acc"] is not None
