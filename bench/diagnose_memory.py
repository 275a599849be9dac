"""Peak memory and time of one large Diagnose upload: the studio's passes of `core.infer.PASS_SCANS` scans
against one pass over the whole upload (as before), each in a process of its own (a process's peak only
grows), with the same model, scans and lesion-map method. Each process first diagnoses two scans (the model
loaded and warm), then the upload; it reports its peak resident memory above the warm state, the time, and
a digest of the answers, which must be the same both ways. Writes JSON (default
bench/results/diagnose-memory-cpu.json).

    python bench/diagnose_memory.py [--model demo] [--scans 200]
    python bench/diagnose_memory.py --model runs/<a 224 px run> --out bench/results/diagnose-memory-224px.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
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


def child(model: str, scans: int, pass_scans: int, method: str) -> dict:
    """One upload of `scans` files (the demo scans in turn) diagnosed in passes of `pass_scans`."""
    from core import infer

    infer.PASS_SCANS = pass_scans
    predictor = infer.Predictor(model)
    files = [EXAMPLES[i % len(EXAMPLES)] for i in range(scans)]
    predictor.diagnose_files(files[:2], method=method)
    warm = peak_mb()
    start = time.perf_counter()
    found = predictor.diagnose_files(files, method=method)
    seconds = time.perf_counter() - start
    return {
        "pass_scans": pass_scans if pass_scans < ONE_PASS else "all",
        "seconds": round(seconds, 2),
        "peak_above_warm_mb": round(peak_mb() - warm, 1),
        "warm_mb": round(warm, 1),
        "predicted": [r["predicted"] for r in found],
        "probabilities": [list(r["probabilities"].values()) for r in found],
        "ood_scores": [r["ood_score"] for r in found],
        "cam_sums": [float(r["cam"].sum()) for r in found],
    }


def same_answers(a: dict, b: dict, tol: float = 1e-4) -> bool:
    """Whether two ways gave the same answers (to float round-off: batches of other sizes may sum in
    another order); a missing OOD score (None) matches only a missing one."""

    def close(key: str) -> bool:
        x, y = (np.array(way[key], dtype=float) for way in (a, b))  # None -> nan
        return x.shape == y.shape and np.allclose(x, y, rtol=tol, atol=tol, equal_nan=True)

    return a["predicted"] == b["predicted"] and all(close(k) for k in ("probabilities", "ood_scores", "cam_sums"))


def main(argv: list[str] | None = None) -> int:
    from core.infer import PASS_SCANS
    from core.model import DEMO

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEMO, help="'demo' (the shipped model), a run folder or a .safetensors file")
    ap.add_argument("--scans", type=int, default=200)
    ap.add_argument("--method", default="gradcam")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "diagnose-memory-cpu.json")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)  # a measuring process: its passes' size
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.model, args.scans, args.child, args.method)))
        return 0
    ways = {}
    for name, size in (("one pass (before)", ONE_PASS), (f"passes of {PASS_SCANS} (now)", PASS_SCANS)):
        cmd = [sys.executable, __file__, "--model", str(args.model), "--scans", str(args.scans)]
        cmd += ["--method", args.method, "--child", str(size)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        ways[name] = json.loads(done.stdout.strip().splitlines()[-1])
    before, now = ways.values()
    import torch

    result = {
        "model": Path(args.model).name,
        "scans": args.scans,
        "method": args.method,
        "same_answers": same_answers(before, now),
        "ways": {
            k: {f: v[f] for f in ("pass_scans", "seconds", "peak_above_warm_mb", "warm_mb")} for k, v in ways.items()
        },
        "machine": machine_label(torch.device("cpu")),
    }
    write_result(args.out, result)
    print(json.dumps(result, indent=2))
    return 0 if result["same_answers"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
