"""Load a dataset by name: the built-in demo data, a MedMNIST `.npz`, or an image folder / CSV manifest.

Every source returns the same `Dataset` (uint8 images, labels, class names, train/val/test splits);
small datasets are then moved whole onto the training device so augmentation runs batched there.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core import folder, medmnist, synthetic
from core.config import DataConfig, image_size_ok  # noqa: F401 - DataConfig re-exported: core.data.DataConfig
from core.dataset import Dataset, subset
from core.errors import StudioError
from core.folder import load_folder
from core.medmnist import load_medmnist


def load_synthetic(cfg: DataConfig) -> Dataset:
    cfg = cfg.resolved()
    sizes = (cfg.synthetic_train, cfg.synthetic_val, cfg.synthetic_test)
    if min(sizes) < 1:
        raise StudioError("the demo data needs at least one image in each split.")
    images, labels, masks = synthetic.render(
        sum(sizes),
        size=cfg.image_size,
        seed=cfg.seed,
        spec=synthetic.SyntheticSpec(lesion_contrast=cfg.synthetic_contrast),
    )
    edges = [0, sizes[0], sizes[0] + sizes[1], sum(sizes)]
    splits = [subset(images, labels, torch.arange(a, b), masks) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return Dataset("synthetic", list(synthetic.CLASSES), *splits)


SOURCES = {"synthetic": load_synthetic, "medmnist": load_medmnist, "folder": load_folder}


def _check_source(cfg: DataConfig) -> None:
    if cfg.dataset not in SOURCES:
        raise StudioError(f"unknown dataset '{cfg.dataset}'; choose one of {', '.join(SOURCES)}.")
    if cfg.dataset != "synthetic" and not cfg.data_path:
        raise StudioError(f"the {cfg.dataset} dataset needs --data-path.")


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load the dataset `cfg` names; raise `StudioError` with a plain message when it cannot."""
    _check_source(cfg)
    ok, message = image_size_ok(cfg.image_size)
    if not ok:
        raise StudioError(message)
    data = SOURCES[cfg.dataset](cfg)
    if len(data.train) == 0:
        raise StudioError("the training split is empty.")
    if len(data.classes) < 2:
        raise StudioError("a classifier needs at least two classes.")
    return data


def train_count(cfg: DataConfig) -> int:
    """How many training images `cfg` gives, without loading them (about, for an image folder, whose
    unreadable files are only found when decoded); raises `StudioError` as loading would."""
    _check_source(cfg)
    if cfg.dataset == "synthetic":
        return cfg.synthetic_train
    if cfg.dataset == "medmnist":
        return medmnist.train_count(Path(cfg.data_path))
    return folder.train_count(cfg)
