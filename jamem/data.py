"""MNIST and Fashion-MNIST through tensorflow-datasets, offline when the IDX files are at hand.

Where the data comes from, in order:
1. `data_dir` (argument / `--data-dir`), a folder holding `mnist/` and `fashion_mnist/` with the
   original IDX `.gz` files, handed to TFDS as its `manual_dir` (no network);
2. the `JAMEM_DATA_DIR` environment variable, the same layout;
3. TFDS's own download.

TFDS prepares the dataset once into `cache_dir` (default `$JAMEM_CACHE_DIR` or
`~/.cache/jamem`), checking the files' checksums; jamem then keeps a float32 `.npz` copy there,
so later loads take well under a second. Pixels map to [-1, 1] (Krotov & Hopfield 2016, App. A).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

DATASETS = ("mnist", "fashion_mnist")
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


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


def load(
    name: str = "mnist",
    *,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    validation_size: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 784) float32 in [-1, 1] and labels (n,) int32 of one split.

    Args:
        name: "mnist" or "fashion_mnist".
        split: "train", "test", or with `validation_size` > 0, "train" (the first
            60000 - validation_size training images) and "validation" (the last ones): the
            50k/10k protocol of the paper is `validation_size=10000`.
        data_dir: folder with `<name>/` IDX files (else JAMEM_DATA_DIR, else download).
        cache_dir: where TFDS prepares the data and jamem keeps its `.npz`.
    """
    if name not in DATASETS:
        raise ValueError(f"`name` must be one of {DATASETS}, got {name!r}.")
    if split not in ("train", "test", "validation"):
        raise ValueError(f"`split` must be 'train', 'test' or 'validation', got {split!r}.")
    if split == "validation" and validation_size <= 0:
        raise ValueError("`split='validation'` needs `validation_size` > 0 (e.g. 10000 for the 50k/10k split).")
    if not 0 <= validation_size < 60000:
        raise ValueError(f"`validation_size` must lie in [0, 60000), got {validation_size}.")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    manual = _manual_dir(name, data_dir)
    npz = cache / f"{name}.npz"
    if npz.is_file():
        arrays = dict(np.load(npz))
    else:
        arrays = _prepare_with_tfds(name, manual, cache)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{name}.{os.getpid()}.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, npz)
    source = "test" if split == "test" else "train"
    images, labels = arrays[f"{source}_images"], arrays[f"{source}_labels"]
    if split != "test" and validation_size:
        cut = images.shape[0] - validation_size
        images, labels = (images[:cut], labels[:cut]) if split == "train" else (images[cut:], labels[cut:])
    return to_unit_range(images), labels.astype(np.int32)


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """uint8 pixels 0..255 to float32 in [-1, 1]."""
    return (np.asarray(images, np.float32) / 127.5 - 1.0).astype(np.float32)
