"""How well the out-of-distribution check separates the demo model's own kind of scan from others.

In distribution: the demo model's test split (never seen in training). Outliers: the 2D images among
pydicom's test files (CT, MR, ultrasound, radiographs...), scikit-image's bundled photographs, uniform
noise at three sizes, and blank images. Reports the check's AUROC (its score as a ranking), the share of
each group it flags at the stored threshold, and the same for the energy score (Liu et al., NeurIPS 2020)
as a baseline in the same run, its threshold set as the check's is (the conformal rank of the validation
scans' scores); `diagnose` gives what Diagnose flags, the check and the colour rule
together (a colour image given to a model of greyscale scans, `core.ood.colour_for_greyscale`); writes JSON. With
`--fit-sizes`, the check is also refitted on that many evenly spaced training images (as
`core.ood.fit_sample` picks them) and judged the same way, side by side: how many a run's end needs to
pass through the model. `layer_sets` refits the check as a run's end does (on at most 2,000 training
images) with the model's three layers alone, as before the input statistics, and with all four, and
judges both the same way in the same run. `threshold_rules` sets the threshold on validation splits drawn
again and again from the fresh scans, as the check did before (the layers' scales and the threshold the
split's 99th percentiles), as it does now (the threshold the conformal rank, `core.ood.conformal_threshold`)
and with the scales from half the split and the conformal rank on the other half, and gives each way's
false-alarm rate on the other fresh scans: mean and 5th-95th percentile over the splits. For a model of the
demo data, `flagged_fresh` is the share of `--fresh` newly rendered demo scans (a seed none of its splits
used) each check flags: the false-alarm rate on the model's own kind of scan, measured on thousands rather
than the test split's few hundred (a quick-preset model's 200 test scans gave 5.5% where 3,000 fresh ones
give 2.2%); `flagged_fresh_inverted` the share of the same scans in negative it flags (255 - grey level: a
MONOCHROME1 image read as MONOCHROME2, a film scanned inverted), which should be all of them.

    python bench/ood.py [--model assets/demo-model.safetensors] [--out bench/results/ood-demo-model.json]
    python bench/ood.py --fit-sizes 500,1000,2000,5000
    python bench/ood.py --model runs/<quick-preset run> --out bench/results/ood-quick-model.json --fresh 3000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from bench import machine_label
from core import ood
from core.errors import StudioError
from core.evaluate import load_trained
from core.imageio import Scan, read_scan, to_model_array
from core.synthetic import SyntheticSpec, render

ROOT = Path(__file__).resolve().parents[1]
FRESH_SEED = 1_000_003  # added to the data's seed: demo scans none of a run's splits holds
PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "retina", "moon", "page", "text", "horse", "coins", "rocket")


@contextlib.contextmanager
def c_stderr_silenced():
    """Within the block, what C libraries write to the process's stderr is dropped: openjpeg prints its own
    complaint about one of pydicom's broken JPEG 2000 test files ("Invalid number of tiles") before the read
    fails with an error this bench already handles. For a single-threaded script only: it silences the whole
    process's stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def outlier_scans() -> dict[str, list[tuple[str, Scan]]]:
    import pydicom.data
    from skimage import data as photos

    groups: dict[str, list[tuple[str, Scan]]] = {"dicom": [], "photo": [], "noise": [], "blank": []}
    bundled = Path(pydicom.data.__file__).parent / "test_files"  # never the ones pydicom would download
    for path in sorted(bundled.glob("*.dcm")):
        try:
            with warnings.catch_warnings(), c_stderr_silenced():  # test files, many odd on purpose: padding...
                warnings.simplefilter("ignore")
                groups["dicom"].append((Path(path).name, read_scan(path)))
        except StudioError:  # many pydicom test files hold no single 2D image
            continue
    for name in PHOTOS:
        a = getattr(photos, name)()
        a = (a * 255).astype(np.uint8) if a.dtype == bool else a.astype(np.uint8)
        groups["photo"].append((name, Scan(a[..., :3] if a.ndim == 3 else a, {})))
    rng = np.random.default_rng(0)
    for size in (64, 128, 256):
        groups["noise"].append((f"uniform-{size}", Scan(rng.integers(0, 256, (size, size), dtype=np.uint8), {})))
        groups["noise"].append(
            (f"gaussian-{size}", Scan(np.clip(rng.normal(128, 40, (size, size)), 0, 255).astype(np.uint8), {}))
        )
    for value in (0, 64, 128, 192, 255):
        groups["blank"].append((f"value-{value}", Scan(np.full((64, 64), value, np.uint8), {})))
    return groups


