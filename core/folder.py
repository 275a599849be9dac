"""Image folders and CSV manifests: PNG, JPEG, TIFF, BMP and DICOM files labelled by folder or by CSV.

Layouts:
- ``ROOT/<class>/<files>``: split into train/val/test by a seeded, stratified draw;
- ``ROOT/train/<class>/...`` with optional ``ROOT/val/`` and ``ROOT/test/``: the missing splits are
  drawn from train;
- ``manifest.csv`` with columns ``path,label`` (and optionally ``split``), paths relative to the CSV.

Unreadable files stop the load with a message naming each of them, unless `skip_bad_files` is set, in
which case they are left out and listed in `Dataset.skipped` (the trainer writes them to train.log).
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from core import isolated
from core.dataset import SPLITS, Dataset, held_out, stratified_split, subset
from core.errors import StudioError
from core.imageio import read_scan, to_model_array

if TYPE_CHECKING:
    from core.config import DataConfig

# Files that sit beside scans in real folders and exports and are never scans themselves: notes, indexes, and
# the viewer software a PACS puts on a study's CD.
NOT_SCANS = {
    ".txt", ".csv", ".json", ".md", ".db", ".ini", ".xml", ".yaml", ".yml", ".html", ".htm", ".pdf", ".py",
    ".exe", ".dll", ".inf", ".bat", ".cmd", ".msi", ".cab", ".jar", ".js", ".css", ".xsl", ".ico", ".sh",
}  # fmt: skip
NOT_SCAN_NAMES = {"dicomdir", "__macosx"}  # a DICOM media index (no pixels); macOS resource forks in a ZIP
MANIFEST_COLUMNS = {"path", "label"}  # a CSV manifest's header holds these (and optionally "split")
MAX_LISTED = 10


def may_be_scan(parts: tuple[str, ...]) -> bool:
    """Whether a file at relative path `parts` may be a scan: none of its parts hidden or a `NOT_SCAN_NAMES`,
    its suffix not one of `NOT_SCANS`."""
    return (
        bool(parts)
        and not any(part.startswith(".") or part.lower() in NOT_SCAN_NAMES for part in parts)
        and Path(parts[-1]).suffix.lower() not in NOT_SCANS
    )


def scan_files(folder: Path) -> list[Path]:
    """The files under `folder` that may be scans (`may_be_scan`), in order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and may_be_scan(p.relative_to(folder).parts))


def _class_folders(root: Path) -> dict[str, list[Path]]:
    classes = {d.name: scan_files(d) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    return {name: files for name, files in classes.items() if files}


def _decode(files: list[Path], *, skip_bad: bool) -> tuple[list, list[str]]:
    """Decode files in parallel; return the scans (None where a file was unreadable) and the errors."""

    def one(path: Path):
        try:
            return read_scan(path), None
        except StudioError as e:
            return None, str(e)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(one, files))
    isolated.retire_idle()  # the decoder workers this took, but one (a run needs none of them from here)
    errors = [err for _, err in results if err]
    if errors and not skip_bad:
        shown = "\n  ".join(errors[:MAX_LISTED])
        more = f"\n  ... and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
        raise StudioError(
            f"{len(errors)} of {len(files)} files could not be read:\n  {shown}{more}\n"
            "Fix or remove them, or pass --skip-bad-files to leave them out."
        )
    return [scan for scan, _ in results], errors


def _build(entries: list[tuple[Path, str, str]], cfg: DataConfig, name: str) -> Dataset:
    """entries: (file, class name, split or 'all'). Splits a file layout lacks are drawn from train."""
    scans, skipped = _decode([p for p, _, _ in entries], skip_bad=cfg.skip_bad_files)
    kept = [(scan, label, split) for scan, (_, label, split) in zip(scans, entries, strict=True) if scan is not None]
    if not kept:
        raise StudioError(f"{name}: no readable scans were found.")
    classes = sorted({label for _, label, _ in kept})
    channels = 3 if any(scan.channels == 3 for scan, _, _ in kept) else 1
    images = torch.from_numpy(
        np.stack([to_model_array(s, size=cfg.image_size, channels=channels, resize=cfg.resize) for s, _, _ in kept])
    )
    labels = torch.tensor([classes.index(label) for _, label, _ in kept], dtype=torch.int64)
    owner = np.array([split for _, _, split in kept])

    def where(split: str) -> torch.Tensor:
        return torch.from_numpy(np.nonzero(owner == split)[0])

    given = {s: subset(images, labels, where(s)) for s in SPLITS if (owner == s).any()}
    pool = given.get("train") or subset(images, labels, where("all"))
    tr, va, te = stratified_split(
        pool.labels,
        val_fraction=0.0 if "val" in given else cfg.val_fraction,
        test_fraction=0.0 if "test" in given else cfg.test_fraction,
        seed=cfg.seed,
    )
    train = subset(pool.images, pool.labels, tr)
    val = given.get("val") or subset(pool.images, pool.labels, va)
    test = given.get("test") or subset(pool.images, pool.labels, te)
    scans = [scan for scan, _, _ in kept]
    burned = sum(bool(scan.info.get("burned_in_annotation")) for scan in scans)
    return Dataset(name, classes, train, val, test, skipped, dicom_modalities(scans), burned)


