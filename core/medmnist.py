"""Read a 2D MedMNIST `.npz` file directly (no download, no length checks on cut-down files)."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from core.dataset import Dataset, Split
from core.errors import StudioError
from core.imageio import Scan, to_model_array

if TYPE_CHECKING:
    from core.config import DataConfig

KEYS = [f"{split}_{kind}" for split in ("train", "val", "test") for kind in ("images", "labels")]


def class_names(path: Path, num_classes: int) -> list[str]:
    """Names from the medmnist package's metadata when it is installed and knows the file; else indices."""
    flag = re.sub(r"_\d+$", "", path.stem.lower())
    try:
        from medmnist import INFO  # optional dependency
    except ImportError:
        INFO = {}
    labels = INFO.get(flag, {}).get("label", {})
    if len(labels) == num_classes:
        return [labels[str(i)] for i in range(num_classes)]
    return [str(i) for i in range(num_classes)]


def _split(images: np.ndarray, labels: np.ndarray, *, size: int, channels: int, name: str, resize: str) -> Split:
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise StudioError(f"{name} has shape {images.shape}; expected (N, H, W) or (N, H, W, 3) images.")
    if images.dtype != np.uint8:
        raise StudioError(f"{name} holds {images.dtype} pixels; MedMNIST files hold uint8.")
    if not len(images):  # an empty split, refused by core.data with the others' checks
        out = torch.empty(0, channels, size, size, dtype=torch.uint8)
    elif images.shape[1] == images.shape[2] == size and images.shape[-1] == channels:
        out = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    else:
        scans = (Scan(im[..., 0] if im.shape[-1] == 1 else im) for im in images)
        out = torch.from_numpy(
            np.stack([to_model_array(s, size=size, channels=channels, resize=resize) for s in scans])
        )
    return Split(out, torch.from_numpy(labels.astype(np.int64)))


NOT_NPZ = "{name} is not a .npz file: MedMNIST data comes as NumPy .npz archives (such as pneumoniamnist.npz)."


def train_count(path: Path) -> int:
    """How many training images the MedMNIST file `path` holds, from its label array's header alone: a few
    bytes read, nothing else decompressed (for the Train tab's time estimate)."""
    try:
        with zipfile.ZipFile(path) as z, z.open("train_labels.npy") as f:
            version = np.lib.format.read_magic(f)  # 1.0, or 2.0 and 3.0 (a 4-byte header length)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = read(f)[0]
    except KeyError:
        raise StudioError(f"{path.name} is not a MedMNIST file: it lacks train_labels.") from None
    except zipfile.BadZipFile:
        raise StudioError(NOT_NPZ.format(name=path.name)) from None
    except (OSError, ValueError, EOFError) as e:
        raise StudioError(f"{path.name}: cannot read it as a .npz file ({e}).") from None
    return int(shape[0]) if shape else 0


def _arrays(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    """The arrays `keys` of the MedMNIST file `path` (only those are decompressed), once it is known to hold
    all of `KEYS`."""
    if not path.is_file():
        raise StudioError(f"{path.name}: no such MedMNIST file.")
    if not zipfile.is_zipfile(path):  # else numpy reads it as a pickle, and says to trust the file
        raise StudioError(NOT_NPZ.format(name=path.name))
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in KEYS if k not in npz.files]
            if missing:
                raise StudioError(f"{path.name} is not a MedMNIST file: it lacks {', '.join(missing)}.")
            return {k: npz[k] for k in keys}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise StudioError(f"{path.name}: cannot read it as a .npz file ({e}).") from None


def _labels(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each split's labels as one class index per image, checked."""
    labels = {}
    for split in ("train", "val", "test"):
        y = arrays[f"{split}_labels"]
        if y.ndim == 2 and y.shape[1] > 1:
            raise StudioError(
                f"{path.name} is a multi-label dataset ({y.shape[1]} labels per image); "
                "this studio trains single-label classifiers."
            )
        y = y.reshape(-1)
        if len(y) and (y.min() < 0 or not np.issubdtype(y.dtype, np.integer)):
            raise StudioError(f"{path.name}: labels must be non-negative integers.")
        labels[split] = y
    return labels


def _class_count(labels: dict[str, np.ndarray]) -> int:
    return int(max((int(y.max()) for y in labels.values() if len(y)), default=-1) + 1)


def split_sizes(path: Path) -> dict[str, int]:
    """The images each split of the MedMNIST file `path` holds ("train", "val", "test") and its "classes",
    from its label arrays alone (the images are not decompressed)."""
    labels = _labels(path, _arrays(path, [k for k in KEYS if k.endswith("_labels")]))
    return {split: len(y) for split, y in labels.items()} | {"classes": _class_count(labels)}


def load_medmnist(cfg: DataConfig) -> Dataset:
    """Load `cfg.data_path`, a MedMNIST-format `.npz`, resized to `cfg.image_size`."""
    path = Path(cfg.data_path)
    arrays = _arrays(path, KEYS)
    labels = _labels(path, arrays)
    for split, y in labels.items():
        n = len(arrays[f"{split}_images"])
        if len(y) != n:
            raise StudioError(f"{path.name}: {split} has {n} images but {len(y)} labels.")
    num_classes = _class_count(labels)
    channels = 3 if arrays["train_images"].ndim == 4 and arrays["train_images"].shape[-1] == 3 else 1
    splits = [
        _split(
            arrays[f"{s}_images"],
            labels[s],
            size=cfg.image_size,
            channels=channels,
            name=f"{path.name}:{s}",
            resize=cfg.resize,
        )
        for s in ("train", "val", "test")
    ]
    return Dataset(path.stem, class_names(path, num_classes), *splits)
