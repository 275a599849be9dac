"""Lesion-map quality: do a model's maps point at the demo data's known lesions?

For each CAM method, the map of the true class on demo scans that have a lesion is scored with the
pointing game (is the peak inside the lesion) and the energy share (how much of the map lies inside it).
Baseline in the same run: a uniform map, whose energy share is the lesion's area share, and a
centre-weighted map (a Gaussian bump in the middle of the image). ScoreCAM, which runs the model once
per channel of the mapped layer, is scored on the first `--scorecam-images` scans, twice: with its masked
passes in the precision the studio picks for this device (`core.device.precision`: bf16 on GPUs, AMX and
AMD's AVX-512 BF16) and in float32 as the grad-cam package runs them (the baseline), with how far the two
maps lie apart and whether they give the same lesion box. Writes JSON (default
bench/results/lesion-maps-<model>.json).

    python bench/lesion_maps.py --model assets/demo-model.safetensors --images 100
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import RESULTS, machine_label, write_result  # noqa: E402
from core.augment import eval_transform  # noqa: E402
from core.cam import CAM_METHODS, compute_cam, lesion_box  # noqa: E402
from core.device import precision  # noqa: E402
from core.localization import energy_share, pointing_game, resize_map, score_maps  # noqa: E402
from core.model import load_model  # noqa: E402
from core.synthetic import CLASSES, render  # noqa: E402


def scorecam_precisions(model, images, labels, masks) -> dict:
    """ScoreCAM on each scan with its masked passes in float32 (the grad-cam package's way) and in the
    precision the studio picks here: seconds a scan, pointing game and energy share of each, and how the
    maps differ (largest and mean absolute difference, share of scans with the same lesion box)."""
    dtype, why = precision(images.device)
    arms = {"float32": "off", "studio": "auto"}
    maps: dict[str, list[np.ndarray]] = {arm: [] for arm in arms}
    seconds = dict.fromkeys(arms, 0.0)
    for x, y in zip(images, labels, strict=True):
        for arm, amp in arms.items():  # alternated scan by scan, so drift on a shared machine hits both
            start = time.perf_counter()
            maps[arm].append(compute_cam(model, eval_transform(x[None]), target=int(y), method="scorecam", amp=amp))
            seconds[arm] += time.perf_counter() - start
    out = {"studio_precision": str(dtype or torch.float32).removeprefix("torch."), "why": why, "images": len(images)}
    for arm in arms:
        scaled = [resize_map(c, m.shape) for c, m in zip(maps[arm], masks, strict=True)]
        out[arm] = {
            "seconds_per_image": seconds[arm] / len(images),
            "pointing_game": float(np.mean([pointing_game(c, m) for c, m in zip(scaled, masks, strict=True)])),
            "energy_share": float(np.mean([energy_share(c, m) for c, m in zip(scaled, masks, strict=True)])),
        }
    diff = [np.abs(a - b) for a, b in zip(maps["float32"], maps["studio"], strict=True)]
    out["speed_up"] = out["float32"]["seconds_per_image"] / out["studio"]["seconds_per_image"]
    out["max_abs_difference"] = float(max(d.max() for d in diff))
    out["mean_abs_difference"] = float(np.mean([d.mean() for d in diff]))
    same = [lesion_box(a) == lesion_box(b) for a, b in zip(maps["float32"], maps["studio"], strict=True)]
    out["same_lesion_box"] = float(np.mean(same))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="assets/demo-model.safetensors")
    ap.add_argument("--images", type=int, default=100, help="lesion scans to score")
    ap.add_argument("--methods", default=",".join(CAM_METHODS))
    ap.add_argument("--scorecam-images", type=int, default=20, help="ScoreCAM is slow: the scans it maps")
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
    seconds, scorecam = {}, None
    for method in args.methods.split(","):
        if method == "scorecam":
            n = args.scorecam_images
            scorecam = scorecam_precisions(model, images[:n], labels[:n], masks[:n].numpy())
            for arm, name in (("studio", "scorecam"), ("float32", "scorecam, float32 (baseline)")):
                rows[name] = [(scorecam[arm]["pointing_game"], scorecam[arm]["energy_share"])]
                seconds[name] = scorecam[arm]["seconds_per_image"]
            continue
        scored = score_maps(model, images, labels, masks, method=method)
        rows[method] = [(scored["pointing_game"], scored["energy_share"])]
        seconds[method] = scored["seconds_per_image"]
    result = {
        "machine": machine_label(images.device),
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
    if scorecam:
        result["scorecam_precision"] = scorecam
        print(
            f"ScoreCAM on {scorecam['images']} scans, masked passes in {scorecam['studio_precision']} "
            f"({scorecam['why']}): {scorecam['speed_up']:.2f}x float32's speed, maps at most "
            f"{scorecam['max_abs_difference']:.3f} apart (mean {scorecam['mean_abs_difference']:.4f}), "
            f"the same lesion box on {scorecam['same_lesion_box']:.0%} of them"
        )
    out = args.out or RESULTS / f"lesion-maps-{Path(args.model).stem}.json"
    write_result(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
