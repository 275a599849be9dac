"""Peak memory and time of one large Diagnose upload, the studio's way against the ways before, each in a
process of its own (a process's peak only grows), with the same model, scans and lesion-map method. Now: the
files are read and run through the model in passes of `core.infer.PASS_SCANS` scans, and each answer keeps
the scan as shown (`core.cam.shown`, at most 1024 px, a greyscale scan in one channel) beside its overlay.
Before: every file read first, one pass over the whole upload, and each answer kept the whole scan in colour
(the same code with `PASS_SCANS` above the upload's size and `shown` giving the full-size scan in colour);
and, between the two, passes and the scan as shown but always in three channels. Each process first diagnoses two
scans (the model loaded and warm), then the upload; it reports its peak resident memory above the warm state,
the time, the size of the answers' images, and a digest of the answers, which must be the same every way.
`--side` makes the scans large radiograph-sized files (the demo scans enlarged). Writes JSON (default
bench/results/diagnose-memory-cpu.json).

    python bench/diagnose_memory.py [--model demo] [--scans 200]
    python bench/diagnose_memory.py --scans 100 --side 3000 --out bench/results/diagnose-memory-3000px.json
    python bench/diagnose_memory.py --model runs/<a 224 px run> --out bench/results/diagnose-memory-224px.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import machine_label, write_result  # noqa: E402

EXAMPLES = sorted((ROOT / "assets" / "examples").glob("demo-*.png"))
ONE_PASS = 1_000_000  # more scans than any upload: the whole upload in one pass


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def full_size(pixels: np.ndarray) -> np.ndarray:
    """The scan as answers kept it first: whole, in colour."""
    return np.stack([pixels] * 3, -1) if pixels.ndim == 2 else pixels


def shown_in_colour(pixels: np.ndarray) -> np.ndarray:
    """The scan as answers kept it next: at the overlay's size, but a greyscale scan in three equal channels."""
    from core.cam import shown

    return full_size(shown(pixels))


WAYS = {  # the JSON's name for it ({n}: PASS_SCANS), passes of PASS_SCANS or one, how an answer keeps its scan
    "before": ("one pass, full-size copies (before)", False, full_size),
    "colour": ("passes of {n}, the scan as shown in three channels (until 2026-12-06)", True, shown_in_colour),
    "now": ("passes of {n} (now)", True, None),
}


def upload(scans: int, side: int, folder: Path, *, write: bool = True) -> list[Path]:
    """`scans` files: the demo scans in turn, or (`side` > 0) the demo scans enlarged to `side` px high and
    4/5 of it wide, like a radiograph, in `folder` (written there unless `write` is False)."""
    if not side:
        return [EXAMPLES[i % len(EXAMPLES)] for i in range(scans)]
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    big = []
    for example in EXAMPLES:
        path = folder / f"{example.stem}-{side}px.png"
        if write:
            Image.open(example).convert("L").resize((side * 4 // 5, side), Image.Resampling.BILINEAR).save(path)
        big.append(path)
    return [big[i % len(big)] for i in range(scans)]


def child(model: str, files: list[Path], method: str, *, way: str) -> dict:
    """One upload of `files` diagnosed one of the `WAYS`."""
    from core import infer

    _, passes, keep = WAYS[way]
    if not passes:
        infer.PASS_SCANS = ONE_PASS
    if keep is not None:
        infer.shown = keep
    predictor = infer.Predictor(model)
    predictor.diagnose_files(files[:2], method=method)
    warm = peak_mb()
    start = time.perf_counter()
    found = predictor.diagnose_files(files, method=method)
    seconds = time.perf_counter() - start
    return {
        "pass_scans": infer.PASS_SCANS if infer.PASS_SCANS < ONE_PASS else "all",
        "seconds": round(seconds, 2),
        "peak_above_warm_mb": round(peak_mb() - warm, 1),
        "warm_mb": round(warm, 1),
        "answer_images_mb": round(sum(r["image"].nbytes + r["overlay"].nbytes for r in found) / 2**20, 1),
        "predicted": [r["predicted"] for r in found],
        "probabilities": [list(r["probabilities"].values()) for r in found],
        "ood_scores": [r["ood_score"] for r in found],
        "cam_sums": [float(r["cam"].sum()) for r in found],
        "overlay_sums": [int(r["overlay"].sum()) for r in found],
    }


def same_answers(a: dict, b: dict, tol: float = 1e-4) -> bool:
    """Whether two ways gave the same answers (to float round-off: batches of other sizes may sum in
    another order); a missing OOD score (None) matches only a missing one."""

    def close(key: str) -> bool:
        x, y = (np.array(way[key], dtype=float) for way in (a, b))  # None -> nan
        return x.shape == y.shape and np.allclose(x, y, rtol=tol, atol=tol, equal_nan=True)

    keys = ("probabilities", "ood_scores", "cam_sums", "overlay_sums")
    return a["predicted"] == b["predicted"] and all(close(k) for k in keys)


def main(argv: list[str] | None = None) -> int:
    from core.infer import PASS_SCANS
    from core.model import DEMO

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEMO, help="'demo' (the shipped model), a run folder or a .safetensors file")
    ap.add_argument("--scans", type=int, default=200)
    ap.add_argument("--side", type=int, default=0, help="enlarge the scans to this height in px (0: as they are)")
    ap.add_argument("--method", default="gradcam")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "diagnose-memory-cpu.json")
    ap.add_argument("--child", choices=tuple(WAYS), help=argparse.SUPPRESS)  # a measuring process
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)  # where the enlarged scans are
    args = ap.parse_args(argv)
    if args.child:
        files = upload(args.scans, args.side, args.folder, write=False)
        print(json.dumps(child(args.model, files, args.method, way=args.child)))
        return 0
    ways = {}
    with tempfile.TemporaryDirectory() as folder:
        upload(args.scans, args.side, Path(folder))  # written once, read by each way
        for way, (label, _, _) in WAYS.items():
            name = label.format(n=PASS_SCANS)
            cmd = [sys.executable, __file__, "--model", str(args.model), "--scans", str(args.scans)]
            cmd += ["--side", str(args.side), "--folder", folder, "--method", args.method, "--child", way]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
            ways[name] = json.loads(done.stdout.strip().splitlines()[-1])
    before, in_colour, now = ways.values()
    import torch

    result = {
        "model": Path(args.model).name,
        "scans": args.scans,
        "scan_size": "demo scans (64 px)" if not args.side else f"{args.side * 4 // 5} x {args.side} px",
        "method": args.method,
        "same_answers": same_answers(before, now) and same_answers(in_colour, now),
        "ways": {
            k: {f: v[f] for f in ("pass_scans", "seconds", "peak_above_warm_mb", "warm_mb", "answer_images_mb")}
            for k, v in ways.items()
        },
        "machine": machine_label(torch.device("cpu")),
    }
    write_result(args.out, result)
    print(json.dumps(result, indent=2))
    return 0 if result["same_answers"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
