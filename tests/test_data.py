"""Data loading through TFDS from the offline IDX files in ../shared/data."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from jamem import data

SHARED = Path(os.environ.get("JAMEM_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_data = pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="offline MNIST files not found")


@needs_data
def test_mnist_loads_real_data(cache):
    x, y = data.load("mnist", split="test", data_dir=SHARED, cache_dir=cache)
    assert x.shape == (10000, 784) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    # pixel mean 33.791 of 255 in the README, mapped to [-1, 1]
    assert float(x.mean()) == pytest.approx(33.791 / 127.5 - 1, abs=1e-3)
    train, _ = data.load("mnist", split="train", data_dir=SHARED, cache_dir=cache, validation_size=10000)
    val, _ = data.load("mnist", split="validation", data_dir=SHARED, cache_dir=cache, validation_size=10000)
    assert train.shape == (50000, 784) and val.shape == (10000, 784)
    assert (cache / f"mnist-{data.CACHE_VERSION}.npz").is_file()


@needs_data
def test_fashion_mnist_is_not_mnist_in_a_shared_cache(cache):
    # both datasets ship files with the same names; a shared TFDS download folder once mixed them up
    data.load("mnist", split="test", data_dir=SHARED, cache_dir=cache)
    x, y = data.load("fashion_mnist", split="test", data_dir=SHARED, cache_dir=cache)
    np.testing.assert_array_equal(np.bincount(y), [1000] * 10)
    assert float(x.mean()) == pytest.approx(73.147 / 127.5 - 1, abs=1e-3)  # README: pixel mean 73.147


def test_missing_files_give_clear_error(tmp_path):
    (tmp_path / "mnist").mkdir()
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz"):
        data.load("mnist", data_dir=tmp_path, cache_dir=tmp_path / "cache")


def _truncated_copy(tmp_path, name: str, keep) -> None:
    """A writable copy of the MNIST files in tmp_path/mnist with `name` cut to bytes[keep]."""
    folder = tmp_path / "mnist"
    shutil.copytree(SHARED / "mnist", folder)
    for f in folder.iterdir():
        f.chmod(0o644)
    (folder / name).write_bytes((folder / name).read_bytes()[keep])


@needs_data
def test_corrupt_file_gives_clear_error(tmp_path):
    _truncated_copy(tmp_path, "t10k-labels-idx1-ubyte.gz", slice(0, 1000))
    with pytest.raises(ValueError, match="checksum"):
        data.load("mnist", data_dir=tmp_path, cache_dir=tmp_path / "cache")


def test_bad_arguments():
    with pytest.raises(ValueError, match="name"):
        data.load("cifar10")
    with pytest.raises(ValueError, match="split"):
        data.load("mnist", split="dev")
    with pytest.raises(ValueError, match="validation_size"):
        data.load("mnist", split="validation")


@needs_data
def test_idx_source_reads_the_same_images_as_tfds(cache):
    # TFDS stores the examples in its own shuffled order; the IDX files keep the published order
    for split in ("train", "test"):
        tf_images, tf_labels = data.load("mnist", split=split, data_dir=SHARED, cache_dir=cache, source="tfds")
        idx_images, idx_labels = data.load("mnist", split=split, data_dir=SHARED, cache_dir=cache, source="idx")
        assert idx_images.dtype == np.float32 and idx_images.shape == tf_images.shape
        tf_order, idx_order = np.lexsort(tf_images.T), np.lexsort(idx_images.T)
        np.testing.assert_array_equal(tf_images[tf_order], idx_images[idx_order])
        np.testing.assert_array_equal(tf_labels[tf_order], idx_labels[idx_order])
    np.testing.assert_array_equal(idx_labels[:8], [7, 2, 1, 0, 4, 1, 4, 9])  # the t10k file's first labels


@needs_data
def test_idx_source_checks_checksums(tmp_path):
    _truncated_copy(tmp_path, "train-images-idx3-ubyte.gz", slice(0, -10))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz does not match the registered checksum"):
        data.load("mnist", data_dir=tmp_path, source="idx")


def test_idx_source_needs_a_folder(monkeypatch):
    monkeypatch.delenv("JAMEM_DATA_DIR", raising=False)
    with pytest.raises(ValueError, match="source='idx'"):
        data.load("mnist", source="idx")
    with pytest.raises(ValueError, match="`source`"):
        data.load("mnist", source="web")


@needs_data
def test_damaged_source_is_noticed_even_with_a_cache(tmp_path, cache):
    data.load("mnist", split="test", data_dir=SHARED, cache_dir=cache)  # the cache exists
    _truncated_copy(tmp_path, "train-labels-idx1-ubyte.gz", slice(0, -1))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz does not match the registered checksum"):
        data.load("mnist", split="test", data_dir=tmp_path, cache_dir=cache)


@needs_data
def test_corrupt_cache_says_how_to_rebuild(tmp_path, cache):
    shutil.copy(cache / f"mnist-{data.CACHE_VERSION}.npz", tmp_path / f"mnist-{data.CACHE_VERSION}.npz")
    damaged = tmp_path / f"mnist-{data.CACHE_VERSION}.npz"
    damaged.write_bytes(damaged.read_bytes()[:5000])
    with pytest.raises(ValueError, match="corrupt.*delete it"):
        data.load("mnist", data_dir=SHARED, cache_dir=tmp_path)


def _stand_in_arrays():
    digits = np.arange(60000, dtype=np.int32) % 10
    return {
        "train_images": np.zeros((60000, 784), np.uint8),
        "train_labels": digits,
        "test_images": np.full((10000, 784), 255, np.uint8),
        "test_labels": digits[:10000],
    }


def test_loads_side_by_side_on_a_fresh_cache_prepare_the_dataset_once(tmp_path, monkeypatch):
    # two runs started together (experiments/mnist_paper.sh seeds) both found no cache and both had
    # TFDS prepare it; TFDS's final rename then failed in the second with FileExistsError
    import threading
    import time

    monkeypatch.delenv("JAMEM_DATA_DIR", raising=False)
    prepared, preparing = [], threading.Event()

    def slow_prepare(name, manual_dir, cache):
        prepared.append(name)
        preparing.set()
        time.sleep(0.5)  # the second load looks for the cache while the first is still in here
        return _stand_in_arrays()

    monkeypatch.setattr(data, "_prepare_with_tfds", slow_prepare)
    results, errors = [], []

    def load():
        try:
            results.append(data.load("mnist", split="test", cache_dir=tmp_path, source="tfds"))
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=load) for _ in range(2)]
    threads[0].start()
    assert preparing.wait(timeout=60)
    threads[1].start()
    for thread in threads:
        thread.join()
    assert errors == [] and prepared == ["mnist"]
    for images, labels in results:
        np.testing.assert_array_equal(images, np.ones((10000, 784), np.float32))
        np.testing.assert_array_equal(labels, np.arange(10000) % 10)


def test_a_failed_preparation_leaves_the_next_load_free_to_prepare(tmp_path, monkeypatch):
    monkeypatch.delenv("JAMEM_DATA_DIR", raising=False)
    calls = []

    def failing_once(name, manual_dir, cache):
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError("TFDS could not download mnist")
        return _stand_in_arrays()

    monkeypatch.setattr(data, "_prepare_with_tfds", failing_once)
    with pytest.raises(RuntimeError, match="could not download"):
        data.load("mnist", cache_dir=tmp_path, source="tfds")
    images, _ = data.load("mnist", split="test", cache_dir=tmp_path, source="tfds")
    assert calls == ["mnist", "mnist"] and images.shape == (10000, 784)
