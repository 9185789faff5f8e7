"""Datasets and client partitioning for fedcompress.

Import is cheap (numpy only); flwr-datasets/``datasets`` are imported lazily, when a partition is first
computed.
"""

from fedcompress.data.base import FederatedDataset, cache_dir, default_data_dir
from fedcompress.data.partition import SCHEMES, partition, split_train_val
from fedcompress.data.registry import DATASETS, load_dataset

__all__ = [
    "DATASETS",
    "SCHEMES",
    "FederatedDataset",
    "cache_dir",
    "default_data_dir",
    "load_dataset",
    "partition",
    "split_train_val",
]
