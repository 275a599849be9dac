"""What pays on this CPU: the engine's training step (TSS-KD + RGA, ResNet-18, 32 px, batch 128) under each
option issue 16 names, against the reference-style pipeline, all in one run on one machine.

Variants: the default (channels-last, the precision `amp=auto` picks), the model in the default contiguous
layout, bf16 autocast forced (native only with AVX-512 BF16 or AMX; emulated and slow elsewhere), float32
where the CPU has native bf16 (is bf16 faster there?),
`torch.compile` of the network (inductor's C++ backend; its compile time reported apart), one thread
instead of all, and the augmentation's share of a step. Writes JSON (default
bench/results/cpu-options-<cpu>.json).

    python bench/cpu_options.py [--steps 6]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import RESULTS, write_result  # noqa: E402
from bench.throughput import compiled, contiguous, measure_ours, measure_reference  # noqa: E402
from core.config import TrainConfig  # noqa: E402
from core.data import DataConfig  # noqa: E402
from core.device import cpu_native_bf16  # noqa: E402
from core.synthetic import render  # noqa: E402

SIZE, BATCH = 32, 128


def augmentation_ms(images: torch.Tensor, repeats: int = 20) -> float:
    """Milliseconds to draw the two augmented views of one batch (RGA included), as a step does."""
    aug = TrainConfig(data=DataConfig(image_size=SIZE)).augment(SIZE)
    g = torch.Generator().manual_seed(0)
    x = images[:BATCH]
    aug(x, generator=g)
    t0 = time.perf_counter()
    for _ in range(repeats):
        aug(x, generator=g), aug(x, generator=g)
    return 1000 * (time.perf_counter() - t0) / repeats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    device = torch.device("cpu")
    images, labels, _ = render(4096, size=SIZE, seed=0)
    common = {"size": SIZE, "batch": BATCH, "steps": args.steps, "warmup": 3, "device": device}
    threads = torch.get_num_threads()
    variants = {}

    def run(name, **kwargs):
        t0 = time.perf_counter()
        variants[name] = measure_ours(images, labels, **common, **kwargs)
        variants[name]["wall_s_with_warmup"] = time.perf_counter() - t0
        print(f"{name:28s} {variants[name]['images_per_s']:6.1f} images/s", flush=True)

    run("default (channels-last)")
    run("contiguous layout", tweak=contiguous)
    run("torch.compile (inductor)", tweak=compiled())
    torch.set_num_threads(1)
    run("one thread")
    torch.set_num_threads(threads)
    if cpu_native_bf16() is not None:  # bf16 natively: is it faster than float32 on this CPU?
        run("float32 (--amp off)", amp_choice="off")
    else:  # bf16 emulated: a few steps say enough
        common.update(steps=max(2, args.steps // 3), warmup=1)
    run("bf16 autocast forced", amp_choice="bf16")
    reference = measure_reference(
        images, labels, size=SIZE, batch=BATCH, steps=max(args.steps // 2, 4), warmup=2, workers=2, device=device
    )
    print(f"{'reference-style (2 workers)':28s} {reference['images_per_s']:6.1f} images/s", flush=True)
    aug_ms = augmentation_ms(images)
    step_ms = 1000 * BATCH / variants["default (channels-last)"]["images_per_s"]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu,
            "cpus": os.cpu_count(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": cpu_native_bf16(),
            "torch": torch.__version__,
            "threads": threads,
        },
        "image_size": SIZE,
        "batch": BATCH,
        "variants": variants,
        "reference": reference,
        "speedup_vs_reference": {k: v["images_per_s"] / reference["images_per_s"] for k, v in variants.items()},
        "augmentation_ms_per_step": aug_ms,
        "augmentation_share_of_step": aug_ms / step_ms,
    }
    slug = (torch.backends.cpu.get_cpu_capability() or "cpu").lower()
    write_result(args.out or RESULTS / f"cpu-options-{slug}.json", result)
    print(f"augmentation: {aug_ms:.0f} ms of a {step_ms:.0f} ms step ({100 * aug_ms / step_ms:.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
