"""MNIST and Fashion-MNIST through tensorflow-datasets, offline when the IDX files are at hand.

Where the data comes from, in order:
1. `data_dir` (argument / `--data-dir`), a folder holding `mnist/` and `fashion_mnist/` with the
   original IDX `.gz` files, handed to TFDS as its `manual_dir` (no network);
2. the `JAMEM_DATA_DIR` environment variable, the same layout;
3. TFDS's own download.

TFDS prepares the dataset once into `cache_dir` (default `$JAMEM_CACHE_DIR` or
`~/.cache/jamem`), checking the files' checksums; jamem then keeps a float32 `.npz` copy there,
so later loads take well under a second. Pixels map to [-1, 1] (Krotov & Hopfield 2016, App. A).

Where TFDS is not installed (an accelerator machine with no network, say), `source="idx"` (or
`"auto"`) reads the same IDX files with gzip and NumPy after checking their SHA-256 against the
checksums TFDS registers for them; both routes give identical arrays in the same order.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import time
from pathlib import Path

import numpy as np

DATASETS = ("mnist", "fashion_mnist")
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


# The SHA-256 TFDS (and torchvision) register for the original files.
IDX_SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}
SOURCES = ("auto", "tfds", "idx")
CACHE_VERSION = "tfds-v1"  # bump when the cached layout changes
_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
_SIZES = {"train": 60000, "test": 10000}


def _check_arrays(arrays: dict[str, np.ndarray]) -> None:
    for split, size in _SIZES.items():
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape != (size, 784) or labels.shape != (size,) or labels.max() > 9:
            raise ValueError(f"{split} arrays have shapes {images.shape}, {labels.shape}")


def default_cache_dir() -> Path:
    return Path(os.environ.get("JAMEM_CACHE_DIR", Path.home() / ".cache" / "jamem"))


def _manual_dir(name: str, data_dir) -> Path | None:
    root = data_dir if data_dir is not None else os.environ.get("JAMEM_DATA_DIR")
    if root is None:
        return None
    folder = Path(root) / name
    missing = [f for f in IDX_FILES if not (folder / f).is_file()]
    if missing:
        source = "`data_dir`" if data_dir is not None else "JAMEM_DATA_DIR"
        raise FileNotFoundError(
            f"{source} is {root!s}, but {folder} lacks {', '.join(missing)}. Put the original IDX .gz "
            f"files of {name} there (see shared/data/README.md), or unset it to let TFDS download."
        )
    return folder


def _prepare_with_tfds(name: str, manual_dir: Path | None, cache: Path) -> dict[str, np.ndarray]:
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise ImportError("tensorflow-datasets (and TensorFlow's CPU build) are needed to prepare data.") from err
    config = tfds.download.DownloadConfig(manual_dir=str(manual_dir)) if manual_dir else None
    builder = tfds.builder(name, data_dir=str(cache / "tfds"))
    try:
        # one download folder per dataset: MNIST and Fashion-MNIST files share their names, and TFDS
        # keys extracted files by name, so a shared folder hands one dataset the other's pixels
        builder.download_and_prepare(download_dir=str(cache / "tfds" / "downloads" / name), download_config=config)
    except Exception as err:  # noqa: BLE001 - re-raised with what to do about it
        text = f"{type(err).__name__}: {err}"
        if "checksum" in text.lower() or "size" in text.lower():
            raise ValueError(
                f"The {name} files in {manual_dir} do not match TFDS's registered checksums (corrupt or "
                f"truncated?). Replace them with the original IDX .gz files. ({text.splitlines()[0]})"
            ) from err
        if manual_dir is None:
            raise RuntimeError(
                f"TFDS could not download {name} ({text.splitlines()[0]}). Offline, set JAMEM_DATA_DIR or pass "
                f"`data_dir` to a folder holding {name}/ with the IDX .gz files {', '.join(IDX_FILES)}."
            ) from err
        raise RuntimeError(f"TFDS could not prepare {name} from {manual_dir}: {text.splitlines()[0]}") from err
    arrays = {}
    for split in ("train", "test"):
        data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))
        arrays[f"{split}_images"] = data["image"].reshape(len(data["label"]), -1)
        arrays[f"{split}_labels"] = data["label"].astype(np.int32)
    return arrays


def verify_idx(name: str, folder: str | os.PathLike) -> dict[str, bytes]:
    """The raw bytes of `name`'s four IDX files in `folder`, each checked against its registered
    SHA-256 (a truncated or altered file raises ValueError naming it)."""
    folder = Path(folder)
    contents = {}
    for file in IDX_FILES:
        raw = (folder / file).read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if digest != IDX_SHA256[name][file]:
            raise ValueError(
                f"{folder / file} does not match the registered checksum of {name} (corrupt or truncated?): "
                f"sha256 {digest}. Replace it with the original IDX .gz file."
            )
        contents[file] = raw
    return contents


def read_idx(name: str, folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """The four IDX files of `name` in `folder`, checksummed, as uint8 arrays (no TFDS needed).

    Image files: big-endian uint32 magic 2051, count, rows, cols, then the pixels; label files:
    magic 2049, count, then the labels.
    """
    contents = verify_idx(name, folder)
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        for kind, magic in (("images", 2051), ("labels", 2049)):
            file = f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"
            content = gzip.decompress(contents[file])
            header = np.frombuffer(content, ">u4", count=4 if kind == "images" else 2)
            if header[0] != magic:
                raise ValueError(f"{file} is not an IDX {kind} file (magic {header[0]}, expected {magic}).")
            values = np.frombuffer(content, np.uint8, offset=4 * header.size)
            arrays[f"{split}_{kind}"] = values.reshape(header[1], -1) if kind == "images" else values.copy()
    return arrays


def load(
    name: str = "mnist",
    *,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    validation_size: int = 0,
    source: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 784) float32 in [-1, 1] and labels (n,) int32 of one split.

    Args:
        name: "mnist" or "fashion_mnist".
        split: "train", "test", or with `validation_size` > 0, "train" (the first
            60000 - validation_size training images) and "validation" (the last ones): the
            50k/10k protocol of the paper is `validation_size=10000`.
        data_dir: folder with `<name>/` IDX files (else JAMEM_DATA_DIR, else download).
        cache_dir: where TFDS prepares the data and jamem keeps its `.npz`.
        source: "tfds" (prepare with TFDS, cached), "idx" (read the IDX files of `data_dir` /
            JAMEM_DATA_DIR directly, checksummed, not cached), or "auto": TFDS when it is
            installed, else the IDX files.
    """
    if name not in DATASETS:
        raise ValueError(f"`name` must be one of {DATASETS}, got {name!r}.")
    if split not in ("train", "test", "validation"):
        raise ValueError(f"`split` must be 'train', 'test' or 'validation', got {split!r}.")
    if split == "validation" and validation_size <= 0:
        raise ValueError("`split='validation'` needs `validation_size` > 0 (e.g. 10000 for the 50k/10k split).")
    if not 0 <= validation_size < 60000:
        raise ValueError(f"`validation_size` must lie in [0, 60000), got {validation_size}.")
    if source not in SOURCES:
        raise ValueError(f"`source` must be one of {SOURCES}, got {source!r}.")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    manual = _manual_dir(name, data_dir)
    if source == "auto":
        source = "tfds" if _has_tfds() else "idx"
    if source == "idx":
        if manual is None:
            raise ValueError(
                f"`source='idx'` reads the IDX files of {name} from `data_dir` or JAMEM_DATA_DIR; neither is set."
            )
        arrays = read_idx(name, manual)
    else:
        if manual is not None:
            verify_idx(name, manual)  # a damaged source file is noticed even when a cache exists
        # keyed by the dataset and the version of this layout; the sources are the registered files
        npz = cache / f"{name}-{CACHE_VERSION}.npz"
        if not npz.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            # runs started side by side on a fresh cache would each prepare the dataset, and TFDS's
            # final rename fails in all but the first: one prepares, the others wait and read its copy
            with _exclusive(cache / f".{name}.lock"):
                if not npz.is_file():
                    arrays = _prepare_with_tfds(name, manual, cache)
                    tmp = cache / f".{name}.{os.getpid()}.npz"
                    np.savez(tmp, **arrays)
                    os.replace(tmp, npz)
        try:
            with np.load(npz) as stored:
                arrays = {key: stored[key] for key in _ARRAYS}
            _check_arrays(arrays)
        except Exception as err:  # noqa: BLE001 - any damage to the cache file
            raise ValueError(
                f"The prepared cache {npz} is corrupt ({type(err).__name__}: {err}); delete it and load again to "
                f"rebuild it from the source files."
            ) from err
    stored = "test" if split == "test" else "train"
    images, labels = arrays[f"{stored}_images"], arrays[f"{stored}_labels"]
    if split != "test" and validation_size:
        cut = images.shape[0] - validation_size
        images, labels = (images[:cut], labels[:cut]) if split == "train" else (images[cut:], labels[cut:])
    return to_unit_range(images), labels.astype(np.int32)


