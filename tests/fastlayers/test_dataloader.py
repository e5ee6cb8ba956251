"""DataLoader: coverage of every sample, drop_last, len, seeded shuffling, scaling, shapes, errors."""
import numpy as np
import pytest

import fastlayers
from fastlayers.data import DataLoader, load_dataset


def indexed(n, width=3):
    """Float inputs whose first column is the sample index, and labels = index % 10."""
    x = np.zeros((n, width), dtype=np.float64)
    x[:, 0] = np.arange(n)
    return x, (np.arange(n) % 10).astype(np.int64)


def epoch_ids(loader):
    return [xb[:, 0].astype(np.int64) for xb, _ in loader]


@pytest.mark.parametrize("n, batch", [(10, 3), (12, 4), (5, 8), (1, 1), (100, 7)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_sample_once_per_epoch(n, batch, shuffle):
    x, y = indexed(n)
    loader = DataLoader(x, y, batch_size=batch, shuffle=shuffle)
    assert len(loader) == -(-n // batch)
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == len(loader)
        ids = np.concatenate([xb[:, 0] for xb, _ in batches]).astype(np.int64)
        assert sorted(ids) == list(range(n))
        for xb, yb in batches:  # labels travel with their samples
            np.testing.assert_array_equal(yb, xb[:, 0].astype(np.int64) % 10)
        sizes = [len(xb) for xb, _ in batches]
        assert sizes[:-1] == [batch] * (len(sizes) - 1) and sizes[-1] == n - batch * (len(sizes) - 1)
        if not shuffle:
            np.testing.assert_array_equal(ids, np.arange(n))


@pytest.mark.parametrize("n, batch, expected", [(10, 3, 3), (12, 4, 3), (5, 8, 0), (8, 8, 1)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_drop_last(n, batch, expected, shuffle):
    x, y = indexed(n)
    loader = DataLoader(x, y, batch_size=batch, shuffle=shuffle, drop_last=True)
    assert len(loader) == expected
    batches = list(loader)
    assert len(batches) == expected
    assert all(len(xb) == batch and len(yb) == batch for xb, yb in batches)
    ids = np.concatenate([xb[:, 0] for xb, _ in batches]) if batches else np.array([])
    assert len(set(ids.tolist())) == expected * batch


def test_empty_dataset():
    x, y = indexed(0)
    loader = DataLoader(x, y, batch_size=4, shuffle=True)
    assert len(loader) == 0 and list(loader) == []


def test_new_permutation_each_epoch():
    fastlayers.manual_seed(0)
    loader = DataLoader(*indexed(50), batch_size=50, shuffle=True)
    epochs = [epoch_ids(loader)[0] for _ in range(4)]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not np.array_equal(epochs[a], epochs[b])
        assert not np.array_equal(epochs[a], np.arange(50))


def test_manual_seed_reproduces_the_sequence():
    x, y = indexed(37)

    def run(seed):
        fastlayers.manual_seed(seed)
        loader = DataLoader(x, y, batch_size=5, shuffle=True)
        return [np.concatenate(epoch_ids(loader)) for _ in range(3)]

    first, again, other = run(7), run(7), run(8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


def test_permutation_drawn_when_the_epoch_starts():
    x, y = indexed(30)
    fastlayers.manual_seed(1)
    loader = DataLoader(x, y, batch_size=30, shuffle=True)
    it = iter(loader)
    fastlayers.manual_seed(99)  # does not change the epoch already started
    got = next(it)[0][:, 0]
    fastlayers.manual_seed(1)
    np.testing.assert_array_equal(got, next(iter(loader))[0][:, 0])


def test_uint8_images_scaled_float32_cnn_shape():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    x[0, 0, 0], x[0, 0, 1] = 0, 255
    y = rng.integers(0, 10, 20).astype(np.uint8)
    xb, yb = next(iter(DataLoader(x, y, batch_size=8)))
    assert xb.shape == (8, 1, 28, 28) and xb.dtype == np.float32 and xb.flags.c_contiguous
    assert yb.shape == (8,) and yb.dtype == np.int64
    np.testing.assert_array_equal(xb[:, 0], x[:8].astype(np.float32) / np.float32(255))
    assert xb[0, 0, 0, 0] == 0.0 and xb[0, 0, 0, 1] == 1.0
    np.testing.assert_array_equal(yb, y[:8])


def test_flatten_and_float64():
    x = np.random.default_rng(1).integers(0, 256, (9, 28, 28), dtype=np.uint8)
    y = np.arange(9) % 10
    batches = list(DataLoader(x, y, batch_size=4, flatten=True, dtype=np.float64))
    assert [xb.shape for xb, _ in batches] == [(4, 784), (4, 784), (1, 784)]
    assert all(xb.dtype == np.float64 for xb, _ in batches)
    np.testing.assert_array_equal(np.concatenate([xb for xb, _ in batches]),
                                  x.reshape(9, 784) / 255.0)


@pytest.mark.parametrize("shape, flatten, out", [
    ((6, 784), False, (3, 784)),
    ((6, 3, 8, 8), False, (3, 3, 8, 8)),
    ((6, 3, 8, 8), True, (3, 192)),
    ((6, 5, 7), False, (3, 1, 5, 7)),
])
def test_shapes(shape, flatten, out):
    x = np.ones(shape, dtype=np.float32)
    xb, _ = next(iter(DataLoader(x, np.zeros(6, np.int64), batch_size=3, flatten=flatten)))
    assert xb.shape == out


def test_float_inputs_are_cast_not_scaled():
    x = np.linspace(-3, 300, 24).reshape(6, 4)  # float64
    xb, _ = next(iter(DataLoader(x, np.zeros(6, np.int32), batch_size=6)))
    assert xb.dtype == np.float32
    np.testing.assert_array_equal(xb, x.astype(np.float32))


@pytest.mark.parametrize("shuffle", [False, True])
def test_yielded_arrays_are_the_callers(shuffle):
    x, y = indexed(12)
    x = x.astype(np.float32)
    saved = x.copy()
    batches = []
    for xb, yb in DataLoader(x, y, batch_size=4, shuffle=shuffle):
        batches.append((xb, yb))
        kept = xb.copy()
        xb += 1000  # writing into a batch leaves the dataset alone
        yb[:] = -1
        xb -= 1000
        np.testing.assert_array_equal(xb, kept)
    np.testing.assert_array_equal(x, saved)
    np.testing.assert_array_equal(y, np.arange(12) % 10)
    ids = np.concatenate([xb[:, 0] for xb, _ in batches])  # earlier batches not overwritten
    assert sorted(ids.tolist()) == list(range(12))


def test_mnist10k_epoch():
    ds = load_dataset("mnist-10k")
    fastlayers.manual_seed(0)
    loader = DataLoader(ds.x_train, ds.y_train, batch_size=128, shuffle=True, flatten=True)
    assert len(loader) == 66
    labels = np.concatenate([yb for _, yb in loader])
    np.testing.assert_array_equal(np.bincount(labels), np.bincount(ds.y_train))
    assert not np.array_equal(labels, ds.y_train)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(batch_size=-3), ValueError, "batch_size must be >= 1"),
    (dict(batch_size=2.5), TypeError, "batch_size must be an integer"),
    (dict(batch_size=True), TypeError, "batch_size must be an integer"),
    (dict(dtype=np.int32), TypeError, "dtype must be float32 or float64"),
    (dict(shuffle="yes"), TypeError, "shuffle must be True or False"),
    (dict(drop_last=1), TypeError, "drop_last must be True or False"),
    (dict(flatten=None), TypeError, "flatten must be True or False"),
])
def test_bad_arguments(kwargs, error, message):
    x, y = indexed(4)
    with pytest.raises(error, match=message):
        DataLoader(x, y, **kwargs)


@pytest.mark.parametrize("x, y, error, message", [
    (np.zeros((4, 2)), np.zeros(3, np.int64), ValueError, "x has 4 samples but y has 3 labels"),
    ([[0.0]] * 4, np.zeros(4, np.int64), TypeError, "x must be a numpy.ndarray"),
    (np.zeros((4, 2)), [0, 1, 2, 3], TypeError, "y must be a numpy.ndarray"),
    (np.zeros(4), np.zeros(4, np.int64), ValueError, "x must have a sample dimension"),
    (np.zeros((4, 2), np.int32), np.zeros(4, np.int64), TypeError, "x must be uint8"),
    (np.zeros((4, 2)), np.zeros(4), TypeError, "y must hold integer class labels"),
    (np.zeros((4, 2)), np.zeros((4, 1), np.int64), ValueError, r"y must have shape \(N,\)"),
])
def test_bad_arrays(x, y, error, message):
    with pytest.raises(error, match=message):
        DataLoader(x, y)


def test_repr():
    loader = DataLoader(*indexed(10), batch_size=4, drop_last=True)
    assert "batch_size=4" in repr(loader) and "batches=2" in repr(loader)


def test_shuffled_uint8_batches_are_correct_and_independent():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (23, 4, 4), dtype=np.uint8)
    x[:, 0, 0] = np.arange(23)  # tag each image with its index
    y = np.arange(23) % 10
    fastlayers.manual_seed(3)
    loader = DataLoader(x, y, batch_size=5, shuffle=True)
    kept = []
    for (xa, ya), (xb, yb) in zip(loader, loader):  # two epochs in flight at once
        for xs, ys in ((xa, ya), (xb, yb)):
            ids = np.rint(xs[:, 0, 0, 0] * 255).astype(np.int64)
            np.testing.assert_array_equal(xs[:, 0], x[ids] / np.float32(255))
            np.testing.assert_array_equal(ys, y[ids])
            kept.append((xs, ids))
    for xs, ids in kept:  # nothing handed out earlier was overwritten later
        np.testing.assert_array_equal(xs[:, 0], x[ids] / np.float32(255))
    assert sorted(np.concatenate([ids for _, ids in kept[::2]]).tolist()) == list(range(23))


def test_batch_size_larger_than_the_data_allocates_only_the_data():
    x = np.arange(5 * 2 * 2, dtype=np.uint8).reshape(5, 2, 2)
    # A buffer of batch_size rows would be 4 PB: MemoryError.
    batches = list(DataLoader(x, np.arange(5), batch_size=10 ** 15, shuffle=True))
    assert len(batches) == 1
    assert sorted(np.rint(batches[0][0][:, 0, 0, 0] * 255).astype(int).tolist()) == [0, 4, 8, 12, 16]


@pytest.mark.parametrize("shuffle", [False, True])
def test_non_contiguous_uint8_images(shuffle):
    # A strided view has no flat (N, D) view: its batches are gathered first, with the same result.
    rng = np.random.default_rng(2)
    base = rng.integers(0, 256, (12, 6, 10), dtype=np.uint8)
    x = base[:, :, ::2]
    assert not x.flags.c_contiguous
    y = np.arange(12)
    fastlayers.manual_seed(1)
    got = list(DataLoader(x, y, batch_size=5, shuffle=shuffle))
    fastlayers.manual_seed(1)
    want = list(DataLoader(np.ascontiguousarray(x), y, batch_size=5, shuffle=shuffle))
    assert len(got) == len(want) == 3
    for (xa, ya), (xb, yb) in zip(got, want):
        assert xa.flags.c_contiguous and xa.shape == xb.shape
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(xa, x[ya][:, None] / np.float32(255))
        np.testing.assert_array_equal(ya, yb)
