"""Datasets held in memory as uint8 tensors, and the loaders that batch them."""

from secateurs.data.loader import BatchLoader, Normalization
from secateurs.data.registry import DATASETS, load_data, load_dataset
from secateurs.data.types import Dataset, SplitInfo, Splits, TensorData, split_validation

__all__ = [
    "DATASETS",
    "BatchLoader",
    "Dataset",
    "Normalization",
    "SplitInfo",
    "Splits",
    "TensorData",
    "load_data",
    "load_dataset",
    "split_validation",
]