def fresh_scans(data: dict, n: int, *, labels: bool = False):
    """`n` demo scans like a model's data (`data`: its config's), from a seed none of its splits used, with their
    labels when asked (images, labels); None for other data, whose kind of scan cannot be drawn anew."""
    if data.get("dataset") != "synthetic" or n < 1:
        return None
    spec = SyntheticSpec(lesion_contrast=data.get("synthetic_contrast", 1.0))
    images, classes = render(n, size=data["image_size"], seed=data.get("seed", 0) + FRESH_SEED, spec=spec)[:2]
    return (images, classes) if labels else images


def threshold_rules(det: ood.Detector, fresh: dict, n_val: int, repeats: int, seed: int = 0) -> dict:
    """The false-alarm rate of each way to set the threshold, over `repeats` validation splits of `n_val` scans
    drawn from the `fresh` ones (the other fresh scans judged): the rate a way promises, not one split's luck.
    Before: the layers' scales and the threshold were the split's 99th percentiles; now (`ood.fit`) the
    threshold is the conformal rank; and, for comparison, the scales from half the split and the conformal
    rank on the other half, which needs no other assumption for its 1 in 100."""
    dist = torch.stack([det.layer_distance(k, fresh[k]) for k in det.layers])  # (layers, scans)
    g = torch.Generator().manual_seed(seed)

    def scales(d):
        return torch.quantile(d, ood.QUANTILE, dim=1, keepdim=True).clamp_min(1e-12)

    rates: dict[str, list[float]] = {}
    for _ in range(repeats):
        order = torch.randperm(dist.shape[1], generator=g)
        val, rest = dist[:, order[:n_val]], dist[:, order[n_val:]]
        ways = {  # (the scans setting the scales, those setting the threshold, the rule)
            "all scans, 99th percentile (before)": (val, val, lambda s: float(torch.quantile(s, ood.QUANTILE))),
            "all scans, conformal rank (now)": (val, val, ood.conformal_threshold),
            "half sets the scales, conformal rank on the rest": (
                val[:, 0::2],
                val[:, 1::2],
                ood.conformal_threshold,
            ),
        }
        for name, (scaling, judging, rule) in ways.items():
            s = scales(scaling)
            threshold = rule((judging / s).amax(0))
            rates.setdefault(name, []).append(float(((rest / s).amax(0) > threshold).double().mean()))
    return {
        "validation_scans": n_val,
        "judged_scans": dist.shape[1] - n_val,
        "splits": repeats,
        **{
            name: {"mean": float(np.mean(r)), "p05": float(np.quantile(r, 0.05)), "p95": float(np.quantile(r, 0.95))}
            for name, r in rates.items()
        },
    }


