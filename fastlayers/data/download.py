"""Download a file with checksum verification; nothing is left behind unless it verifies.

The file is streamed into a temporary file in the destination directory while its digests are
computed; only when every expected digest matches is it moved into place with ``os.replace``. A
checksum mismatch, an HTTP or network error, a short read or an interrupt removes the temporary
file and raises :class:`DownloadError` naming the URL (and, for a mismatch, the expected and actual
digests). With several mirrors, each is tried in turn and the error lists every failure.
"""
import hashlib
import http.client
import os
import urllib.error
import urllib.request

from fastlayers._io import atomic_open
from fastlayers.data.idx import DatasetError

__all__ = ["DownloadError", "download", "file_digest"]

_CHUNK = 1 << 20
_ALGORITHMS = ("sha256", "md5")


class DownloadError(DatasetError):
    """A download failed, was cut short, or did not match its expected checksum."""


def file_digest(path, algorithm="sha256"):
    """Hex digest of a file's bytes."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch_one(url, dest, digests, timeout):
    """Download ``url`` to ``dest`` if it matches ``digests``; raise DownloadError otherwise."""
    hashes = {a: hashlib.new(a) for a in digests}
    # A mismatch or failure raises inside the block: the partial file is removed, dest untouched.
    with atomic_open(dest, suffix=".part") as out:
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "fastlayers"})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                length = resp.headers.get("Content-Length")
                received = 0
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    received += len(chunk)
                    out.write(chunk)
                    for h in hashes.values():
                        h.update(chunk)
        except urllib.error.HTTPError as e:
            raise DownloadError(f"{url}: HTTP error {e.code} {e.reason}") from e
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            # refused connection, DNS failure, timeout, a connection closed mid-body
            # (IncompleteRead), a malformed URL
            reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
            raise DownloadError(f"{url}: download failed ({reason})") from e
        if length is not None and length.isdigit() and received != int(length):
            raise DownloadError(f"{url}: download cut short: received {received} of "
                                f"{int(length)} bytes")
        for a, expected in digests.items():
            actual = hashes[a].hexdigest()
            if actual != expected.lower():
                raise DownloadError(f"{url}: {a} mismatch: expected {expected.lower()}, "
                                    f"got {actual} ({received} bytes); file discarded")


def download(urls, dest, sha256=None, md5=None, timeout=60.0):
    """Fetch the first of ``urls`` (one URL or a list of mirrors) that verifies, into ``dest``.

    Args:
        urls: a URL string or a sequence of mirror URLs for the same file, tried in order.
        dest: the destination path; its directory is created if needed.
        sha256, md5: expected hex digests. Every digest given is checked; at least one is required
            (SHA-256 is preferred; MD5 alone is accepted for files that only publish an MD5).
        timeout: seconds for the connection and each read.

    Returns:
        ``dest``.

    Raises:
        DownloadError: every mirror failed; the message lists each URL and why.
    """
    digests = {a: v for a, v in (("sha256", sha256), ("md5", md5)) if v}
    if not digests:
        raise ValueError("download: give the expected sha256 (preferred) or md5 of the file")
    if isinstance(urls, (str, bytes, os.PathLike)):
        urls = [urls]
    urls = [os.fspath(u) for u in urls]
    if not urls:
        raise ValueError("download: no URL given")
    dest = os.fspath(dest)
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    errors = []
    for url in urls:
        try:
            _fetch_one(url, dest, digests, timeout)
            return dest
        except DownloadError as e:
            errors.append(str(e))
    if len(errors) == 1:
        raise DownloadError(errors[0])
    raise DownloadError(f"could not download {os.path.basename(dest)} from any of "
                        f"{len(urls)} mirrors:\n  " + "\n  ".join(errors))
