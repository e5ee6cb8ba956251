"""Writes that must not be lost: to a temporary file beside the target, synced, then a rename (and
the directory synced, so the rename itself survives a crash)."""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_open(path, suffix=".tmp"):
    """Open a temporary file in ``path``'s directory for binary writing; when the block ends without
    an exception, flush it to disk and rename it to ``path``. On an exception the temporary file is
    removed and ``path`` is untouched."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _sync_directory(directory)


def _sync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:          # not every platform opens directories
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