def dicom_modalities(scans: list) -> list[str] | None:
    """The modalities of scans that are all DICOM files naming theirs (`Dataset.modalities`); else None: a
    model trained on them can say that a CT slice is not its kind of scan, one trained on PNGs cannot."""
    if not scans or any(scan.info.get("format") != "DICOM" for scan in scans):
        return None
    found = {scan.info.get("modality") for scan in scans}
    return None if found & {None, "unknown"} else sorted(found)


def _from_manifest(path: Path) -> list[tuple[Path, str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise StudioError(f"{path.name}: cannot read the CSV manifest ({e}).") from None
    if not rows or not MANIFEST_COLUMNS <= set(rows[0]):
        raise StudioError(f"{path.name}: a manifest needs a header with the columns 'path' and 'label'.")
    entries = []
    for n, row in enumerate(rows, start=2):
        split = (row.get("split") or "all").strip().lower()
        if split not in (*SPLITS, "all"):
            raise StudioError(f"{path.name}, line {n}: split must be train, val or test, not '{split}'.")
        if not row["path"] or not row["label"]:
            raise StudioError(f"{path.name}, line {n}: path and label must not be empty.")
        entries.append(((path.parent / row["path"].strip()), row["label"].strip(), split))
    return entries


def _layout(root: Path) -> dict[str, Path]:
    """The split folders of `root` (train/, val/, test/, any case) when it has train/; else all of it."""
    subdirs = {d.name.lower(): d for d in root.iterdir() if d.is_dir()}
    if "train" in subdirs:
        return {s: subdirs[s] for s in SPLITS if s in subdirs}
    return {"all": root}


def _from_folder(root: Path) -> list[tuple[Path, str, str]]:
    entries = []
    for split, folder in _layout(root).items():
        for label, files in _class_folders(folder).items():
            entries.extend((p, label, split) for p in files)
    return entries


def is_manifest(path: Path) -> bool:
    """Whether the CSV file `path` has a manifest's header (its first line alone is read)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return MANIFEST_COLUMNS <= set(header)


def describe(root: Path) -> str | None:
    """How a listing of the data folder names `root` when it is an image folder `load_folder` reads (split
    folders, or two classes or more); else None. Cheap on a large folder: a class folder is looked into only
    until its first scan."""
    layout = _layout(root)
    if "all" not in layout:
        return "image folder with " + " ".join(f"{s}/" for s in layout)
    classes = [
        d
        for d in root.iterdir()
        if d.is_dir()
        and not d.name.startswith(".")
        and any(p.is_file() and may_be_scan(p.relative_to(d).parts) for p in d.rglob("*"))
    ]
    return f"image folder, {len(classes)} classes" if len(classes) >= 2 else None


def _entries(path: Path) -> list[tuple[Path, str, str]]:
    """(file, class name, split or 'all') for each file of the class-per-subfolder tree or manifest `path`."""
    if path.is_file() and path.suffix.lower() == ".csv":
        entries = _from_manifest(path)
    elif path.is_dir():
        entries = _from_folder(path)
    else:
        raise StudioError(f"{path.name or path}: no such folder or CSV manifest.")
    if not entries:
        raise StudioError(
            f"{path.name}: no scans found. Put each class's files in its own subfolder (ROOT/<class>/...)."
        )
    return entries


def load_folder(cfg: DataConfig) -> Dataset:
    """Load a class-per-subfolder tree or a CSV manifest at `cfg.data_path`."""
    path = Path(cfg.data_path)
    return _build(_entries(path), cfg, path.stem if path.is_file() else path.name)


def split_sizes(cfg: DataConfig) -> dict[str, int]:
    """The images each split of `cfg`'s folder or manifest gets ("train", "val", "test") and its "classes",
    from the file listing alone, drawn as `_build` draws them (no file is decoded, so files that would be
    skipped as unreadable count)."""
    entries = _entries(Path(cfg.data_path))
    given = Counter(split for _, _, split in entries)
    fractions = (0.0 if given["val"] else cfg.val_fraction, 0.0 if given["test"] else cfg.test_fraction)
    pool = Counter(label for _, label, split in entries if split == ("train" if given["train"] else "all"))
    sizes = {"train": 0, "val": given["val"], "test": given["test"]}
    for n in pool.values():
        n_val, n_test = held_out(n, *fractions)
        sizes["train"] += n - n_val - n_test
        sizes["val"] += n_val
        sizes["test"] += n_test
    return sizes | {"classes": len({label for _, label, _ in entries})}
