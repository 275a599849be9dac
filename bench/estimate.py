"""How close the Train tab's first time estimate is, before any run was measured.

Per network and image size, in one process: the probe's training images/s (core.estimate.probe_speed: a
few steps of a throwaway network on demo scans, what the Train tab shows on a CPU with no earlier run),
then a real TSS-KD + RGA run of the same settings on the demo data and the training images/s its epoch
records (what later estimates go by). Reports both, their ratio (below 1: the first estimate errs long),
the probe's own seconds, and the run's training time against the time the probe foretold; writes JSON
(default bench/results/estimate-<device>.json).

With --whole: how close the estimates are once a run was measured, whole runs against their wall time. A
first run (the quick preset's settings) measures; then the same run again, a 2 x 2 temperature sweep (one
grid process, as the Temperatures tab trains it) and a run of twice the epochs are each foretold as the
Train and Temperatures tabs foretell them (core.estimate.estimate_seconds; training, validation, saving and
the time outside the epochs, at the speed runs keep when alone), as they did at the epochs' median speed, and
as they did before that (the training images alone at the measured speed), then queued on the studio's job
manager and timed from queueing to their end (default
bench/results/estimate-whole-<device>.json).

    python bench/estimate.py
    python bench/estimate.py --settings resnet18:32,resnet18:64,resnet50:32 --train 512
    python bench/estimate.py --whole
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import RESULTS, job_manager, machine_label, trained, write_result  # noqa: E402
from core import estimate, runs  # noqa: E402
from core.config import DataConfig, TrainConfig  # noqa: E402
from core.device import pick_device  # noqa: E402
from core.errors import StudioError  # noqa: E402
from core.model import ARCHS  # noqa: E402


def parse_settings(text: str) -> list[tuple[str, int]]:
    """'resnet18:32,resnet50:64' -> [('resnet18', 32), ('resnet50', 64)]; a bad entry is refused."""
    out = []
    for item in text.split(","):
        arch, _, size = item.strip().partition(":")
        if arch not in ARCHS or not size.isdigit():
            raise StudioError(f"'{item}': give NETWORK:SIZE, NETWORK one of {', '.join(ARCHS)}.")
        out.append((arch, int(size)))
    return out


def compare(arch: str, size: int, *, train: int, batch: int, device, runs_dir: str) -> dict:
    data = DataConfig(image_size=size, synthetic_train=train, synthetic_val=64, synthetic_test=64)
    cfg = TrainConfig(data=data, arch=arch, batch_size=batch, epochs=1, device=str(device)).resolved()
    t0 = time.perf_counter()
    probed = estimate.probe_speed(cfg, str(device))
    probe_s = time.perf_counter() - t0
    run = trained(data, "tss-kd", epochs=1, device=device, runs_dir=runs_dir, arch=arch, batch_size=batch)
    measured = runs.Run(run.run).metrics()[-1]["images_per_s"]  # the epoch's, as later estimates read it
    return {
        "arch": arch,
        "image_size": size,
        "probe_images_per_s": probed,
        "probe_seconds": probe_s,
        "run_images_per_s": measured,
        "probe_over_run": probed / measured,
        "run_train_seconds": train / measured,
        "foretold_train_seconds": train / probed,
    }


def timed(manager, cfgs: list[TrainConfig]) -> float:
    """Seconds from queueing `cfgs` (as one grid when there are several) to the end of the last of them."""
    t0 = time.perf_counter()
    queued = manager.submit_grid(cfgs) if len(cfgs) > 1 else [manager.submit(cfgs[0])]
    ended = manager.wait(queued)
    if set(ended.values()) != {"done"}:
        raise SystemExit(f"a run did not finish: {ended}")
    return time.perf_counter() - t0


def whole(device, *, runs_dir: str, settings: dict | None = None) -> dict:
    """A measured first run, then three foretold and timed (see the module's doc); `settings` (the studio's
    API's, by name) apply over the quick preset."""
    from dataclasses import replace

    from core import config
    from core import settings as config_io
    from core.sweep import temperature_grid

    settings = {"preset": "quick", **(settings or {}), "device": str(device), "name": "first"}
    base = config_io.from_settings(settings, base=TrainConfig(runs_dir=runs_dir))
    result = {"settings": config.to_record(base.resolved()), "cases": []}
    with job_manager(runs_dir, per_device=1) as manager:
        result["first_run_s"] = timed(manager, [base])
        for label, cfgs in [
            ("the same run again", [replace(base, name="again")]),
            ("a 2 x 2 temperature sweep", temperature_grid(base, [2.0, 4.0], [0.4, 4.0], tag="sweep")),
            ("twice the epochs", [replace(base, name="longer", epochs=2 * base.epochs)]),
        ]:
            found = estimate.estimate_seconds(runs_dir, cfgs[0].resolved(), str(device))
            foretold = len(cfgs) * found["seconds"]
            # as estimates were made before: at the measured epochs' median speed
            median = len(cfgs) * estimate.estimate_seconds(runs_dir, cfgs[0].resolved(), str(device), at=0.5)["seconds"]
            before = len(cfgs) * cfgs[0].epochs * found["train_images"] / found["images_per_s"]
            wall = timed(manager, cfgs)
            result["cases"].append(
                {
                    "case": label,
                    "runs": len(cfgs),
                    "wall_s": wall,
                    "estimate_s": foretold,
                    "estimate_over_wall": foretold / wall,
                    "median_speed_s": median,
                    "median_speed_over_wall": median / wall,
                    "before_s": before,
                    "before_over_wall": before / wall,
                }
            )
            print(
                f"{label}: foretold {foretold:.0f} s (median speed: {median:.0f} s, training alone: {before:.0f} s),"
                f" took {wall:.0f} s"
            )
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", default="resnet18:32,resnet18:64", help="NETWORK:SIZE pairs, comma-separated")
    ap.add_argument("--train", type=int, default=512, help="demo training images of each real run (one epoch)")
    ap.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--whole", action="store_true", help="whole runs' estimates against their wall time")
    ap.add_argument(
        "--run-settings", type=json.loads, default={}, help="with --whole: JSON settings over the quick preset"
    )
    args = ap.parse_args(argv)
    try:
        settings = parse_settings(args.settings)
    except StudioError as e:
        ap.error(str(e))
    device = pick_device(args.device)
    if args.whole:
        out = args.out or RESULTS / f"estimate-whole-{device.type}.json"
        with tempfile.TemporaryDirectory() as tmp:
            result = {"machine": machine_label(device), "what": "whole runs' time estimates against their wall time"}
            write_result(out, result | whole(device, runs_dir=tmp, settings=args.run_settings))
        return 0
    result = {
        "machine": machine_label(device),
        "what": "the probe's training images/s against a real 1-epoch TSS-KD + RGA run's, demo data",
        "train_images": args.train,
        "batch_size": args.batch_size,
        "cases": [],
    }
    out = args.out or RESULTS / f"estimate-{device.type}.json"
    with tempfile.TemporaryDirectory() as tmp:
        for arch, size in settings:
            case = compare(arch, size, train=args.train, batch=args.batch_size, device=device, runs_dir=tmp)
            result["cases"].append(case)
            print(
                f"{arch} {size} px: probe {case['probe_images_per_s']:.1f} images/s in {case['probe_seconds']:.1f} s, "
                f"run {case['run_images_per_s']:.1f} images/s (ratio {case['probe_over_run']:.2f})"
            )
            write_result(out, result)  # after each case: a time limit keeps what came before
    return 0


if __name__ == "__main__":
    sys.exit(main())
