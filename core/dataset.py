"""The in-memory dataset every source returns: uint8 image tensors, labels, class names, three splits."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from core.errors import StudioError

SPLITS = ("train", "val", "test")


def burned_in_files(count: int, whose: str = "the data's") -> str:
    """`Dataset.burned_in` in words, as the run's log, its report and the Train tab say it: "One of the data's
    DICOM files says that text is burned into its pixels", "3 of the data's DICOM files say ... their pixels"."""
    if count == 1:
        return f"One of {whose} DICOM files says that text is burned into its pixels"
    return f"{count:,} of {whose} DICOM files say that text is burned into their pixels"


@dataclass
class Split:
    """One split. images uint8 (N, C, H, W); labels int64 (N,); masks bool (N, H, W) where known."""

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.numel())

    def to(self, device: torch.device | str) -> Split:
        masks = None if self.masks is None else self.masks.to(device)
        return Split(self.images.to(device), self.labels.to(device), masks)


@dataclass
class Dataset:
    """A labelled dataset with fixed train/val/test splits."""

    name: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    skipped: list[str] = field(default_factory=list)  # files left out as unreadable, with the reason
    # the DICOM modalities (CR, CT, MR...) of a dataset of DICOM files only, each with its Modality; else None
    modalities: list[str] | None = None
    # how many of its scans are DICOM files that say text is burned into their pixels (may identify a patient)
    burned_in: int = 0

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise StudioError(f"unknown split '{name}'; choose one of {', '.join(SPLITS)}.")
        return getattr(self, name)

    def to(self, device: torch.device | str) -> Dataset:
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device))

    def nbytes(self) -> int:
        return sum(s.images.numel() + s.labels.numel() * 8 for s in (self.train, self.val, self.test))

    def summary(self) -> dict:
        """Split sizes and per-class counts, for logs and reports."""
        out = {
            "name": self.name,
            "classes": list(self.classes),
            "image_size": self.image_size,
            "channels": self.channels,
            **({"modalities": self.modalities} if self.modalities else {}),
            **({"burned_in_annotation": self.burned_in} if self.burned_in else {}),
        }
        for name in SPLITS:
            s = self.split(name)
            out[name] = {
                "size": len(s),
                "per_class": torch.bincount(s.labels.cpu(), minlength=len(self.classes)).tolist(),
            }
        return out


def held_out(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """How many of a class's `n` images `stratified_split` gives to validation and to test: each fraction of
    them, rounded, while the class keeps at least one training image."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise StudioError("validation and test fractions must each be in [0, 1) and sum to less than 1.")
    n_val = min(round(n * val_fraction), max(n - 1, 0))
    return n_val, min(round(n * test_fraction), max(n - 1 - n_val, 0))


def stratified_split(labels: torch.Tensor, *, val_fraction: float, test_fraction: float, seed: int):
    """Seeded per-class split into (train, val, test) index tensors (`held_out`: how many of each class)."""
    g = torch.Generator().manual_seed(seed)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in SPLITS}
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        n_val, n_test = held_out(idx.numel(), val_fraction, test_fraction)
        parts["val"].append(idx[:n_val])
        parts["test"].append(idx[n_val : n_val + n_test])
        parts["train"].append(idx[n_val + n_test :])
    return tuple(torch.sort(torch.cat(parts[name])).values for name in SPLITS)


def subset(images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, masks: torch.Tensor | None = None) -> Split:
    return Split(images[index], labels[index], None if masks is None else masks[index])
