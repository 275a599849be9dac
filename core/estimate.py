"""How long a run will take, before it starts: from the training speed measured by the latest earlier runs
on the same device with the same network, image size, batch size and kind of method, as the device keeps it
when alone (every epoch records its training images per second and its whole time; a finished run, the time
it spent outside its epochs).
Where nothing was measured yet on the CPU, a probe of a few real training steps of a throwaway network on a
few demo scans gives a first figure (`probe_speed`), so that a first run that would take hours says so
before it starts. On a GPU the first run measures it: a short eager probe there would
miss CUDA graphs and the large batches, and so be wrong by several times."""

from __future__ import annotations

import atexit
import os
import statistics
import threading
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from core import runs
from core.config import DataConfig, TrainConfig
from core.data import train_count
from core.methods import get_method

LONG_S = 15 * 60  # above this the Train tab offers the quick preset (core.config.PRESETS)


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


def process_started() -> float:
    """What `time.perf_counter()` read as this process started (Linux: from /proc; elsewhere, now), so that a
    trainer launched as a process counts its Python and torch start-up (about 4 s on a 2-core CPU)."""
    now = time.perf_counter()
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return now - max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return now


def note_time_outside_epochs(members: list[Path], started: float) -> None:
    """Once runs trained from start to end in one process since `perf_counter()` read `started`: record on
    each one that is done the seconds the process spent outside their epochs (starting, loading the data,
    building the models, testing, calibrating, saving), each run's share where several trained together (a
    grid). Time estimates add it to the epochs' (core.estimate)."""
    epochs = sum(r.get("seconds") or 0.0 for run in members for r in runs.read_metrics(run))
    share = max(0.0, time.perf_counter() - started - epochs) / max(len(members), 1)
    for run in members:
        if runs.Run(run).status().get("status") == "done":
            runs.set_status(run, "done", outside_epochs_s=round(share, 2))


RECENT_RUNS = 5  # the estimate goes by the latest comparable runs: one measured on other hardware ages out
ALONE = 0.8  # ... and by the upper fifth of their epochs' speeds (`alone_speed`)


def alone_speed(speeds: list[float], at: float = ALONE) -> float:
    """The training speed a run keeps when it has the device to itself, from its epochs' `speeds`: their 80th
    percentile (`at`; estimates went by the median, 0.5, before). Work beside a run (tests, another trainer, a
    browser drawing plots) only slows its epochs, and the median went by them: after a sweep trained beside a
    test run on a 2-core Xeon (9-53 images/s), the Temperatures tab foretold 28 images/s where the machine does
    47 alone. The first epoch of each run, slower (kernels picked, libraries paged in), falls below it too."""
    return float(np.quantile(speeds, at))


def measured(
    runs_dir: str | Path, cfg: TrainConfig, device: str, *, at: float = ALONE, least: int | None = None
) -> dict | None:
    """What the latest `RECENT_RUNS` comparable earlier runs measured: "images_per_s" (training images a second
    when alone, `alone_speed` of their "epochs" epochs), and as medians "epoch_extra_s" (the seconds an epoch took
    beyond its training images: validating and saving) and "outside_s" (the seconds a finished run took outside
    its epochs: loading the data, building the model, testing, calibrating; a grid's runs share one load). The
    last two are 0 where no run said.
    An epoch of fewer training images than `least` (default: the batch size) does not count: it trained in one
    step of a part of a batch, whose speed is not a full batch's. After a smoke test of 3 demo images for 100
    epochs (28 images/s on an AMX Xeon), the Train tab foretold its default run 4 h 25 min where it takes 70."""
    least = cfg.batch_size if least is None else least
    found = []
    root = Path(runs_dir)
    for path in root.iterdir() if root.is_dir() else []:
        run = runs.Run(path)
        saved = run.config()
        if not saved:
            continue
        status = run.status()
        saved["_device"] = status.get("device")
        if not _same_kind(saved, cfg, device):
            continue  # its metrics unread: a runs folder holds many runs of other kinds
        rows = [r for r in run.metrics() if r.get("images_per_s") and r.get("train_images", least) >= least]
        if rows:
            found.append((_last_written(path), rows, status.get("outside_epochs_s")))
    found = sorted(found, key=lambda f: f[0])[-RECENT_RUNS:]
    speeds = [r["images_per_s"] for _, rows, _ in found for r in rows]
    if not speeds:
        return None
    extras = [
        max(0.0, r["seconds"] - r["train_images"] / r["images_per_s"])
        for _, rows, _ in found
        for r in rows
        if r.get("train_images") and r.get("seconds")
    ]
    outside = [o for _, _, o in found if o is not None]

    def median(xs: list[float]) -> float:
        return statistics.median(xs) if xs else 0.0

    return {
        "images_per_s": alone_speed(speeds, at),
        "epochs": len(speeds),
        "epoch_extra_s": median(extras),
        "outside_s": median(outside),
    }


