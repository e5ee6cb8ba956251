"""Bad input to the data readers and the command line: each ends in a clear exception that names
the file, or (command line) exit status 2 and a one-line message naming the option."""
import gzip
import os
import zipfile

import numpy as np
import pytest

from fastlayers.data import DatasetError, read_idx, read_idx_images, read_idx_labels, read_mnist_npz
from tests.fastlayers.test_data_readers import IMAGES, LABELS, idx_bytes, npz_arrays

# ----------------------------------------------------------------------------- data readers

BIG = 2 ** 32 - 1  # the largest dimension an IDX header can declare


def raw(data):
    return lambda path: path.write_bytes(data)


def gz(data):
    return lambda path: path.write_bytes(gzip.compress(data))


def savez(**overrides):
    return lambda path: np.savez(path, **npz_arrays(**overrides))


def zipped(members):
    def write(path):
        with zipfile.ZipFile(path, "w") as zf:
            for name, blob in members.items():
                zf.writestr(name, blob)
    return write


def half_of(write):
    """A writer whose file is cut to its first half."""
    def cut(path):
        write(path)
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    return cut


def directory(path):
    path.mkdir()


def npy(path):
    with open(path, "wb") as f:
        np.save(f, IMAGES)


READER_CASES = [
    # (id, reader, file name, writer, message fragment (a regex))
    ("idx dims product 2**64 (wraps to 0 in int64)", read_idx_images, "images",
     raw(idx_bytes(IMAGES, dims=(2 ** 31, 2 ** 31, 4))), r"truncated IDX data.*2147483648"),
    ("idx dims product 2**64, gzipped", read_idx_images, "images.gz",
     gz(idx_bytes(IMAGES, dims=(2 ** 31, 2 ** 31, 4))), r"truncated IDX data.*2147483648"),
    ("idx dims product past int64", read_idx_images, "images",
     raw(idx_bytes(IMAGES, dims=(BIG, BIG, BIG))), r"truncated IDX data.*4294967295"),
    ("idx zero beside dims too big for numpy", read_idx_images, "images",
     raw(idx_bytes(IMAGES, dims=(0, BIG, BIG))), r"does not describe an array"),
    ("idx 70 dimensions", read_idx, "blob",
     raw(idx_bytes(IMAGES, magic=bytes([0, 0, 8, 70]), dims=(1,) * 70)), r"64"),
    ("idx label count past the file", read_idx_labels, "labels",
     raw(idx_bytes(LABELS, dims=(BIG,))), r"truncated IDX data"),
    ("idx path is a directory", read_idx_images, "images", directory, r"cannot be read"),
    ("idx truncated gzip", read_idx_images, "images.gz", half_of(gz(idx_bytes(IMAGES))),
     r"damaged gzip|truncated"),
    ("idx wrong magic", read_idx_images, "images.gz",
     gz(idx_bytes(IMAGES, magic=b"\x50\x4b\x03\x04")), r"magic"),
    ("idx label out of range", read_idx_labels, "labels",
     raw(idx_bytes(np.array([3, 11, 2], np.uint8))), r"outside 0\.\.9.*11"),
    ("npz random bytes", read_mnist_npz, "mnist.npz",
     raw(np.random.default_rng(5).bytes(4096)), r"not an \.npz archive"),
    ("npz a text file", read_mnist_npz, "mnist.npz", raw(b"x_train,y_train\n1,2\n"),
     r"not an \.npz archive"),
    ("npz a single .npy", read_mnist_npz, "mnist.npz", npy, r"not an \.npz archive"),
    ("npz a zip with other members", read_mnist_npz, "mnist.npz",
     zipped({"readme.txt": b"hello"}), r"missing key.*x_train.*readme\.txt"),
    ("npz an empty zip", read_mnist_npz, "mnist.npz", zipped({}), r"missing key"),
    ("npz member not a .npy", read_mnist_npz, "mnist.npz",
     zipped({f"{k}.npy": b"not an array" for k in npz_arrays()}), r"x_train: not a \.npy array"),
    ("npz object array", read_mnist_npz, "mnist.npz",
     savez(x_train=np.array([IMAGES[0], None], dtype=object)), r"x_train: holds Python objects"),
    ("npz object labels", read_mnist_npz, "mnist.npz",
     savez(y_test=np.array([1, "a", None], dtype=object)), r"y_test: holds Python objects"),
    ("npz truncated", read_mnist_npz, "mnist.npz", half_of(savez()), r"not a readable \.npz"),
    ("npz path is a directory", read_mnist_npz, "mnist.npz", directory, r"cannot be read"),
]


@pytest.mark.parametrize("reader, name, write, message",
                         [pytest.param(*c[1:], id=c[0]) for c in READER_CASES])
def test_bad_data_file(tmp_path, reader, name, write, message):
    path = tmp_path / name
    write(path)
    with pytest.raises(DatasetError, match=message) as info:
        reader(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ")
    assert "allow_pickle" not in text  # NumPy's hint invites unpickling an untrusted file
    assert os.listdir(tmp_path) == [name]  # the reader wrote nothing
