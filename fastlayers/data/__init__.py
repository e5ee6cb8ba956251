"""Datasets and mini-batches.

::

    from fastlayers.data import load_dataset, DataLoader

    ds = load_dataset("mnist-10k")            # embedded; or "mnist", "fashion-mnist"
    train = DataLoader(ds.x_train, ds.y_train, batch_size=128, shuffle=True, flatten=True)
    for xb, yb in train:                       # float32 (128, 784) in [0, 1], int64 (128,)
        ...

Readers for IDX files and Keras-style ``mnist.npz`` check every file strictly and raise
:class:`DatasetError` (a ``ValueError``) naming the file and the problem.
"""
from fastlayers.data.datasets import DATASETS, Dataset, default_data_dir, load_dataset
from fastlayers.data.download import DownloadError, download, file_digest
from fastlayers.data.idx import (DatasetError, read_idx, read_idx_images, read_idx_labels,
                                 read_idx_pair, read_mnist_npz, write_idx)
from fastlayers.data.loader import DataLoader
from fastlayers.data.sampler import DistributedSampler

__all__ = ["DATASETS", "DataLoader", "Dataset", "DatasetError", "DistributedSampler",
           "DownloadError", "default_data_dir", "download", "file_digest", "load_dataset", "read_idx", "read_idx_images",
           "read_idx_labels", "read_idx_pair", "read_mnist_npz", "write_idx"]
