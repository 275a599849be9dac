"""Loading a folder of compressed DICOM: decoder workers side by side against one worker at a time.

JPEG lossless, JPEG-LS and HTJ2K DICOM decode in core.isolated's worker processes (a decoder that aborts on
a damaged file costs a worker, not the studio). Until now there was one worker, so a folder of such files
decoded on one core however many the machine has. This builds a class-per-subfolder tree of CT-like
512 x 512 16-bit slices in the transfer syntax asked for, then loads it with `core.folder.load_folder`, as
a training run does, with WORKERS = 1 (the baseline: the previous behaviour) and with the default pool,
alternately, and writes JSON (default bench/results/decode-cpu.json). Every load must give the same pixels.

    python bench/decode.py --files 200 --syntax JPEGLosslessProcess14_1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import RESULTS, cpu_name, write_result  # noqa: E402
from core import isolated  # noqa: E402
from core.config import DataConfig  # noqa: E402
from core.folder import load_folder  # noqa: E402
from tests.helpers import compress_dicom, write_dicom  # noqa: E402 - the same writers the tests use


def ct_slice(rng: np.random.Generator, size: int) -> np.ndarray:
    """A CT-like 16-bit slice: a bright disc (body) with smooth structure and noise, on air."""
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    body = (xx**2 + yy**2) < 0.18
    tissue = 1000 + 200 * np.sin(8 * xx + rng.uniform(0, 6)) * np.cos(6 * yy) + rng.normal(0, 20, (size, size))
    return np.where(body, tissue, 0).clip(0, 4095).astype(np.uint16)


def build(folder: Path, files: int, size: int, syntax: str) -> None:
    rng = np.random.default_rng(0)
    plain = folder / "plain.dcm"
    for i in range(files):
        cls = folder / "tree" / ("a", "b")[i % 2]
        cls.mkdir(parents=True, exist_ok=True)
        write_dicom(plain, ct_slice(rng, size), window=(40, 400))
        compress_dicom(plain, cls / f"{i:05d}.dcm", syntax)
    plain.unlink()


def load(tree: Path, workers: int) -> tuple[float, np.ndarray]:
    isolated.shutdown()  # every timed load starts its workers, as a fresh run does
    isolated.WORKERS = workers
    start = time.perf_counter()
    data = load_folder(DataConfig(dataset="folder", data_path=str(tree), image_size=64))
    seconds = time.perf_counter() - start
    pixels = np.concatenate([s.images.numpy() for s in (data.train, data.val, data.test)])
    return seconds, pixels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--size", type=int, default=512, help="slice size in pixels")
    ap.add_argument("--syntax", default="JPEGLosslessProcess14_1", help="a gdcm.TransferSyntax member")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "decode-cpu.json")
    args = ap.parse_args(argv)
    pool = isolated.WORKERS
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp), args.files, args.size, args.syntax)
        tree = Path(tmp) / "tree"
        megabytes = sum(f.stat().st_size for f in tree.rglob("*.dcm")) / 2**20
        times: dict[str, list[float]] = {"one worker": [], f"{pool} workers": []}
        reference = None
        for _ in range(args.repeats):
            for label, n in ((f"{pool} workers", pool), ("one worker", 1)):
                seconds, pixels = load(tree, n)
                if reference is None:
                    reference = pixels
                assert np.array_equal(pixels, reference), "the loads gave different pixels"
                times[label].append(seconds)
                print(f"{label}: {args.files / seconds:.0f} files/s")
    isolated.shutdown()
    isolated.WORKERS = pool
    best = {label: min(t) for label, t in times.items()}
    result = {
        "what": f"core.folder.load_folder on {args.files} DICOM files, {args.size} x {args.size} 16-bit, {args.syntax}",
        "machine": f"{os.cpu_count()}-core {cpu_name()}",
        "compressed_mb": round(megabytes, 1),
        "workers": pool,
        "seconds": {label: [round(t, 3) for t in ts] for label, ts in times.items()},
        "files_per_s_best": {label: round(args.files / t, 1) for label, t in best.items()},
        "files_per_s_median": {label: round(args.files / statistics.median(t), 1) for label, t in times.items()},
        "speedup_best": round(best["one worker"] / best[f"{pool} workers"], 2),
        "baseline": "one decoder worker, calls one at a time (before this change)",
    }
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