def _last_written(run: Path) -> float:
    """When the run last recorded an epoch: its metrics file's modification time."""
    try:
        return (run / runs.METRICS).stat().st_mtime
    except OSError:
        return 0.0


PROBE_STEP_S = 1.2  # the probe sizes its batch (up to the run's) to take at most about this long per step
SCANS = 16  # demo scans the probe renders; its batches take them again as often as they need
# One timing at a time (the Train tab's and the sweep form's probes, Diagnose's lesion-map cost): two at once
# would share the cores and each be measured at half speed. A studio's page load asks for both.
TIMING = threading.Lock()
_probed: dict[tuple, float] = {}  # what each probe found, by network, size, method, RGA, precision, batch, device


def probe_speed(cfg: TrainConfig, device: str = "cpu") -> float:
    """Training images/s of `cfg`'s network, method and augmentation on `device` at `cfg`'s image size, from
    real training steps (`core.engine`) of a throwaway network on a few demo scans: a step of 2 images
    to warm up, a second to size the batch, then the best of three steps of as many images as take about
    `PROBE_STEP_S`, up to the run's batch. Steps of at most 16 images, as it took before, made the default
    run (ResNet-18, 32 px, batch 128) look 1.6x slower than it then trained on an AMX CPU, whose bf16 tiles
    want large batches (`bench/estimate.py`: 0.62x; now 0.87x; ResNet-18 at 64 px 1.35x, now 1.12x; ResNet-50
    at 32 px 1.00x, now 0.99x). On a 2-core AVX2 CPU, with steps of up to 16, it came within 22% of the run
    either way (0.90x for ResNet-18 at 32 px, 1.20x at 64 px, 0.78x for ResNet-50 at 32 px); of those only
    ResNet-18 at 32 px is fast enough there to take larger steps now. About two seconds; cached per network,
    size, method, RGA, precision, batch and device. The caller's random state is left as it was."""
    c = cfg.resolved()
    return _probe(c.arch, c.data.image_size, c.method, c.rga, c.amp, c.batch_size, device)


def _let_a_probe_finish(timeout: float = 120.0) -> None:
    """At exit, wait for a probe in flight. It runs on a server's worker thread, a daemon: one still inside
    torch's backward pass when the interpreter ends is stopped there and aborts the whole process ("terminate
    called without an active exception", exit status 134), after a studio stopped cleanly or a test run passed."""
    if TIMING.acquire(timeout=timeout):
        TIMING.release()


atexit.register(_let_a_probe_finish)


def _probe(*key) -> float:
    """Probe once per key: a second caller (the Train tab and the sweep form ask at page load, for the same
    settings) waits for the first and takes its figure."""
    with TIMING:
        if key not in _probed:
            _probed[key] = _measure(*key)
        return _probed[key]


