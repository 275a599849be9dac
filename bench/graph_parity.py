"""Do CUDA-graph steps train like eager steps? The gap between them beside the noise floor, eager vs eager.

For each method, three short trainings from the same seed over the same batches: eager, eager again,
and graphed (core.graphs). Each pair is compared by the relative difference of the epoch's metric sums
and the largest weight difference. Run twice: with cuDNN's benchmark mode and the default kernels (what
training uses), and with `torch.use_deterministic_algorithms(True)` and benchmark off, where eager vs
eager is exactly 0 and graphed vs eager should be float32 round-off. A gap well above the noise floor in
both modes is a bug; one that vanishes under deterministic algorithms is kernel-order noise. Writes JSON
(default bench/results/graph-parity-<gpu>.json). Needs a CUDA GPU.

    CUBLAS_WORKSPACE_CONFIG=:4096:8 python bench/graph_parity.py
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS; before CUDA starts

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import RESULTS, machine_label, write_result  # noqa: E402
from core.config import TrainConfig  # noqa: E402
from core.data import DataConfig  # noqa: E402
from core.dataset import Split  # noqa: E402
from core.engine import make_stepper, new_state, set_lr  # noqa: E402
from core.model import ModelSpec  # noqa: E402
from core.synthetic import CLASSES, render  # noqa: E402

SIZES = [128, 96, 128, 96, 128, 96, 128, 128, 96, 128]  # two batch sizes, each captured after two eager runs


def train(method: str, optimizer: str, *, graphs: bool, deterministic: bool, train_split, order):
    """The state after `SIZES` steps; the scalars change every step as in training."""
    cfg = TrainConfig(data=DataConfig(image_size=32), method=method, optimizer=optimizer, device="cuda").resolved()
    device = torch.device("cuda", torch.cuda.current_device())
    spec = ModelSpec(classes=list(CLASSES), image_size=32, channels=1)
    state, sampler = new_state(cfg, spec, train_split, device, graphs=graphs)
    torch.backends.cudnn.benchmark = not deterministic  # new_state turns it on for CUDA
    step = make_stepper(state, cfg, cfg.augment(32), train_split, amp=None, sampler=sampler, graphs=graphs)
    state.model.train()
    for i, n in enumerate(SIZES):
        set_lr(state.optimizer, cfg, i, len(SIZES))
        step(order[(i % 4) * 128 : (i % 4) * 128 + n], alpha=0.1 * i, kd_scale=0.1 * (i + 1))
    torch.cuda.synchronize()
    return state


def gap(a, b) -> dict:
    """Largest relative difference of the metric sums and largest absolute weight difference."""
    sums = ((a.sums - b.sums).abs() / b.sums.abs().clamp_min(1e-12)).max().item()
    weights = max(
        (x.float() - y.float()).abs().max().item()
        for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True)
        if x.is_floating_point()
    )
    return {
        "sums_rel": sums,
        "weights_abs": weights,
        "same_draws": bool(torch.equal(a.generator.get_state(), b.generator.get_state())),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="tss-kd:sgd,kd:sgd,cs-kd:sgd,ps-kd:adam,ce:adam")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    images, labels, _ = render(512, size=32, seed=0)
    split = Split(images.cuda(), labels.cuda())
    order = torch.randperm(512, generator=torch.Generator().manual_seed(0)).cuda()
    results = []
    for deterministic in (False, True):
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
        for item in args.methods.split(","):
            method, optimizer = item.split(":")
            row = {"method": method, "optimizer": optimizer, "deterministic": deterministic}
            try:
                runs = {
                    name: train(
                        method, optimizer, graphs=graphs, deterministic=deterministic, train_split=split, order=order
                    )
                    for name, graphs in (("eager", False), ("eager_again", False), ("graphed", True))
                }
                row["eager_vs_eager"] = gap(runs["eager_again"], runs["eager"])
                row["graphed_vs_eager"] = gap(runs["graphed"], runs["eager"])
            except Exception as e:  # record and go on: one failure must not hide the others
                row["error"] = f"{type(e).__name__}: {e}"
            print(row, flush=True)
            results.append(row)
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device).split()[1] if " " in torch.cuda.get_device_name(device) else "gpu"
    write_result(
        args.out or RESULTS / f"graph-parity-{name.lower()}.json",
        {"machine": machine_label(device), "steps": SIZES, "results": results},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
