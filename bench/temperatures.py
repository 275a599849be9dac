"""Temperature study: TSS-KD over a grid of t_target and t_nontarget, as a heatmap of test accuracy and AUC.

The paper studies both temperatures; t_nontarget == t_target is classic KD. The grid is queued on the
studio's job manager as the Temperatures tab queues it: one process trains every run (core.grid).
Writes JSON, a markdown table and a heatmap (default bench/results/temperatures-<device>.*).

    python bench/temperatures.py                                   # 3 x 3 grid, the CPU budget of methods.py
    python bench/temperatures.py --t-targets 1,2,4,8 --t-nontargets 0.1,0.2,0.4,1,4 --epochs 100 --train 5000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import RESULTS, job_manager, machine_label  # noqa: E402
from core.config import QUICK  # noqa: E402
from core.data import DataConfig  # noqa: E402
from core.device import pick_device  # noqa: E402
from core.errors import StudioError  # noqa: E402
from core.figures import heatmap  # noqa: E402
from core.losses import KD_SCALINGS  # noqa: E402
from core.sweep import grid_results, temperature_grid  # noqa: E402
from core.train import TrainConfig  # noqa: E402


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def markdown(tts, tns, grid: np.ndarray, *, title: str) -> str:
    lines = [title, "", "| t_target \\ t_nontarget | " + " | ".join(f"{t:g}" for t in tns) + " |"]
    lines.append("| --- |" + " --- |" * len(tns))
    for i, tt in enumerate(tts):
        lines.append(f"| {tt:g} | " + " | ".join("-" if np.isnan(v) else f"{v:.3f}" for v in grid[i]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--t-targets", default="1,4,8")
    ap.add_argument("--t-nontargets", default="0.2,0.4,4")
    ap.add_argument("--kd-weight", type=float, default=1.0)
    ap.add_argument("--kd-scaling", choices=KD_SCALINGS, default=TrainConfig.kd_scaling)
    ap.add_argument(
        "--kd-warmup",
        type=int,
        default=QUICK["kd_warmup"],
        metavar="EPOCHS",
        help="KD warm-up (default: none, as for the studio's short runs; see the quick preset in core.config.PRESETS)",
    )
    ap.add_argument("--optimizer", default=QUICK["optimizer"], help="optimizer (default: the quick preset's)")
    ap.add_argument("--lr", type=float, default=QUICK["lr"], help="learning rate (default: the quick preset's)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train", type=int, default=1000, help="demo training images")
    ap.add_argument("--image-size", type=int, default=28)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rga", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=None, help="output stem (default bench/results/temperatures-...)")
    args = ap.parse_args(argv)
    device = pick_device(args.device)
    data = DataConfig(
        image_size=args.image_size, synthetic_train=args.train, synthetic_val=400, synthetic_test=400, seed=args.seed
    )
    base = TrainConfig(
        data=data,
        kd_weight=args.kd_weight,
        kd_scaling=args.kd_scaling,
        kd_warmup=args.kd_warmup,
        rga=args.rga,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        device=str(device),
        seed=args.seed,
    )
    try:
        cfgs = temperature_grid(base, floats(args.t_targets), floats(args.t_nontargets), tag="temps")
    except (StudioError, ValueError) as e:
        raise SystemExit(str(e)) from None
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        with job_manager(tmp, per_device=1) as manager:
            statuses = manager.wait(manager.submit_grid(cfgs))  # as the Temperatures tab trains a sweep
        failed = sorted(n for n, s in statuses.items() if s != "done")
        if failed:
            raise SystemExit(f"{len(failed)} run(s) did not finish: {', '.join(failed)}")
        grids = {m: grid_results(tmp, "temps", metric=m) for m in ("test_acc", "test_auc", "best_val_auc")}
    minutes = (time.perf_counter() - t0) / 60
    tts, tns, _, _ = grids["test_auc"]
    budget = (
        f"TSS-KD{' + RGA' if args.rga else ''}, lambda {args.kd_weight:g}, {args.kd_scaling} scaling, "
        f"KD warm-up {args.kd_warmup} epochs, {args.optimizer} at lr {args.lr:g}, {args.epochs} epochs, "
        f"{args.train} demo training images at {args.image_size} px, batch {args.batch_size}, seed {args.seed}; "
        f"{machine_label(device)}, the grid in one process, {minutes:.1f} min"
    )
    table = markdown(tts, tns, grids["test_acc"][2], title=f"Test accuracy. {budget}.")
    table += "\n" + markdown(tts, tns, grids["test_auc"][2], title="Test macro AUC.")
    print(table)
    stem = args.out or RESULTS / f"temperatures-{device.type}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "budget": budget,
        "t_targets": tts,
        "t_nontargets": tns,
        **{m: [[None if np.isnan(v) else float(v) for v in row] for row in g[2]] for m, g in grids.items()},
        "grid_in_one_process": True,
        "minutes": minutes,
    }
    Path(f"{stem}.json").write_text(json.dumps(payload, indent=2))
    Path(f"{stem}.md").write_text(table)
    fig = heatmap(tts, tns, grids["test_auc"][2], row_label="t_target", col_label="t_nontarget", title="test AUC")
    fig.savefig(f"{stem}.png", dpi=110)
    print(f"wrote {stem}.json, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
