"""Many small runs at once: a 4-run temperature sweep trained one after another, then all at once.

Both passes queue the same four TSS-KD runs on the studio's job manager; the first with one run per
device (one after another), the second with `--runs-per-device` runs sharing the device. Reports the
wall time from queueing to the last run's end and the aggregate training images/s (training images
seen by all runs over that wall time, process start-up included). Writes JSON (default
bench/results/sweep-<device>.json).

    python bench/sweep.py
    python bench/sweep.py --epochs 5 --train 5000 --runs-per-device 4     # on a GPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import RESULTS, job_manager, machine_label, write_result  # noqa: E402
from core import runs  # noqa: E402
from core.data import DataConfig  # noqa: E402
from core.device import pick_device  # noqa: E402
from core.sweep import temperature_grid  # noqa: E402
from core.train import TrainConfig  # noqa: E402


def run_sweep(cfgs: list[TrainConfig], *, per_device: int) -> dict:
    """Queue `cfgs` on a fresh job manager; time them to the end; count the training images they saw."""
    with tempfile.TemporaryDirectory() as tmp:
        with job_manager(tmp, per_device=per_device) as manager:
            t0 = time.perf_counter()
            queued = [manager.submit(cfg) for cfg in cfgs]
            statuses = manager.wait(queued)
            wall = time.perf_counter() - t0
        if set(statuses.values()) != {"done"}:
            raise SystemExit(f"the sweep did not finish: {statuses}")
        metrics = [runs.read_metrics(r) for r in queued]
    images = sum(cfg.data.synthetic_train * cfg.epochs for cfg in cfgs)
    return {
        "runs_per_device": per_device,
        "wall_s": wall,
        "training_images": images,
        "aggregate_images_per_s": images / wall,
        "per_run_images_per_s": [sum(r["images_per_s"] for r in m) / len(m) for m in metrics],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train", type=int, default=1000, help="demo training images per run")
    ap.add_argument("--image-size", type=int, default=28)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--runs-per-device", type=int, default=4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    device = pick_device(args.device)
    data = DataConfig(image_size=args.image_size, synthetic_train=args.train, synthetic_val=200, synthetic_test=200)
    base = TrainConfig(data=data, epochs=args.epochs, batch_size=args.batch_size, device=str(device))
    cfgs = temperature_grid(base, [2.0, 4.0], [0.4, 4.0], tag="sweep")
    one = run_sweep(cfgs, per_device=1)
    print(f"one after another : {one['wall_s']:6.1f} s  {one['aggregate_images_per_s']:8.0f} images/s", flush=True)
    many = run_sweep(cfgs, per_device=args.runs_per_device)
    print(
        f"{args.runs_per_device} at once         : {many['wall_s']:6.1f} s"
        f"  {many['aggregate_images_per_s']:8.0f} images/s"
        f"  (x{many['aggregate_images_per_s'] / one['aggregate_images_per_s']:.2f})"
    )
    result = {
        "machine": machine_label(device),
        "sweep": "TSS-KD + RGA, t_target in (2, 4) x t_nontarget in (0.4, 4)",
        "epochs": args.epochs,
        "train_images_per_run": args.train,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "sequential": one,
        "concurrent": many,
        "speedup": many["aggregate_images_per_s"] / one["aggregate_images_per_s"],
    }
    out = args.out or RESULTS / f"sweep-{device.type}.json"
    write_result(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
