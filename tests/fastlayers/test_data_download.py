"""Verified downloads against a local HTTP server on 127.0.0.1, and load_dataset's file lookup."""
import gzip
import hashlib
import http.server
import os
import re
import struct
import threading

import numpy as np
import pytest

from fastlayers.data import DatasetError, DownloadError, download, load_dataset, write_idx
from fastlayers.data import datasets
from fastlayers.data.datasets import Resource

rng = np.random.default_rng(99)


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files from the server's directory; /status/<code>/... answers with that error;
    /short/<name> announces more bytes than it sends, then closes the connection."""

    def __init__(self, request, client_address, server):
        super().__init__(request, client_address, server, directory=server.root)

    def do_GET(self):
        self.server.requests.append(self.path)
        m = re.match(r"/status/(\d+)/", self.path)
        if m:
            self.send_error(int(m.group(1)))
            return
        if self.path.startswith("/short/"):
            body = b"x" * 1000
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) * 10))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.root, httpd.requests = str(root), []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def serve(server, name, data):
    path = os.path.join(server.root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return f"{server.url}/{name}"


# ----------------------------------------------------------------------------- download()

def test_download_checksum_match(server, tmp_path):
    data = rng.bytes(300_000)
    url = serve(server, "blob.bin", data)
    dest = tmp_path / "dest" / "blob.bin"  # the directory is created
    assert download(url, dest, sha256=sha256(data)) == str(dest)
    assert dest.read_bytes() == data
    assert os.listdir(tmp_path / "dest") == ["blob.bin"]


def test_download_md5_only(server, tmp_path):
    data = b"only an md5 is published for this file"
    url = serve(server, "a.txt", data)
    download(url, tmp_path / "a.txt", md5=hashlib.md5(data).hexdigest())
    assert (tmp_path / "a.txt").read_bytes() == data
    with pytest.raises(ValueError, match="sha256"):
        download(url, tmp_path / "b.txt")


def test_download_checksum_mismatch_leaves_nothing(server, tmp_path):
    data = b"tampered" * 1000
    url = serve(server, "blob.bin", data)
    dest_dir = tmp_path / "dest"
    dest_dir.mkdir()
    expected = sha256(b"the real thing")
    with pytest.raises(DownloadError) as info:
        download(url, dest_dir / "blob.bin", sha256=expected)
    message = str(info.value)
    assert url in message and expected in message and sha256(data) in message
    assert os.listdir(dest_dir) == []


def test_download_md5_mismatch_is_checked_too(server, tmp_path):
    data = b"payload"
    url = serve(server, "p", data)
    with pytest.raises(DownloadError, match="md5 mismatch"):
        download(url, tmp_path / "p", sha256=sha256(data), md5="0" * 32)
    assert os.listdir(tmp_path) == ["served"]


@pytest.mark.parametrize("code", [404, 500])
def test_download_http_error_leaves_nothing(server, tmp_path, code):
    dest_dir = tmp_path / "dest"
    dest_dir.mkdir()
    url = f"{server.url}/status/{code}/file.gz"
    with pytest.raises(DownloadError, match=f"HTTP error {code}") as info:
        download(url, dest_dir / "file.gz", sha256="0" * 64)
    assert url in str(info.value)
    assert os.listdir(dest_dir) == []


def test_download_cut_short_leaves_nothing(server, tmp_path):
    dest_dir = tmp_path / "dest"
    dest_dir.mkdir()
    url = f"{server.url}/short/file.gz"
    with pytest.raises(DownloadError) as info:
        download(url, dest_dir / "file.gz", sha256="0" * 64, timeout=10)
    assert url in str(info.value)
    assert os.listdir(dest_dir) == []


def test_download_connection_refused(tmp_path):
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.gz"
    with pytest.raises(DownloadError, match=re.escape(url)):
        download(url, tmp_path / "x.gz", sha256="0" * 64, timeout=5)
    assert os.listdir(tmp_path) == []


def test_download_tries_mirrors_in_order(server, tmp_path):
    data = b"mirrored"
    good = serve(server, "m/file", data)
    bad = f"{server.url}/status/404/file"
    tampered = serve(server, "t/file", b"other")
    download([bad, tampered, good], tmp_path / "file", sha256=sha256(data))
    assert (tmp_path / "file").read_bytes() == data
    assert server.requests == ["/status/404/file", "/t/file", "/m/file"]
    with pytest.raises(DownloadError) as info:
        download([bad, tampered], tmp_path / "other", sha256=sha256(data))
    assert bad in str(info.value) and tampered in str(info.value) and "2 mirrors" in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["file", "served"]


# ----------------------------------------------------------------------------- load_dataset

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def tiny_set(n_train=12, n_test=5):
    return (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, n_train).astype(np.uint8),
            rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, n_test).astype(np.uint8))


def write_idx_set(directory, arrays, gz=True):
    os.makedirs(directory, exist_ok=True)
    for base, a in zip(IDX_NAMES, arrays):
        write_idx(os.path.join(directory, base + (".gz" if gz else "")), a, compress=gz)


def assert_same(ds, arrays):
    for got, want in zip((ds.x_train, ds.y_train, ds.x_test, ds.y_test), arrays):
        np.testing.assert_array_equal(got, want)
    assert ds.y_train.dtype == np.int64 and ds.x_train.dtype == np.uint8


def publish(server, monkeypatch, attr, arrays, prefix):
    """Serve gzipped IDX files under /<prefix>/ and pin their checksums in datasets.<attr>."""
    resources = []
    for base, a in zip(IDX_NAMES, arrays):
        data = gzip.compress(bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
                             + a.tobytes())
        serve(server, f"{prefix}/{base}.gz", data)
        resources.append(Resource(base + ".gz", sha256(data)))
    monkeypatch.setattr(datasets, attr, tuple(resources))
    return f"{server.url}/{prefix}/"


@pytest.fixture
def no_system_copies(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "SYSTEM_DIRS", {})
    monkeypatch.setenv("FASTLAYERS_DATA", str(tmp_path / "cache"))


@pytest.mark.parametrize("name, attr", [("mnist", "MNIST_RESOURCES"),
                                        ("fashion-mnist", "FASHION_RESOURCES")])
def test_load_dataset_downloads_and_verifies(server, tmp_path, monkeypatch, no_system_copies,
                                             name, attr):
    arrays = tiny_set()
    base = publish(server, monkeypatch, attr, arrays, "mirror")
    target = tmp_path / "data"
    ds = load_dataset(name, data_dir=target, mirrors=[f"{server.url}/status/500/", base])
    assert_same(ds, arrays)
    assert ds.name == name and ds.source == str(target)
    assert sorted(os.listdir(target)) == sorted(b + ".gz" for b in IDX_NAMES)
    n_requests = len(server.requests)
    assert_same(load_dataset(name, data_dir=target, download=False), arrays)  # now local
    assert len(server.requests) == n_requests


def test_load_dataset_default_cache_dir(server, tmp_path, monkeypatch, no_system_copies):
    arrays = tiny_set()
    base = publish(server, monkeypatch, "MNIST_RESOURCES", arrays, "m")
    ds = load_dataset("mnist", mirrors=base)
    assert ds.source == str(tmp_path / "cache" / "mnist")
    assert_same(load_dataset("mnist", download=False), arrays)


def test_load_dataset_bad_checksum_leaves_nothing(server, tmp_path, monkeypatch,
                                                  no_system_copies):
    arrays = tiny_set()
    base = publish(server, monkeypatch, "MNIST_RESOURCES", arrays, "m")
    wrong = list(datasets.MNIST_RESOURCES)
    wrong[2] = Resource(wrong[2].filename, "f" * 64)
    monkeypatch.setattr(datasets, "MNIST_RESOURCES", tuple(wrong))
    target = tmp_path / "data"
    with pytest.raises(DownloadError, match="t10k-images-idx3-ubyte.gz: sha256 mismatch: "
                                            "expected f{64}"):
        load_dataset("mnist", data_dir=target, mirrors=base)
    # the two files that verified stay; the bad one and every temporary file are gone
    assert sorted(os.listdir(target)) == ["train-images-idx3-ubyte.gz",
                                          "train-labels-idx1-ubyte.gz"]


def test_load_dataset_download_404(server, tmp_path, monkeypatch, no_system_copies):
    publish(server, monkeypatch, "FASHION_RESOURCES", tiny_set(), "f")
    target = tmp_path / "data"
    with pytest.raises(DownloadError, match="HTTP error 404"):
        load_dataset("fashion-mnist", data_dir=target, mirrors=f"{server.url}/nowhere")
    assert os.listdir(target) == []


def test_missing_files_without_download(tmp_path, no_system_copies):
    with pytest.raises(DatasetError, match="download=True") as info:
        load_dataset("mnist", data_dir=tmp_path / "empty", download=False)
    assert str(tmp_path / "empty") in str(info.value)
    assert "train-images-idx3-ubyte" in str(info.value) and "mnist.npz" in str(info.value)
    with pytest.raises(DatasetError, match="fashion-mnist: dataset files not found"):
        load_dataset("fashion-mnist", download=False)


def test_unknown_dataset():
    with pytest.raises(DatasetError, match=r"unknown dataset 'cifar10'.*'mnist-10k', 'mnist', "
                                           r"'fashion-mnist'"):
        load_dataset("cifar10")
    with pytest.raises(ValueError):  # DatasetError is a ValueError
        load_dataset("MNIST")


def test_mnist_from_raw_idx_and_from_npz(tmp_path, no_system_copies):
    arrays = tiny_set()
    write_idx_set(tmp_path / "raw", arrays, gz=False)
    assert_same(load_dataset("mnist", data_dir=tmp_path / "raw", download=False), arrays)
    (tmp_path / "npz").mkdir()
    np.savez(tmp_path / "npz" / "mnist.npz", x_train=arrays[0], y_train=arrays[1],
             x_test=arrays[2], y_test=arrays[3])
    ds = load_dataset("mnist", data_dir=tmp_path / "npz", download=False)
    assert_same(ds, arrays)
    assert ds.source == str(tmp_path / "npz" / "mnist.npz")


def test_corrupt_local_file_is_reported(tmp_path, no_system_copies):
    arrays = tiny_set()
    write_idx_set(tmp_path, arrays)
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(gzip.decompress(bad.read_bytes())[:-1]))
    with pytest.raises(DatasetError, match="truncated") as info:
        load_dataset("fashion-mnist", data_dir=tmp_path, download=False)
    assert str(bad) in str(info.value)


def test_pinned_checksums_are_well_formed():
    for r in datasets.MNIST_RESOURCES + datasets.FASHION_RESOURCES:
        assert re.fullmatch(r"[0-9a-f]{64}", r.sha256) and re.fullmatch(r"[0-9a-f]{32}", r.md5)
    assert [r.filename for r in datasets.MNIST_RESOURCES] == [b + ".gz" for b in IDX_NAMES]
    assert [r.filename for r in datasets.FASHION_RESOURCES] == [b + ".gz" for b in IDX_NAMES]


FASHION_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason="dataset-fashion-mnist not installed")
@pytest.mark.parametrize("base, mtime", [("train-labels-idx1-ubyte", 1504176606),
                                         ("t10k-labels-idx1-ubyte", 1504176627)])
def test_debian_files_are_the_official_stream(base, mtime):
    """Debian rewrote the gzip header (dropped the file name, new timestamp); restoring the
    original header reproduces the official file, so the pinned digests describe the same data."""
    data = open(os.path.join(FASHION_DIR, base + ".gz"), "rb").read()
    assert data[:4] == b"\x1f\x8b\x08\x00"  # no FNAME field
    official = (b"\x1f\x8b\x08\x08" + struct.pack("<I", mtime) + data[8:10] + base.encode()
                + b"\x00" + data[10:])
    r = {r.filename: r for r in datasets.FASHION_RESOURCES}[base + ".gz"]
    assert hashlib.sha256(official).hexdigest() == r.sha256
    assert hashlib.md5(official).hexdigest() == r.md5