def energy(feats: dict[str, torch.Tensor]) -> torch.Tensor:
    """The energy score of `ood.features` (Liu et al. 2020): higher = less like the data, as for the check's."""
    return -torch.logsumexp(feats["logits"], 1).double()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "assets" / "demo-model.safetensors"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ood-demo-model.json")
    ap.add_argument("--fit-sizes", default="", help="also refit on this many training images each, e.g. 1000,5000")
    ap.add_argument("--fresh", type=int, default=3000, help="new demo scans to count false alarms on (demo data)")
    ap.add_argument("--rule-splits", type=int, default=1000, help="validation splits drawn per threshold rule")
    args = ap.parse_args(argv)
    fit_sizes = [int(n) for n in args.fit_sizes.split(",") if n.strip()]
    start = time.perf_counter()
    model, spec, meta, data = load_trained(args.model)
    det = ood.load(args.model, meta)
    if det is None:
        raise SystemExit("the model has no out-of-distribution check; fit one with python -m core.ood")
    inside = ood.features(model, data.test.images)
    fresh_images = fresh_scans(meta["config"]["data"], args.fresh)
    fresh = None if fresh_images is None else ood.features(model, fresh_images)
    # the same fresh scans in negative (a MONOCHROME1 image read as MONOCHROME2, a film scanned inverted):
    # the model's own kind of scan in every other respect, which it should not answer as if it were one
    inverted = None if fresh_images is None else ood.features(model, 255 - fresh_images)
    groups = outlier_scans()
    arrays = {
        g: [to_model_array(s, size=spec.image_size, channels=spec.channels, resize=spec.resize) for _, s in items]
        for g, items in groups.items()
    }
    feats = {g: ood.features(model, torch.from_numpy(np.stack(a))) for g, a in arrays.items()}

    scores = {"mahalanobis": lambda f: det.score(f) / det.threshold, "energy": energy}
    # set as the detector's own threshold is: the conformal rank of the validation scans' scores
    energy_threshold = ood.conformal_threshold(energy(ood.features(model, data.val.images)))
    thresholds = {"mahalanobis": 1.0, "energy": energy_threshold}
    result = {
        "model": Path(args.model).name,
        "config": {k: meta["config"][k] for k in ("method", "epochs") if k in meta["config"]},
        "test_accuracy": meta.get("metrics", {}).get("test_acc"),
        "in_distribution": f"its test split ({len(data.test.images)} scans)",
        "fresh": None if fresh is None else f"{len(fresh['logits'])} new demo scans (seed + {FRESH_SEED:,})",
    }

    def judge(s, threshold: float) -> dict:
        ins, out = s(inside).numpy(), torch.cat([s(f) for f in feats.values()]).numpy()
        labels = np.r_[np.zeros(len(ins)), np.ones(len(out))]
        return {
            "auroc": float(roc_auc_score(labels, np.r_[ins, out])),
            "threshold": threshold,
            "flagged_in_distribution": float((ins > threshold).mean()),
            "flagged_fresh": None if fresh is None else float((s(fresh).numpy() > threshold).mean()),
            "flagged_fresh_inverted": None if inverted is None else float((s(inverted).numpy() > threshold).mean()),
            "flagged": {g: float((s(f).numpy() > threshold).mean()) for g, f in feats.items()},
            "missed": [
                n for g, f in feats.items() for (n, _), v in zip(groups[g], s(f).numpy(), strict=True) if v <= threshold
            ],
        }

    for k, s in scores.items():
        result[k] = judge(s, thresholds[k])
    # as Diagnose answers: the stored check's score, and any colour image given to a model of greyscale scans
    colour = {g: np.array([ood.colour_for_greyscale(spec.channels, s.pixels) for _, s in v]) for g, v in groups.items()}
    outside = {g: (scores["mahalanobis"](f).numpy() > 1.0) | colour[g] for g, f in feats.items()}
    result["diagnose"] = {
        "flagged": {g: float(v.mean()) for g, v in outside.items()},
        "missed": [n for g, v in outside.items() for (n, _), out in zip(groups[g], v, strict=True) if not out],
        "in_colour": [n for g, v in colour.items() for (n, _), c in zip(groups[g], v, strict=True) if c],
    }
    # one pass over the training split; each refit takes its evenly spaced share of it
    train = ood.features(model, data.train.images)
    val = ood.features(model, data.val.images)
    keep = ood.fit_sample(len(data.train.images))
    sets = {"model layers (before)": ood.MODEL_LAYERS, "model layers + input statistics": ood.LAYERS}
    refits = {
        name: ood.fit({k: v[keep] for k, v in train.items()}, data.train.labels[keep], val, layers=layers)
        for name, layers in sets.items()
    }
    result["layer_sets"] = {
        name: judge(lambda f, d=refit: d.score(f) / d.threshold, 1.0) for name, refit in refits.items()
    }
    if fresh is not None:  # each threshold rule's false alarms, at a quick run's validation size and this model's
        sizes = [n for n in sorted({200, len(data.val.images)}) if n <= len(fresh["logits"]) // 2]
        now = refits["model layers + input statistics"]  # all four layers, as a run's end fits the check
        result["threshold_rules"] = [threshold_rules(now, fresh, n, args.rule_splits) for n in sizes]
    if fit_sizes:
        result["fit_sizes"] = {}
        for n in fit_sizes:
            keep = ood.fit_sample(len(data.train.images), most=n)
            refit = ood.fit({k: v[keep] for k, v in train.items()}, data.train.labels[keep], val)
            result["fit_sizes"][str(len(keep))] = judge(lambda f, d=refit: d.score(f) / d.threshold, 1.0)
    result["outliers"] = {g: len(v) for g, v in groups.items()}
    result["machine"] = machine_label(torch.device("cpu"))
    result["seconds"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine",)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
