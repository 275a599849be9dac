"""How long a run will take, before it starts: from the training speed measured by earlier runs on the
same device with the same network, image size, batch size and kind of method (every epoch records its
images per second). No guess where nothing was measured yet: the first run on a device measures it."""

from __future__ import annotations

import statistics
from pathlib import Path

from core import runs
from core.config import TrainConfig
from core.methods import get_method

QUICK = {"epochs": 5, "synthetic_train": 1000, "image_size": 32}  # the quick preset the Train tab offers
LONG_S = 15 * 60  # above this the Train tab offers the quick preset


def _device(name: str | None) -> str | None:
    return "cuda:0" if name == "cuda" else name


def _same_kind(a: dict, cfg: TrainConfig, device: str) -> bool:
    data = a.get("data") or {}
    try:
        teacher = get_method(a.get("method") or "").teacher
    except Exception:
        return False
    return (
        a.get("arch") == cfg.arch
        and data.get("image_size") == cfg.data.image_size
        and a.get("batch_size") == cfg.batch_size
        and (teacher == "none") == (get_method(cfg.method).teacher == "none")  # one pass or two per step
        and _device(a.get("_device")) == _device(device)
    )


def measured_speed(runs_dir: str | Path, cfg: TrainConfig, device: str) -> tuple[float, int] | None:
    """Median training images/s over the epochs of comparable earlier runs, and how many epochs that is."""
    speeds = []
    root = Path(runs_dir)
    for path in root.iterdir() if root.is_dir() else []:
        run = runs.Run(path)
        saved = run.config()
        if not saved:
            continue
        saved["_device"] = run.status().get("device")
        if _same_kind(saved, cfg, device):
            speeds += [r["images_per_s"] for r in run.metrics() if r.get("images_per_s")]
    return (statistics.median(speeds), len(speeds)) if speeds else None


def estimate_seconds(runs_dir: str | Path, cfg: TrainConfig, device: str) -> dict | None:
    """{"seconds", "images_per_s", "epochs_measured"} for training `cfg` on `device`; None when no comparable
    run was measured yet or the training split's size is not known before loading (image folders)."""
    if cfg.data.dataset != "synthetic":
        return None
    speed = measured_speed(runs_dir, cfg, device)
    if speed is None:
        return None
    ips, n = speed
    return {"seconds": cfg.epochs * cfg.data.synthetic_train / ips, "images_per_s": ips, "epochs_measured": n}
