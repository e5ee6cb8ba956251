"""Readers for the two on-disk forms of MNIST-like data, with strict checks.

* IDX files (LeCun's format, gzipped or raw; gzip is detected by its magic bytes, not the name)::

      bytes 0-1   0x00 0x00
      byte  2     type code: 0x08 = unsigned byte (the only type these datasets use)
      byte  3     number of dimensions: 3 for images (N, rows, cols), 1 for labels (N,)
      then        one big-endian uint32 per dimension, then the data, row-major

  so the magic number is 0x00000803 for images and 0x00000801 for labels, and the file length must
  be exactly ``4 + 4 * ndim + prod(dims)``.

* Keras-style ``mnist.npz`` (``x_train``, ``y_train``, ``x_test``, ``y_test``), loaded with
  ``allow_pickle=False``.

Every reader returns uint8 images shaped (N, 28, 28) and int64 labels shaped (N,). A corrupt,
truncated or mislabelled file raises :class:`DatasetError` (a ``ValueError``) naming the file and
what is wrong.
"""
import gzip
import math
import os
import struct
import zipfile
import zlib

import numpy as np

from fastlayers._io import atomic_open

__all__ = ["DatasetError", "read_idx", "read_idx_images", "read_idx_labels", "read_idx_pair",
           "read_mnist_npz", "check_pair", "write_idx"]

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08


class DatasetError(ValueError):
    """A dataset file is missing, corrupt, truncated or inconsistent, or a dataset is unknown."""


def _fail(path, msg):
    raise DatasetError(f"{os.fspath(path)}: {msg}")


def _open(path):
    """Open ``path`` for binary reading, through gzip if it starts with the gzip magic bytes."""
    f = open(path, "rb")
    head = f.read(2)
    f.seek(0)
    if head == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f, mode="rb"), f
    return f, f


def _open_checked(path, opener=_open):
    """``opener(path)``, with a missing or unreadable file reported as DatasetError."""
    try:
        return opener(path)
    except FileNotFoundError:
        _fail(path, "file not found")
    except OSError as e:
        _fail(path, f"cannot be read ({e.strerror or e})")


def _read_exact(f, buf):
    """Fill ``buf`` (a writable memoryview) from ``f``; return the number of bytes read."""
    got = 0
    while got < len(buf):
        n = f.readinto(buf[got:])
        if not n:
            break
        got += n
    return got


def read_idx(path, ndim=None):
    """Read an unsigned-byte IDX file into a uint8 array shaped by its header.

    Args:
        path: the file, gzipped or raw.
        ndim: if given, the number of dimensions the header must declare (3 images, 1 labels).

    Raises:
        DatasetError: wrong magic number or type code, unexpected number of dimensions, a file
            shorter or longer than its header says, or a damaged gzip stream.
    """
    f, raw = _open_checked(path)
    try:
        with raw, f:
            head = f.read(4)
            if len(head) < 4:
                _fail(path, f"truncated IDX file: {len(head)} bytes, too short for the 4-byte magic")
            if head[0] != 0 or head[1] != 0:
                _fail(path, f"not an IDX file: magic number 0x{head.hex()} does not start with 0x0000")
            if head[2] != _UBYTE:
                _fail(path, f"unsupported IDX type code 0x{head[2]:02x} (magic 0x{head.hex()}); "
                            f"expected 0x08 (unsigned byte)")
            nd = head[3]
            if ndim is not None and nd != ndim:
                what = {3: "an image file (magic 0x00000803)", 1: "a label file (magic 0x00000801)"}
                _fail(path, f"expected {what.get(ndim, f'{ndim} dimensions')}, got magic "
                            f"0x{head.hex()} ({nd} dimensions)")
            dims_raw = f.read(4 * nd)
            if len(dims_raw) < 4 * nd:
                _fail(path, f"truncated IDX header: {nd} dimensions declared, "
                            f"{len(dims_raw) // 4} present")
            dims = struct.unpack(f">{nd}I", dims_raw)
            size = math.prod(dims)  # Python ints: no int64 wrap-around for absurd headers
            expected_len = 4 + 4 * nd + size
            # A corrupt header must not make us allocate gigabytes: the data cannot exceed the
            # file (raw), or 1032x the file (deflate's maximum compression ratio).
            on_disk = os.fstat(raw.fileno()).st_size
            if expected_len > (on_disk if f is raw else 1032 * on_disk + 1024):
                _fail(path, f"truncated IDX data: header {dims} needs {expected_len} bytes "
                            f"(uncompressed), the file holds {on_disk} bytes"
                            f"{' (compressed)' if f is not raw else ''}")
            try:
                out = np.empty(dims, dtype=np.uint8)
            except ValueError as e:  # over 64 dimensions, or a 0 beside dims too big for NumPy
                _fail(path, f"header {dims} does not describe an array NumPy can hold ({e})")
            got = _read_exact(f, memoryview(out.reshape(-1)).cast("B"))
            if got < size:
                _fail(path, f"truncated IDX data: header {dims} needs {expected_len} bytes "
                            f"(uncompressed), file has {4 + 4 * nd + got}")
            extra = len(f.read(1 << 16))
            if extra:
                _fail(path, f"IDX file longer than its header says: header {dims} needs "
                            f"{expected_len} bytes (uncompressed), found at least {extra} extra")
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        _fail(path, f"damaged gzip stream ({type(e).__name__}: {e})")
    return out


