"""Training throughput: our engine's TSS-KD + RGA step against the reference-style pipeline, in one run.

Both train the same ResNet-18 (the paper's network) with the same objective on the same synthetic
data, on the same machine. Prints a table and writes JSON (default: bench/results/throughput-<device>.json).

    python bench/throughput.py                 # every setting for this machine
    python bench/throughput.py --settings 32:128 --steps 20
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
from bench.reference_pipeline import make_loader, reference_step  # noqa: E402
from core.config import TrainConfig  # noqa: E402
from core.data import DataConfig  # noqa: E402
from core.dataset import Split  # noqa: E402
from core.device import cpu_native_bf16, pick_device, precision  # noqa: E402
from core.engine import make_stepper, new_state  # noqa: E402
from core.model import ModelSpec, build_model  # noqa: E402
from core.synthetic import CLASSES, render  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 datasheet rates


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flops_per_image(model, size, device) -> float:
    """FLOPs of one training image: teacher forward + student forward + backward (~2 forwards) = 4 forwards."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(2, 3, size, size, device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return 4 * counter.get_total_flops() / 2


def contiguous(state) -> None:
    """A `measure_ours` tweak: the model in the default memory layout instead of channels-last."""
    state.model.to(memory_format=torch.contiguous_format)


def compiled(mode: str | None = None):
    """A `measure_ours` tweak: the network compiled by `torch.compile` (inductor) in `mode`."""

    def tweak(state) -> None:
        state.net = torch.compile(state.model, mode=mode)

    return tweak


