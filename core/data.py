"""Load a dataset by name: the built-in demo data, a MedMNIST `.npz`, or an image folder / CSV manifest.

Every source returns the same `Dataset` (uint8 images, labels, class names, train/val/test splits);
small datasets are then moved whole onto the training device so augmentation runs batched there.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch

from core import folder, medmnist, synthetic
from core.config import DataConfig, data_path_given, image_size_ok  # noqa: F401 - DataConfig re-exported: core.data.DataConfig
from core.dataset import Dataset, held_out, subset
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
    ok, message = data_path_given(cfg)
    if not ok:
        raise StudioError(message)


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load the dataset `cfg` names; raise `StudioError` with a plain message when it cannot."""
    _check_source(cfg)
    ok, message = image_size_ok(cfg.image_size)
    if not ok:
        raise StudioError(message)
    data = SOURCES[cfg.dataset](cfg)
    sizes = {"train": len(data.train), "val": len(data.val), "test": len(data.test)}
    check_sizes(cfg, sizes | {"classes": len(data.classes)})
    return data


def check_sizes(cfg: DataConfig, sizes: dict[str, int]) -> None:
    """Refuse data a run cannot train, choose its best epoch and be tested on (`split_sizes`' figures)."""
    name = Path(cfg.data_path).name if cfg.data_path else "the demo data"
    if sizes["train"] == 0:
        raise StudioError(f"{name}: the training split is empty.")
    if sizes["classes"] < 2:
        raise StudioError(f"{name}: a classifier needs at least two classes; this data has {sizes['classes']}.")
    for split, fraction, what in (("val", cfg.val_fraction, "validation"), ("test", cfg.test_fraction, "test")):
        if sizes[split]:
            continue
        message = (
            f"{name}: the {what} split is empty (a run picks its best epoch on validation images, then is tested)."
        )
        if cfg.dataset == "folder" and fraction > 0:
            fractions = (cfg.val_fraction, cfg.test_fraction)
            start = max(2, int(0.5 / fraction) - 1)  # below it, the class's share rounds to no image
            least = next(n for n in itertools.count(start) if held_out(n, *fractions)[split == "test"])
            message += (
                f" Drawn from the training images, it takes {fraction:.0%} of each class's, one image from {least} "
                f"on, and no class has {least}. Add images, or lay the folder out as train/, val/ and test/."
            )
        raise StudioError(message)


def split_sizes(cfg: DataConfig) -> dict[str, int]:
    """The images each split of `cfg`'s data gets ("train", "val", "test") and its "classes", without decoding
    an image (an image folder's files that would prove unreadable count); raises `StudioError` for data that
    loading would refuse: a wrong path or file, one class, an empty split. The studio checks a run's data so
    before making its folder."""
    _check_source(cfg)
    if cfg.dataset == "synthetic":
        data = cfg.resolved()
        sizes = {"train": data.synthetic_train, "val": data.synthetic_val, "test": data.synthetic_test}
        sizes["classes"] = len(synthetic.CLASSES)
    elif cfg.dataset == "medmnist":
        sizes = medmnist.split_sizes(Path(cfg.data_path))
    else:
        sizes = folder.split_sizes(cfg)
    check_sizes(cfg, sizes)
    return sizes


FOUND_DEPTH, FOUND_LIMIT = 2, 200


def found_data(root: str | Path, dataset: str) -> list[tuple[str, str]]:
    """What in the data folder `root` the source `dataset` can train on, for the Train tab to offer as
    (label, path relative to `root`): MedMNIST files with their training images (from the header alone), or
    image folders (class subfolders, or train/ val/ test/) and CSV manifests. Paths of up to `FOUND_DEPTH` parts,
    hidden names skipped, a folder found not looked into, at most `FOUND_LIMIT`."""
    root = Path(root)
    if dataset not in ("medmnist", "folder") or not root.is_dir():
        return []
    found: list[tuple[str, str]] = []
    level = [root]
    for _ in range(FOUND_DEPTH):  # paths of one part (in the data folder itself), then of two
        below = []
        for d in level:
            try:
                entries = sorted(e for e in d.iterdir() if not e.name.startswith("."))
            except OSError:
                continue
            for e in entries:
                rel = e.relative_to(root).as_posix()
                if dataset == "medmnist" and e.suffix.lower() == ".npz" and e.is_file():
                    try:
                        found.append((f"{rel} (MedMNIST, {medmnist.train_count(e):,} training images)", rel))
                    except StudioError:
                        continue  # an .npz of something else
                elif dataset == "folder" and e.suffix.lower() == ".csv" and e.is_file() and folder.is_manifest(e):
                    found.append((f"{rel} (CSV manifest)", rel))
                elif e.is_dir():
                    try:
                        kind = folder.describe(e) if dataset == "folder" else None
                    except OSError:  # a folder this user may not read
                        continue
                    if kind:
                        found.append((f"{rel}/ ({kind})", f"{rel}/"))
                    else:
                        below.append(e)
        level = below
    return found[:FOUND_LIMIT]


def train_count(cfg: DataConfig) -> int:
    """How many training images `cfg` gives, without loading them (`split_sizes`); raises `StudioError` as
    loading would."""
    return split_sizes(cfg)["train"]
