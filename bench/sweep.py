"""Many small runs: a 4-run temperature sweep trained one after another, all at once, and as one grid.

Each way queues the same four TSS-KD runs on the studio's job manager: one run per device (one after
another, the baseline), `--runs-per-device` runs sharing the device (one process each), and the grid
in one process (`JobManager.submit_grid`, core.grid: one start, one copy of the data), as the
Temperatures tab trains a sweep. Reports the wall time from queueing to the last run's end and the
aggregate training images/s (training images seen by all runs over that wall time, process start-up
included). Writes JSON (default bench/results/sweep-<device>.json).

    python bench/sweep.py
    python bench/sweep.py --epochs 30 --train 5000 --image-size 32 --batch-size 128 \
        --t-targets 2,4,8 --t-nontargets 0.4,1,4 --runs-per-device 4 --ways sequential,grid   # a GPU's 3 x 3
    ONEDNN_MAX_CPU_ISA=AVX2 python bench/sweep.py --amp off    # as on a CPU with AVX2 alone, in float32
"""

from __future__ import annotations

import argparse
import os
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


def run_sweep(cfgs: list[TrainConfig], *, per_device: int, grid: bool = False) -> dict:
    """Queue `cfgs` on a fresh job manager (as one grid, or run by run); time them to the end; count the
    training images they saw."""
    with tempfile.TemporaryDirectory() as tmp:
        with job_manager(tmp, per_device=per_device) as manager:
            t0 = time.perf_counter()
            queued = manager.submit_grid(cfgs) if grid else [manager.submit(cfg) for cfg in cfgs]
            statuses = manager.wait(queued)
            wall = time.perf_counter() - t0
        if set(statuses.values()) != {"done"}:
            raise SystemExit(f"the sweep did not finish: {statuses}")
        metrics = [runs.read_metrics(r) for r in queued]
        autocast = {(runs.Run(r).status().get("precision") or {}).get("autocast") for r in queued}
    images = sum(cfg.data.synthetic_train * cfg.epochs for cfg in cfgs)
    # the training steps alone (each epoch's images over its images/s, validation left out): what no way of
    # running the sweep can share, since every run steps its own network
    per_run = zip(cfgs, metrics, strict=True)
    stepping = sum(sum(cfg.data.synthetic_train / r["images_per_s"] for r in m) for cfg, m in per_run)
    return {
        "runs_per_device": per_device,
        "one_process": grid,
        "wall_s": wall,
        "training_images": images,
        "aggregate_images_per_s": images / wall,
        "training_steps_s": stepping,
        "rest_s": wall - stepping,
        "per_run_images_per_s": [sum(r["images_per_s"] for r in m) / len(m) for m in metrics],
        "autocast": sorted(autocast, key=str),  # what the runs trained in (None: float32)
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train", type=int, default=1000, help="demo training images per run")
    ap.add_argument("--image-size", type=int, default=28)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--runs-per-device", type=int, default=4)
    ap.add_argument("--t-targets", default="2,4")
    ap.add_argument("--t-nontargets", default="0.4,4")
    ap.add_argument("--ways", default="sequential,concurrent,grid", help="which ways to time, in this order")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", default="auto", help="the runs' --amp (off: float32, as on a CPU without native bf16)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    device = pick_device(args.device)
    data = DataConfig(image_size=args.image_size, synthetic_train=args.train, synthetic_val=200, synthetic_test=200)
    base = TrainConfig(data=data, epochs=args.epochs, batch_size=args.batch_size, device=str(device), amp=args.amp)
    targets, nontargets = ([float(t) for t in v.split(",")] for v in (args.t_targets, args.t_nontargets))
    cfgs = temperature_grid(base, targets, nontargets, tag="sweep")
    ways = {
        "sequential": ("one after another", {"per_device": 1}),
        "concurrent": (f"{args.runs_per_device} at once", {"per_device": args.runs_per_device}),
        "grid": ("grid, one process", {"per_device": 1, "grid": True}),
    }
    unknown = [way for way in args.ways.split(",") if way not in ways]
    if unknown:  # before any run: a typo should not cost the minutes of the ways before it
        raise SystemExit(f"unknown way {unknown[0]!r}: choose from {', '.join(ways)}")
    timed = {}
    for way in args.ways.split(","):
        label, options = ways[way]
        timed[way] = run_sweep(cfgs, **options)
        speedup = ""
        if way == "sequential":  # were all but the training steps shared, the sweep could be no faster
            timed[way]["speedup_bound"] = timed[way]["wall_s"] / timed[way]["training_steps_s"]
        if way != "sequential" and "sequential" in timed:
            timed[way]["speedup"] = timed[way]["aggregate_images_per_s"] / timed["sequential"]["aggregate_images_per_s"]
            speedup = f"  (x{timed[way]['speedup']:.2f})"
        rate = timed[way]["aggregate_images_per_s"]
        steps = timed[way]["training_steps_s"]
        print(
            f"{label:20s}: {timed[way]['wall_s']:6.1f} s  {rate:8.0f} images/s{speedup}"
            f"  (training steps {steps:.1f} s, the rest {timed[way]['rest_s']:.1f} s)",
            flush=True,
        )
    result = {
        "machine": machine_label(device),
        "sweep": f"TSS-KD + RGA, t_target in {tuple(targets)} x t_nontarget in {tuple(nontargets)}",
        "runs": len(cfgs),
        "epochs": args.epochs,
        "train_images_per_run": args.train,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "amp": args.amp,
        # set to stand in for a CPU with fewer instructions (AVX2: one without AVX-512 or AMX)
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        **timed,
    }
    out = args.out or RESULTS / f"sweep-{device.type}.json"
    write_result(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
