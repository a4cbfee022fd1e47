"""Image data: named datasets, verified downloads, file readers, a loader and augmentations.

from whitebox.data import DataLoader, load_dataset, RandomCrop
train = load_dataset("mnist5k", "train")
for images, labels in DataLoader(train, batch_size=128, augment=RandomCrop(28, padding=2)):
    ...
"""

from whitebox.data.augment import Augment, Compose, RandomCrop, RandomHorizontalFlip
from whitebox.data.cifar import read_batch, read_cifar10, read_meta
from whitebox.data.datasets import DATASETS, ImageDataset, available_datasets, load_dataset
from whitebox.data.download import ChecksumError, cache_dir, fetch
from whitebox.data.idx import read_idx
from whitebox.data.loader import DataLoader
from whitebox.data.multicrop import ColorJitter, MultiCrop, RandomResizedCrop

__all__ = [
    "DATASETS",
    "Augment",
    "ChecksumError",
    "ColorJitter",
    "Compose",
    "DataLoader",
    "ImageDataset",
    "MultiCrop",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "available_datasets",
    "cache_dir",
    "fetch",
    "load_dataset",
    "read_batch",
    "read_cifar10",
    "read_idx",
    "read_meta",
]