def _measure(arch: str, size: int, method: str, rga: bool, amp: str, most: int, device: str) -> float:
    from core import engine
    from core.dataset import Split
    from core.device import precision
    from core.model import ModelSpec
    from core.synthetic import CLASSES, render

    cfg = TrainConfig(data=DataConfig(image_size=size), arch=arch, method=method, rga=rga, amp=amp, device=device)
    cfg, dev = cfg.resolved(), torch.device(device)
    dtype, _ = precision(dev, cfg.amp)  # as the run will train (bf16 autocast only where it pays)
    with torch.random.fork_rng(devices=[]):
        images, labels, _ = render(min(most, SCANS), size=size)  # a batch repeats them: 256 at 224 px take 2.6 s
        train = Split(images, labels, None)
        spec = ModelSpec(arch=arch, classes=list(CLASSES), image_size=size, channels=images.shape[1])
        state, sampler = engine.new_state(cfg, spec, train, dev)
        step = engine.make_stepper(state, cfg, cfg.augment(size), train, amp=dtype, sampler=sampler)

        def timed(n: int) -> float:
            t0 = time.perf_counter()
            step(torch.arange(n) % len(images))
            return time.perf_counter() - t0

        # a first step pays one-time costs (kernels picked, libraries paged in): 1.16 s against 0.15 on a
        # studio's first start after install, which sized the batch to 2 and foretold 14 images/s where 90 is right
        timed(2)
        n = max(2, min(most, round(2 * PROBE_STEP_S / max(timed(2), 1e-6))))
        return n / min(timed(n) for _ in range(3))  # the best of three: a new shape's first step is slow


def train_images(data: DataConfig) -> int:
    """The training split's size (core.data.train_count); an image folder's listing is kept while the
    folder's own modification time stays the same, so editing the form does not list it again."""
    if data.dataset != "folder":
        return train_count(data)
    try:
        stamp = Path(data.data_path).stat().st_mtime_ns
    except (OSError, TypeError, ValueError):
        return train_count(data)  # says what is wrong with the path
    return _listed(data.data_path, stamp, data.val_fraction, data.test_fraction)


@lru_cache(maxsize=16)
def _listed(path: str, stamp: int, val_fraction: float, test_fraction: float) -> int:
    cfg = DataConfig(dataset="folder", data_path=path, val_fraction=val_fraction, test_fraction=test_fraction)
    return train_count(cfg)


def estimate_seconds(
    runs_dir: str | Path, cfg: TrainConfig, device: str, *, probe: bool = False, at: float = ALONE
) -> dict | None:
    """{"seconds", "images_per_s", "epochs_measured", "train_images"} for training `cfg` on `device`: its
    epochs' training images at the measured speed, plus what earlier runs spent validating and saving each
    epoch and outside their epochs (`measured`). With `probe`, a CPU on which no comparable run was measured
    yet is probed (`probe_speed`; then "epochs_measured" is 0, and the training alone is counted). None when
    there is no speed to go by; `StudioError` when the data cannot be counted (a wrong path), as Start would."""
    n_train = train_images(cfg.data)
    found = measured(runs_dir, cfg, device, at=at, least=min(cfg.batch_size, n_train))
    if found is None and probe and device == "cpu":
        found = {"images_per_s": probe_speed(cfg, device), "epochs": 0, "epoch_extra_s": 0.0, "outside_s": 0.0}
    if found is None:
        return None
    ips = found["images_per_s"]
    seconds = found["outside_s"] + cfg.epochs * (n_train / ips + found["epoch_extra_s"])
    return {"seconds": seconds, "images_per_s": ips, "epochs_measured": found["epochs"], "train_images": n_train}


def probe_at_start(runs_dir: str | Path, cfg: TrainConfig, device: str) -> threading.Thread | None:
    """Probe `cfg` (the forms' defaults) in the background as the studio starts, while nothing else runs,
    when it is a CPU with no comparable run measured yet; the thread, or None when there is nothing to probe.
    Probed when the page first asks instead, the figure shares the cores with the browser drawing the page:
    on two cores it read 39-42 images/s where 85-90 were right, and so foretold twice the time."""
    if device != "cpu" or measured(runs_dir, cfg, device) is not None:
        return None
    thread = threading.Thread(target=probe_speed, args=(cfg, device), name="estimate-probe", daemon=True)
    thread.start()
    return thread
