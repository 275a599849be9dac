"""Lesion-map quality: do a model's maps point at the demo data's known lesions?

For each CAM method, the map of the true class on demo scans that have a lesion is scored with the
pointing game (is the peak inside the lesion) and the energy share (how much of the map lies inside it).
Baseline in the same run: a uniform map, whose energy share is the lesion's area share, and a
centre-weighted map (a Gaussian bump in the middle of the image). Writes JSON
(default bench/results/lesion-maps-<model>.json).

    python bench/lesion_maps.py --model assets/demo-model.safetensors --images 100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import RESULTS, write_result  # noqa: E402
from core.cam import CAM_METHODS  # noqa: E402
from core.localization import energy_share, pointing_game, score_maps  # noqa: E402
from core.model import load_model  # noqa: E402
from core.synthetic import CLASSES, render  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="assets/demo-model.safetensors")
    ap.add_argument("--images", type=int, default=100, help="lesion scans to score")
    ap.add_argument("--methods", default=",".join(CAM_METHODS))
    ap.add_argument("--seed", type=int, default=4242, help="demo data seed (not the training seed)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    model, spec, meta = load_model(args.model)
    if spec.classes != list(CLASSES):
        raise SystemExit("this benchmark needs a model trained on the demo data")
    images, labels, masks = render(args.images * 2, size=spec.image_size, seed=args.seed)
    keep = torch.nonzero(labels != 0).flatten()[: args.images]  # normal scans have no lesion
    images, labels, masks = images[keep], labels[keep], masks[keep]
    size = spec.image_size
    yy, xx = np.mgrid[0:size, 0:size]
    centre = np.exp(-(((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 4) ** 2)))
    rows = {
        "uniform map (baseline)": [
            (pointing_game(np.ones((size, size)), m), energy_share(np.ones((size, size)), m)) for m in masks.numpy()
        ],
        "centre-weighted map (baseline)": [(pointing_game(centre, m), energy_share(centre, m)) for m in masks.numpy()],
    }
    seconds = {}
    for method in args.methods.split(","):
        scored = score_maps(model, images, labels, masks, method=method)
        rows[method] = [(scored["pointing_game"], scored["energy_share"])]
        seconds[method] = scored["seconds_per_image"]
    result = {
        "model": str(args.model),
        "method": meta.get("method"),
        "rga": meta.get("rga"),
        "images": len(images),
        "image_size": size,
        "results": {},
    }
    print(f"{'map':32s} pointing game  energy share  s/image   ({len(images)} demo lesion scans)")
    for name, scores in rows.items():
        pg, es = np.array(scores).T
        result["results"][name] = {
            "pointing_game": float(pg.mean()),
            "energy_share": float(es.mean()),
            "seconds_per_image": seconds.get(name),
        }
        t = f"{seconds[name]:.3f}" if name in seconds else "-"
        print(f"{name:32s} {pg.mean():13.3f} {es.mean():13.3f}  {t:>7s}")
    out = args.out or RESULTS / f"lesion-maps-{Path(args.model).stem}.json"
    write_result(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
