import pytest
import torch

from accelopt.models import MLP, CifarResNet, ReportCNN, torchvision_classifier
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


# -- MLP ----------------------------------------------------------------------------------------
def test_mlp_parameter_count_is_the_closed_form():
    m = MLP(in_channels=1, num_classes=10, image_size=28, width=256, depth=2)
    assert n_params(m) == (784 * 256 + 256) + (256 * 256 + 256) + (256 * 10 + 10)
    assert m(torch.zeros(4, 1, 28, 28)).shape == (4, 10)
    custom = MLP(in_channels=3, num_classes=5, image_size=8, widths=[32, 16])
    assert n_params(custom) == (192 * 32 + 32) + (32 * 16 + 16) + (16 * 5 + 5)
    assert n_params(MLP(in_channels=3, image_size=32, depth=0)) == 3072 * 10 + 10


def test_mlp_softplus_and_bad_widths():
    assert isinstance(MLP(activation="softplus").layers[2], torch.nn.Softplus)
    with pytest.raises(ValueError, match=r"widths \[0\] are invalid"):
        MLP(widths=[0])


# -- torchvision classifiers ------------------------------------------------------------------
def test_torchvision_resnet18_gets_a_small_stem_for_grey_images():
    import torchvision

    m = torchvision_classifier("resnet18", in_channels=1, num_classes=7, image_size=28)
    ref = torchvision.models.resnet18(num_classes=7)  # the ImageNet stem: 7×7/2 conv, max-pool
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1) and m.conv1.in_channels == 1
    assert isinstance(m.maxpool, torch.nn.Identity)
    # only the stem conv differs: 64·1·3·3 weights instead of 64·3·7·7
    assert n_params(m) == n_params(ref) - 64 * 3 * 7 * 7 + 64 * 1 * 3 * 3
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 7)


def test_torchvision_other_family_gets_its_first_conv_in_channels():
    m = torchvision_classifier("mobilenet_v2", in_channels=1, num_classes=4, image_size=28)
    first = next(x for x in m.modules() if isinstance(x, torch.nn.Conv2d))
    assert first.in_channels == 1 and first.stride == (2, 2)  # strided stem kept
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 4)


def test_torchvision_dry_run_leaves_rng_and_batchnorm_statistics_alone():
    torch.manual_seed(0)
    m = torchvision_classifier("resnet18", in_channels=3, num_classes=10, image_size=16)
    after = torch.rand(1)
    torch.manual_seed(0)
    torchvision_classifier("resnet18", in_channels=3, num_classes=10, image_size=16)
    assert torch.equal(torch.rand(1), after)
    assert int(m.bn1.num_batches_tracked) == 0 and torch.equal(m.bn1.running_mean, torch.zeros(64))


@pytest.mark.parametrize(
    ("name", "c", "s", "match"),
    [
        ("alexnet", 3, 32, r"model.name='alexnet' cannot classify 3×32×32 images"),
        ("vit_b_16", 1, 28, r"model.name='vit_b_16' cannot classify 1×28×28"),
        ("resnet_18", 3, 32, r"model.name='resnet_18' is not a torchvision classifier"),
    ],
)
def test_torchvision_refuses_with_one_line(name, c, s, match):
    with pytest.raises(ValueError, match=match) as info:
        torchvision_classifier(name, in_channels=c, num_classes=10, image_size=s)
    assert "\n" not in str(info.value)


# -- every model through the real train() ------------------------------------------------------
def test_mlp_trains_with_input_size_from_the_data_set(make_cfg):
    rec = _train_tiny(make_cfg, "model=mlp", "model.width=32", "model.depth=1")
    assert rec["final"]["test/acc"] is not None


def test_torchvision_resnet18_trains(make_cfg):
    rec = _train_tiny(
        make_cfg, "model=torchvision", "model.name=resnet18", "dataset.in_channels=3",
        "dataset.mean=[0.5,0.5,0.5]", "dataset.std=[0.25,0.25,0.25]", "dataset.batch_size=16",
    )  # fmt: skip
    assert rec["final"]["test/acc"] is not None


def test_unusable_torchvision_model_is_a_config_error(make_cfg):
    from accelopt.config import ConfigError
    from accelopt.train import train

    cfg = make_cfg("model=torchvision", "model.name=alexnet")
    with pytest.raises(ConfigError, match=r"model.name='alexnet' cannot classify 1×12×12"):
        train(cfg)


# -- the model in run folder names ----------------------------------------------------------------
def test_model_tag_is_empty_for_the_default_model_only():
    from accelopt.models.tag import model_tag

    assert model_tag("cnn", "cnn", None) == ""
    assert model_tag("cnn", "resnet20", None) == "_resnet20"
    assert model_tag("cnn", "torchvision", "resnet18") == "_torchvision-resnet18"


@pytest.mark.parametrize(
    ("overrides", "run_end", "sweep_end"),
    [
        ([], "_synthetic_heavyball", "0_heavyball_lr0.02_seed1"),
        (["model=mlp"], "_synthetic_mlp_heavyball", "0_heavyball_mlp_lr0.02_seed1"),
        (
            ["model=torchvision", "model.name=vgg11"],
            "_synthetic_torchvision-vgg11_heavyball",
            "0_heavyball_torchvision-vgg11_lr0.02_seed1",
        ),
    ],
)
def test_run_folder_names_the_model_unless_it_is_the_default(overrides, run_end, sweep_end):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from accelopt.train import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose(
            "train", overrides=["dataset=synthetic", *overrides], return_hydra_config=True
        )
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    assert cfg.hydra.run.dir.endswith(run_end)
    assert cfg.hydra.sweep.subdir == sweep_end
    GlobalHydra.instance().clear()