@contextlib.contextmanager
def _exclusive(lock_file: Path, *, timeout: float | None = None):
    """Hold an advisory lock on `lock_file` (POSIX `flock`). Where there is none (Windows, some
    Lustre, FUSE or CIFS mounts) or the file cannot be opened, go on unlocked, as before the lock.

    With `timeout` (seconds), raise `TimeoutError` if the lock is still held by then: a holder that
    is paused (SIGSTOP) or hung would otherwise block every later process for good."""
    try:
        import fcntl

        handle = os.open(lock_file, os.O_RDONLY | os.O_CREAT, 0o666)  # flock needs no write access
    except (ImportError, OSError):
        yield
        return
    try:
        _flock(fcntl, handle, lock_file, timeout)
        yield
    finally:
        os.close(handle)  # releases the lock


def _flock(fcntl, handle: int, lock_file: Path, timeout: float | None) -> None:
    """Take the lock, waiting for ever (`timeout` None) or polling until `timeout` seconds pass."""
    deadline = None if timeout is None else time.monotonic() + timeout
    mode = fcntl.LOCK_EX if deadline is None else fcntl.LOCK_EX | fcntl.LOCK_NB
    while True:
        try:
            fcntl.flock(handle, mode)
            return
        except BlockingIOError:  # only without blocking: the lock is held
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"another process has held the lock {lock_file} for over {timeout:g} s (paused or hung?)"
                ) from None
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        except OSError:  # no flock on this file system: unlocked, as above
            return


def _has_tfds() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow_datasets") is not None


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """uint8 pixels 0..255 to float32 in [-1, 1]."""
    return (np.asarray(images, np.float32) / 127.5 - 1.0).astype(np.float32)