def read_idx_images(path, image_shape=IMAGE_SHAPE):
    """Read an IDX image file: uint8 (N, rows, cols), checked against ``image_shape``."""
    x = read_idx(path, ndim=3)
    if image_shape is not None and x.shape[1:] != tuple(image_shape):
        _fail(path, f"images are {x.shape[1]}x{x.shape[2]}, expected "
                    f"{image_shape[0]}x{image_shape[1]}")
    return x


def read_idx_labels(path, num_classes=NUM_CLASSES):
    """Read an IDX label file: int64 (N,), every value checked to be in [0, num_classes)."""
    y = read_idx(path, ndim=1)
    _check_labels(path, y, num_classes)
    return y.astype(np.int64)


def _check_labels(path, y, num_classes, key=None):
    where = f"{key}: " if key else ""
    if y.size and num_classes is not None and (y.min() < 0 or y.max() >= num_classes):
        bad = y[(y < 0) | (y >= num_classes)]
        _fail(path, f"{where}{bad.size} label(s) outside 0..{num_classes - 1} "
                    f"(first: {bad[0]})")


def check_pair(path, x, y, what=""):
    """Check that there is one label per image."""
    if len(x) != len(y):
        _fail(path, f"{what}{len(y)} labels for {len(x)} images")


def read_idx_pair(images_path, labels_path, image_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES):
    """Read a matching (images, labels) pair of IDX files; the counts must agree."""
    x = read_idx_images(images_path, image_shape)
    y = read_idx_labels(labels_path, num_classes)
    if len(x) != len(y):
        raise DatasetError(f"{os.fspath(labels_path)}: {len(y)} labels, but "
                           f"{os.fspath(images_path)} holds {len(x)} images")
    return x, y


_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first member; an empty zip


def _npz_member(path, npz, key):
    """``npz[key]`` as an ndarray; a member that is not a plain .npy array raises DatasetError."""
    try:
        a = npz[key]
    except ValueError as e:
        if "allow_pickle" in str(e):  # NumPy's hint would invite loading untrusted pickles
            _fail(path, f"{key}: holds Python objects (an object array); only numeric arrays "
                        f"are read, since loading objects would run pickle")
        _fail(path, f"{key}: cannot be read (ValueError: {e})")
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError,
            RuntimeError) as e:  # damaged, unsupported-compression or encrypted zip members
        _fail(path, f"{key}: cannot be read ({type(e).__name__}: {e})")
    if not isinstance(a, np.ndarray):  # NpzFile returns a member without the .npy magic as bytes
        _fail(path, f"{key}: not a .npy array ({len(a)} bytes without the .npy header)")
    return a


def read_mnist_npz(path, image_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES):
    """Read a Keras-style ``mnist.npz``.

    Returns ``(x_train, y_train, x_test, y_test)``: uint8 (N, 28, 28) images and int64 (N,) labels.
    Object arrays are refused (``allow_pickle=False``): nothing in the file is unpickled.
    """
    out = {}
    with _open_checked(path, lambda p: open(p, "rb")) as fh:
        # Checked here because np.load treats anything that is neither a zip nor a .npy as a pickle.
        if fh.read(4) not in _ZIP_MAGIC:
            _fail(path, "not an .npz archive (a zip of .npy arrays): no zip signature at the start")
        fh.seek(0)
        try:
            npz = np.load(fh, allow_pickle=False)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
            _fail(path, f"not a readable .npz archive ({type(e).__name__}: {e})")
        with npz:
            missing = [k for k in _NPZ_KEYS if k not in npz.files]
            if missing:
                _fail(path, f"missing key(s) {missing}; found {sorted(npz.files)}, "
                            f"expected {list(_NPZ_KEYS)}")
            for k in _NPZ_KEYS:
                out[k] = _npz_member(path, npz, k)
    for split in ("train", "test"):
        xk, yk = f"x_{split}", f"y_{split}"
        x, y = out[xk], out[yk]
        if x.dtype != np.uint8:
            _fail(path, f"{xk} has dtype {x.dtype}, expected uint8")
        if x.ndim != 3 or (image_shape is not None and x.shape[1:] != tuple(image_shape)):
            want = "H, W" if image_shape is None else f"{image_shape[0]}, {image_shape[1]}"
            _fail(path, f"{xk} has shape {x.shape}, expected (N, {want})")
        if not np.issubdtype(y.dtype, np.integer):
            _fail(path, f"{yk} has dtype {y.dtype}, expected an integer dtype")
        if y.ndim != 1:
            _fail(path, f"{yk} has shape {y.shape}, expected (N,)")
        if len(x) != len(y):
            _fail(path, f"{yk} has {len(y)} labels for {len(x)} images in {xk}")
        _check_labels(path, y, num_classes, key=yk)
        out[xk] = np.ascontiguousarray(x)
        out[yk] = y.astype(np.int64)
    return tuple(out[k] for k in _NPZ_KEYS)


def write_idx(path, array, compress=None):
    """Write a uint8 array as an IDX file (gzipped if ``compress`` or if the name ends in .gz).

    Mostly for tests and for converting data; the write is atomic (temp file, then ``os.replace``).
    """
    a = np.ascontiguousarray(array)
    if a.dtype != np.uint8:
        raise TypeError(f"write_idx: array must be uint8, got {a.dtype}")
    path = os.fspath(path)
    if compress is None:
        compress = path.endswith(".gz")
    payload = bytes([0, 0, _UBYTE, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
    if compress:
        payload = gzip.compress(payload, mtime=0)
    _atomic_write_bytes(path, payload)


def _atomic_write_bytes(path, data):
    with atomic_open(path) as f:
        f.write(data)
