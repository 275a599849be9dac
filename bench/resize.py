"""Which filter brings a scan of another size to the model's: each of `core.imageio.RESIZE_FILTERS` side by side.

A scan rarely comes at the model's size: a viewer's export or a screenshot is often the same scan enlarged.
Here fresh demo scans (a seed none of the model's splits used) are saved enlarged 2, 3 and 4 times by four
common upscalers (nearest, bilinear, bicubic, Lanczos) and read back through each resize filter. For each: the
share Diagnose flags as unlike the training data (false alarms: these are the model's own kind of scan), the
accuracy, and how often the answer is the one given to the scan at its own size. Then the outliers of
bench/ood.py (pydicom's scans, photographs, noise, blank images) through each filter: the share flagged, which
should stay at 1. And the time to resize a 3000 x 2400 scan. Writes JSON.

    python bench/resize.py [--model assets/demo-model.safetensors] [--fresh 300]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import RESULTS, machine_label, write_result  # noqa: E402
from bench.ood import fresh_scans, outlier_scans  # noqa: E402
from core import ood  # noqa: E402
from core.evaluate import answered_probs, load_trained  # noqa: E402
from core.imageio import RESIZE_FILTERS, Scan, to_model_array  # noqa: E402

UPSCALERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
FACTORS = (2, 3, 4)


def enlarged(pixels: np.ndarray, factor: int, upscaler: str) -> np.ndarray:
    h, w = pixels.shape[:2]
    return np.asarray(Image.fromarray(pixels).resize((w * factor, h * factor), UPSCALERS[upscaler]))


def judge(model, det, meta, spec, scans: list[np.ndarray], resize: str) -> dict:
    """What Diagnose makes of `scans` resized by `resize`: flagged (the check's score or the colour rule),
    the class answered."""
    arrays = np.stack(
        [to_model_array(Scan(p), size=spec.image_size, channels=spec.channels, resize=resize) for p in scans]
    )
    feats = ood.features(model, torch.from_numpy(arrays))
    colour = np.array([ood.colour_for_greyscale(spec.channels, p) for p in scans])
    flagged = (det.score(feats) > det.threshold).numpy() | colour
    answer = answered_probs(feats["logits"], meta)[0].argmax(1).numpy()
    return {"flagged": flagged, "answer": answer}


def resize_ms(resize: str, spec, repeats: int = 5) -> float:
    big = np.random.default_rng(0).integers(0, 256, (3000, 2400), dtype=np.uint8)
    to_model_array(Scan(big), size=spec.image_size, channels=spec.channels, resize=resize)
    t = time.perf_counter()
    for _ in range(repeats):
        to_model_array(Scan(big), size=spec.image_size, channels=spec.channels, resize=resize)
    return (time.perf_counter() - t) / repeats * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "assets" / "demo-model.safetensors"))
    ap.add_argument("--fresh", type=int, default=300, help="fresh demo scans to enlarge")
    ap.add_argument("--out", type=Path, default=RESULTS / "resize-demo-model.json")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    model, spec, meta, _ = load_trained(args.model)
    det = ood.load(args.model, meta)
    data = meta["config"]["data"]
    if det is None or data.get("dataset") != "synthetic":
        raise SystemExit("needs a model of the demo data with an out-of-distribution check")
    images, labels = fresh_scans(data, args.fresh, labels=True)
    labels = labels.numpy()
    own = [im[0].numpy() for im in images]
    at_size = judge(model, det, meta, spec, own, "bilinear")  # at the model's size no filter is used
    result = {
        "model": Path(args.model).name,
        "model_resize": spec.resize,
        "scans": f"{args.fresh} new demo scans at {spec.image_size} px, enlarged and read back",
        "at_own_size": {
            "flagged": float(at_size["flagged"].mean()),
            "accuracy": float((at_size["answer"] == labels).mean()),
        },
        "enlarged": {},
    }
    for upscaler in UPSCALERS:
        for factor in FACTORS:
            scans = [enlarged(p, factor, upscaler) for p in own]
            row = {}
            for resize in RESIZE_FILTERS:
                got = judge(model, det, meta, spec, scans, resize)
                row[resize] = {
                    "flagged": float(got["flagged"].mean()),
                    "accuracy": float((got["answer"] == labels).mean()),
                    "same_answer": float((got["answer"] == at_size["answer"]).mean()),
                }
            result["enlarged"][f"{upscaler} x{factor}"] = row
            print(f"{upscaler} x{factor}: " + "  ".join(f"{k} {v['flagged']:.2f}" for k, v in row.items()), flush=True)
    result["mean_flagged"] = {
        resize: float(np.mean([row[resize]["flagged"] for row in result["enlarged"].values()]))
        for resize in RESIZE_FILTERS
    }
    groups = outlier_scans()
    result["outliers_flagged"] = {
        resize: {
            g: float(judge(model, det, meta, spec, [s.pixels for _, s in items], resize)["flagged"].mean())
            for g, items in groups.items()
        }
        for resize in RESIZE_FILTERS
    }
    result["outliers"] = {g: len(v) for g, v in groups.items()}
    result["resize_ms_3000x2400"] = {resize: resize_ms(resize, spec) for resize in RESIZE_FILTERS}
    result["machine"] = machine_label(torch.device("cpu"))
    result["seconds"] = round(time.perf_counter() - start, 1)
    write_result(args.out, result)
    print(json.dumps({k: result[k] for k in ("mean_flagged", "outliers_flagged", "resize_ms_3000x2400")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