def measure_ours(
    images, labels, *, size, batch, steps, warmup, device, graphs=False, amp_choice="auto", tweak=None
) -> dict:
    """The engine's own step (core.engine.make_stepper), eager or replayed from CUDA graphs. `tweak(state)`
    may change the state before the first step (bench/cpu_options.py tries variants so)."""
    cfg = TrainConfig(data=DataConfig(image_size=size), batch_size=batch, device=str(device), amp=amp_choice)
    cfg = cfg.resolved()
    train = Split(images.to(device), labels.to(device))
    spec = ModelSpec(classes=list(CLASSES), image_size=size, channels=1)
    state, _ = new_state(cfg, spec, train, device, graphs=graphs)  # as core.train.fit builds it
    if tweak is not None:
        tweak(state)
    model = state.model
    amp, why = precision(device, cfg.amp)
    step = make_stepper(state, cfg, cfg.augment(size), train, amp=amp, sampler=None, graphs=graphs)
    g = torch.Generator(device=device).manual_seed(1)

    def run(n):
        for _ in range(n):
            step(torch.randint(0, len(train), (batch,), generator=g, device=device))

    model.train()
    run(warmup)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    run(steps)
    sync(device)
    seconds = time.perf_counter() - t0
    out = {
        "images_per_s": steps * batch / seconds,
        "steps": steps,
        "seconds": seconds,
        "amp": str(amp),
        "precision": why,
        "cuda_graphs": graphs,
    }
    if device.type == "cuda":
        out["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def measure_reference(images, labels, *, size, batch, steps, warmup, workers, device) -> dict:
    torch.manual_seed(0)
    model = build_model(ModelSpec(classes=list(CLASSES), image_size=size, channels=1)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    rgb = images[:, 0].numpy()[..., None].repeat(3, axis=-1)  # the reference reads grayscale as RGB
    loader = make_loader(rgb, labels.numpy(), size=size, batch_size=batch, workers=workers, device=device)
    model.train()
    it, done, t0 = iter(loader), 0, None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    while done < warmup + steps:
        try:
            v1, v2, y = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        reference_step(model, optimizer, v1, v2, y, device)
        done += 1
        if done == warmup:
            sync(device)
            t0 = time.perf_counter()
    sync(device)
    seconds = time.perf_counter() - t0
    out = {"images_per_s": steps * batch / seconds, "steps": steps, "seconds": seconds, "workers": workers}
    if device.type == "cuda":
        out["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    del loader
    return out


def finish_row(row: dict, peak: float | None) -> None:
    """Add the rates and the speed-up over the best reference to a row, and print it."""
    flops = row["gflop_per_image"] * 1e9
    ours, graphed = row["ours"], row["ours_cuda_graphs"]
    for r in filter(None, (ours, graphed)):
        r["tflop_per_s"] = r["images_per_s"] * flops / 1e12
        if peak:
            r["share_of_peak_bf16"] = r["images_per_s"] * flops / peak
    best = max(filter(None, (ours, graphed)), key=lambda r: r["images_per_s"])
    best_ref = max(row["reference"], key=lambda r: r["images_per_s"])
    row["speedup_vs_best_reference"] = best["images_per_s"] / best_ref["images_per_s"]
    print(
        f"{row['image_size']:>4}px b{row['batch']:<4} ours {ours['images_per_s']:>9.0f} img/s  "
        + (f"graphs {graphed['images_per_s']:>9.0f}  " if graphed else "")
        + "  ".join(f"ref({r['workers']}w) {r['images_per_s']:>8.0f}" for r in row["reference"])
        + f"  x{row['speedup_vs_best_reference']:.2f}  {best['tflop_per_s']:.1f} TFLOP/s"
        + (f"  peak {best['peak_mem_gb']:.2f} GB" if "peak_mem_gb" in best else ""),
        flush=True,
    )


def machine(device) -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu"] = cpu_model()
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()  # the widest vector ISA torch uses
        info["native_bf16"] = cpu_native_bf16()
    return info


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--settings", default=None, help="SIZE:BATCH,... (default: 32:128,32:512,32:1024,224:128 on GPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per measurement")
    ap.add_argument("--workers", default=None, help="reference DataLoader workers, comma-separated")
    ap.add_argument("--no-graphs", action="store_true", help="on a GPU, skip the CUDA-graph measurement")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    device = pick_device(args.device)
    gpu = device.type == "cuda"
    settings = args.settings or ("32:128,32:512,32:1024,224:128" if gpu else "32:128")
    workers = [int(w) for w in (args.workers or ("4,16" if gpu else "0,2")).split(",")]
    peak = next((v for k, v in PEAK_BF16.items() if gpu and k in torch.cuda.get_device_name(device)), None)
    out = args.out or RESULTS / f"throughput-{'gpu' if gpu else 'cpu'}.json"
    results, inputs = [], []
    for item in settings.split(","):
        size, batch = (int(v) for v in item.split(":"))
        steps = args.steps or (60 if gpu and size <= 64 else 20 if gpu else 6)
        images, labels, _ = render(max(4 * batch, 4096 if size <= 64 else 1024), size=size, seed=0)
        model = build_model(ModelSpec(classes=list(CLASSES), image_size=size, channels=1)).to(device)
        flops = flops_per_image(model, size, device)
        del model
        ours = measure_ours(images, labels, size=size, batch=batch, steps=steps, warmup=10, device=device)
        refs = [
            measure_reference(
                images, labels, size=size, batch=batch, steps=max(steps // 2, 4), warmup=3, workers=w, device=device
            )
            for w in workers
        ]
        row = {
            "image_size": size,
            "batch": batch,
            "gflop_per_image": flops / 1e9,
            "ours": ours,
            "ours_cuda_graphs": None,
            "cuda_graphs_error": None,
            "reference": refs,
        }
        results.append(row)
        inputs.append((images, labels, steps))
        finish_row(row, peak)
    write_result(out, {"machine": machine(device), "results": results})
    if gpu and not args.no_graphs:
        # Last, and after a first write: a capture that fails can leave the CUDA context unusable.
        for row, (images, labels, steps) in zip(results, inputs, strict=True):
            size, batch = row["image_size"], row["batch"]
            try:
                row["ours_cuda_graphs"] = measure_ours(
                    images, labels, size=size, batch=batch, steps=steps, warmup=10, device=device, graphs=True
                )
            except RuntimeError as e:  # keep the other measurements; say why this one failed
                row["cuda_graphs_error"] = f"{type(e).__name__}: {e}"[:2000]
                print(f"CUDA graphs failed at {size}px b{batch}: {row['cuda_graphs_error']}", file=sys.stderr)
            finish_row(row, peak)
        write_result(out, {"machine": machine(device), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
