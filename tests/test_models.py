import pytest
import torch

from accelopt.models import ReportCNN


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
