"""Bad input to the data readers and the command line: each ends in a clear exception that names
the file, or (command line) exit status 2 and a one-line message naming the option."""
import gzip
import os
import zipfile

import numpy as np
import pytest

from fastlayers import mnist
from fastlayers.data import (DatasetError, load_dataset, read_idx, read_idx_images,
                             read_idx_labels, read_mnist_npz, write_idx)
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


@pytest.mark.parametrize("kwargs, error, message", [
    pytest.param(dict(name="cifar10"), DatasetError, "unknown dataset 'cifar10'", id="unknown name"),
    pytest.param(dict(name="mnist", download="no"), TypeError, "download must be True or False",
                 id="download not a bool"),
    pytest.param(dict(name="mnist", data_dir=7), TypeError, "data_dir must be a path",
                 id="data_dir not a path"),
])
def test_bad_load_dataset_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        load_dataset(**kwargs)


# ----------------------------------------------------------------------------- command line

def idx_set(directory, n_train=64, n_test=16, corrupt=None):
    """The four MNIST IDX files in ``directory``; ``corrupt`` (a file name) is cut short."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte",
                  rng.integers(0, 256, (n, 28, 28), np.uint8))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte",
                  rng.integers(0, 10, n).astype(np.uint8))
    if corrupt:
        path = directory / corrupt
        path.write_bytes(path.read_bytes()[:-5])


def cli(argv, capsys):
    """Run the command line in this process: (exit status, stdout, stderr lines)."""
    try:
        status = mnist.main(argv + ["--no-progress"])
    except SystemExit as e:  # argparse's usage errors
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err.strip().splitlines()


MNIST_FROM = ["--dataset", "mnist", "--no-download", "--data-dir"]

CLI_CASES = [
    # (id, argv ("{tmp}" is the test's directory), what to write there first, message fragment)
    ("lr inf", ["--lr", "inf"], None, "argument --lr: must be a finite number > 0, got 'inf'"),
    ("lr overflowing to inf", ["--lr", "1e999"], None, "argument --lr: must be a finite"),
    ("lr nan", ["--lr", "nan"], None, "argument --lr: must be a finite number > 0, got 'nan'"),
    ("lr negative", ["--lr", "-0.1"], None, "argument --lr: must be a finite number > 0"),
    ("lr zero", ["--lr", "0"], None, "argument --lr: must be a finite number > 0"),
    ("lr not a number", ["--lr", "fast"], None, "argument --lr: must be a finite number > 0"),
    ("target accuracy nan", ["--target-accuracy", "nan"], None,
     "argument --target-accuracy: must be a fraction in (0, 1]"),
    ("target accuracy 0", ["--target-accuracy", "0"], None, "argument --target-accuracy:"),
    ("target accuracy above 1", ["--target-accuracy", "95"], None, "argument --target-accuracy:"),
    ("threads 0", ["--threads", "0"], None, "argument --threads: must be an integer >= 1"),
    ("threads too many", ["--threads", "4096"], None, "--threads must be at most"),
    ("batch size 0", ["--batch-size", "0"], None, "argument --batch-size: must be an integer >= 1"),
    ("batch size negative", ["--batch-size", "-5"], None, "argument --batch-size: must be"),
    ("batch size fractional", ["--batch-size", "2.5"], None, "argument --batch-size: must be"),
    ("epochs 0", ["--epochs", "0"], None, "argument --epochs: must be an integer >= 1"),
    ("seed negative", ["--seed", "-1"], None, "argument --seed: must be an integer >= 0"),
    ("unknown optimizer", ["--optimizer", "lbfgs"], None, "argument --optimizer: invalid choice"),
    ("json into a missing directory", ["--json", "{tmp}/no/such/dir/r.json"], None,
     "/no/such/dir does not exist"),
    ("json is a directory", ["--json", "{tmp}"], None, "--json '{tmp}': is a directory"),
    ("json empty", ["--json", ""], None, "--json '': is empty"),
    ("plot into a missing directory", ["--plot", "{tmp}/missing/curves.png"], None,
     "--plot '{tmp}/missing/curves.png': directory"),
    ("compare numpy on numpy", ["--compare-numpy", "--backend", "numpy"], None,
     "--compare-numpy needs --backend numba"),
    ("data dir for the embedded set", ["--data-dir", "{tmp}"], None, "--data-dir applies to"),
    ("dataset files missing", MNIST_FROM + ["{tmp}"], None, "not found; looked in ['{tmp}'"),
    ("dataset file truncated", MNIST_FROM + ["{tmp}"],
     lambda d: idx_set(d, corrupt="t10k-images-idx3-ubyte"),
     "{tmp}/t10k-images-idx3-ubyte: truncated IDX data"),
    ("no training images", MNIST_FROM + ["{tmp}"], lambda d: idx_set(d, n_train=0),
     "{tmp}: needs at least one training and one test image"),
    ("batch norm with batches of one", ["--model", "mlp-bn", "--batch-size", "1"], None,
     "--model mlp-bn uses batch norm, which cannot train on a batch of one sample"),
]


@pytest.mark.parametrize("argv, prepare, message",
                         [pytest.param(*c[1:], id=c[0]) for c in CLI_CASES])
def test_bad_command_line(tmp_path, capsys, argv, prepare, message):
    if prepare:
        prepare(tmp_path)
    status, out, err = cli([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    assert status == 2
    *usage, last = err
    assert last.startswith("fastlayers-mnist: error: ")
    assert message.replace("{tmp}", str(tmp_path)) in last
    assert all(line.startswith(("usage:", " ")) for line in usage)  # argparse's usage, or nothing
    assert "epoch" not in out  # nothing trained


def test_json_path_is_checked_before_loading_or_training(tmp_path, capsys):
    status, out, err = cli(["--json", str(tmp_path / "missing" / "r.json")], capsys)
    assert status == 2 and out == ""  # not even the dataset line: no work was done
    assert err[-1].startswith("fastlayers-mnist: error: --json")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_json_into_a_read_only_directory(tmp_path, capsys):
    tmp_path.chmod(0o500)
    try:
        status, out, err = cli(["--json", str(tmp_path / "r.json")], capsys)
    finally:
        tmp_path.chmod(0o700)
    assert status == 2 and out == "" and "is not writable" in err[-1]


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        mnist.main(MNIST_FROM + [str(tmp_path), "--debug"])


def test_batch_norm_drops_a_one_sample_last_batch(capsys):
    # 8,334 training images, 8334 % 641 == 1: without the drop, BatchNorm1d refuses the last batch.
    status, out, err = cli(["--model", "mlp-bn", "--batch-size", "641", "--epochs", "1"], capsys)
    assert status == 0, err
    lines = out.splitlines()
    note = [i for i, line in enumerate(lines) if line.startswith("note:")]
    epochs = [i for i, line in enumerate(lines) if "epoch  1:" in line]
    assert len(note) == 1 and len(epochs) == 1 and note[0] < epochs[0]
    assert "8334 % 641 == 1" in lines[note[0]]
