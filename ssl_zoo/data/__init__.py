"""Datasets (decoded uint8 images, no random augmentation) and batched views."""
from ssl_zoo.data.datasets import DatasetBundle, ImageDataset, load_dataset

__all__ = ["DatasetBundle", "ImageDataset", "load_dataset"]
