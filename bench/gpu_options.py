"""Closer to the chip (issue 15, part 2): the engine's training step (TSS-KD + RGA, ResNet-18) under each option
against the default, in one run on one GPU, with achieved TFLOP/s and share of the bf16 peak.

Variants, each replayed from CUDA graphs on a GPU (eager on a CPU, where this script only checks itself):
- `default`: the engine as it trains (channels-last, bf16 autocast, CUDA graphs);
- `eager`: the same without graphs, for scale;
- `contiguous`: the model in the default memory layout instead of channels-last;
- `compile`: `torch.compile` of the network (inductor, default mode: fuses batch norm and ReLU), compiled
  during the warm-up steps and then captured inside the step's graph;
- `compile-max-autotune`: the same with `mode="max-autotune-no-cudagraphs"` (inductor benchmarks kernel
  choices first: minutes of compile time, reported apart as `wall_s_with_warmup`).

The result file is rewritten after each variant, so a time limit keeps what was measured before it; a
variant that fails is recorded with its error and the next one runs.

    python bench/gpu_options.py --device cuda [--settings 224:128,32:1024] [--variants default,compile]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import RESULTS, write_result  # noqa: E402
from bench.throughput import PEAK_BF16, compiled, contiguous, flops_per_image, machine, measure_ours  # noqa: E402
from core.device import pick_device  # noqa: E402
from core.model import ModelSpec, build_model  # noqa: E402
from core.synthetic import CLASSES, render  # noqa: E402

# name -> (CUDA graphs on a GPU, tweak)
VARIANTS = {
    "default": (True, None),
    "eager": (False, None),
    "contiguous": (True, contiguous),
    "compile": (True, compiled(None)),
    "compile-max-autotune": (True, compiled("max-autotune-no-cudagraphs")),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--settings", default="224:128,32:1024", help="SIZE:BATCH,...")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 20 at 224 px, 60 below)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    settings = [tuple(int(v) for v in item.split(":")) for item in args.settings.split(",")]
    device = pick_device(args.device)
    gpu = device.type == "cuda"
    peak = next((v for k, v in PEAK_BF16.items() if gpu and k in torch.cuda.get_device_name(device)), None)
    out = args.out or RESULTS / f"gpu-options-{'gpu' if gpu else 'cpu'}.json"
    result = {"machine": machine(device), "peak_bf16_tflop_per_s": peak and peak / 1e12, "settings": []}
    for size, batch in settings:
        steps = args.steps or (20 if size > 64 else 60)
        images, labels, _ = render(max(4 * batch, 1024), size=size, seed=0)
        flops = flops_per_image(build_model(ModelSpec(classes=list(CLASSES), image_size=size, channels=1)), size, "cpu")
        row = {"image_size": size, "batch": batch, "gflop_per_image": flops / 1e9, "variants": {}}
        result["settings"].append(row)
        for name in names:
            graphs, tweak = VARIANTS[name]
            torch._dynamo.reset()  # each compiled variant compiles afresh, and its time is its own
            t0 = time.perf_counter()
            try:
                r = measure_ours(
                    images,
                    labels,
                    size=size,
                    batch=batch,
                    steps=steps,
                    warmup=5,
                    device=device,
                    graphs=graphs and gpu,
                    tweak=tweak,
                )
            except Exception as e:  # one variant that fails (a compile error, say) must not cost the others
                row["variants"][name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
                write_result(out, result)
                print(f"{size:>4}px b{batch:<5}{name:22s} failed: {type(e).__name__}: {e}", flush=True)
                continue
            r["wall_s_with_warmup"] = time.perf_counter() - t0
            r["tflop_per_s"] = r["images_per_s"] * flops / 1e12
            if peak:
                r["share_of_peak_bf16"] = r["images_per_s"] * flops / peak
            base = row["variants"].get("default")
            if base and "images_per_s" in base:
                r["vs_default"] = r["images_per_s"] / base["images_per_s"]
            row["variants"][name] = r
            write_result(out, result)
            print(
                f"{size:>4}px b{batch:<5}{name:22s}{r['images_per_s']:>10.0f} img/s {r['tflop_per_s']:>7.1f} TFLOP/s"
                + (f" ({100 * r['share_of_peak_bf16']:.1f}% of peak)" if peak else "")
                + f"  {r['wall_s_with_warmup']:.0f} s with warm-up",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
