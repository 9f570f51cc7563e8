"""Datasets held in memory as uint8 tensors, and the loaders that batch them."""

from secateurs.data.loader import BatchLoader, Normalization
from secateurs.data.registry import DATASETS, load_dataset
from secateurs.data.types import Dataset, Splits, TensorData, split_validation

__all__ = [
    "DATASETS",
    "BatchLoader",
    "Dataset",
    "Normalization",
    "Splits",
    "TensorData",
    "load_dataset",
    "split_validation",
]
