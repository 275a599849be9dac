"""Method comparison: CE, KD, CS-KD, PS-KD and TSS-KD, each with and without RGA, over several seeds.

Every run trains the same backbone on the same data with the same budget; only the method, the RGA
switch and the seed change. For each (method, RGA) the table gives test accuracy, macro AUC and ECE as
mean and standard deviation over the seeds, and a paired t-test (pairs: same seed) against a baseline:
CE with the same RGA setting, and for CE with RGA, plain CE. On the demo data, whose test scans come with
lesion masks, each run's lesion maps are scored too (pointing game and energy share per CAM method).
Writes JSON, a markdown table and a plot (default bench/results/methods-<budget>-<dataset>.*).

    python bench/methods.py                                   # CPU budget on the demo data
    python bench/methods.py --budget paper                    # 100 epochs, batch 128 (a GPU's job)
    python bench/methods.py --dataset medmnist --data-path pneumoniamnist.npz --seeds 0,1,2,3,4
    python bench/methods.py --dataset folder --data-path scans/ --data-seed 7
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import RESULTS, job_manager, machine_label  # noqa: E402
from core import runs  # noqa: E402
from core.cam import CAM_METHODS  # noqa: E402
from core.data import DataConfig, load_dataset  # noqa: E402
from core.device import amp_dtype, pick_device  # noqa: E402
from core.errors import StudioError  # noqa: E402
from core.figures import method_comparison  # noqa: E402
from core.localization import score_maps  # noqa: E402
from core.losses import METHODS  # noqa: E402
from core.model import load_model  # noqa: E402
from core.train import TrainConfig  # noqa: E402

# What each budget trains. "cpu" finishes the whole comparison (30 runs) in under 30 minutes on a 2-core
# CPU; "paper" is the paper's schedule. Demo-data sizes apply to the built-in data only.
BUDGETS = {
    "cpu": {"epochs": 3, "batch_size": 64, "image_size": 28, "train": 1000, "val": 400, "test": 400},
    "paper": {"epochs": 100, "batch_size": 128, "image_size": 32, "train": 5000, "val": 1000, "test": 1000},
}
METRICS = ("test_acc", "test_auc", "test_ece")


def mean_std(values: list[float]) -> dict | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None}


def baseline_of(method: str, rga: bool) -> tuple[str, bool] | None:
    """What a (method, RGA) row is tested against: CE with the same RGA setting; CE with RGA against plain CE."""
    if method == "ce":
        return ("ce", False) if rga else None
    return ("ce", rga)


def paired_test(values: dict[int, float], base: dict[int, float]) -> dict | None:
    """Mean difference and a two-sided paired t-test over the seeds both have."""
    seeds = sorted(s for s in values if s in base and values[s] is not None and base[s] is not None)
    if len(seeds) < 2:
        return None
    a, b = np.array([values[s] for s in seeds]), np.array([base[s] for s in seeds])
    diff = a - b
    p = float(stats.ttest_rel(a, b).pvalue) if np.ptp(diff) > 0 else (1.0 if diff[0] == 0 else 0.0)
    return {"mean_diff": float(diff.mean()), "p_value": p, "pairs": len(seeds)}


def summarize(rows: list[dict]) -> list[dict]:
    """Aggregate per-run rows (method, rga, seed, metrics, lesion_maps) into one row per (method, rga)."""
    groups: dict[tuple[str, bool], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["rga"]), []).append(r)
    out = []
    for (method, rga), items in groups.items():
        row = {"method": method, "rga": rga, "seeds": sorted(r["seed"] for r in items)}
        for m in METRICS:
            row[m] = mean_std([r[m] for r in items])
        base = baseline_of(method, rga)
        if base in groups:
            row["baseline"] = {"method": base[0], "rga": base[1]}
            for m in METRICS:
                row[f"{m}_vs_baseline"] = paired_test(
                    {r["seed"]: r[m] for r in items}, {r["seed"]: r[m] for r in groups[base]}
                )
        maps: dict[str, dict] = {}
        for cam in dict.fromkeys(k for r in items for k in r.get("lesion_maps", {})):
            scored = [r["lesion_maps"][cam] for r in items if cam in r.get("lesion_maps", {})]
            maps[cam] = {k: mean_std([s[k] for s in scored]) for k in ("pointing_game", "energy_share")}
        if maps:
            row["lesion_maps"] = maps
        out.append(row)
    return out


def _cell(stat: dict | None, digits: int = 3) -> str:
    if not stat:
        return "-"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}" if stat["std"] is not None else f"{stat['mean']:.3f}"


def _test_cell(test: dict | None) -> str:
    if not test:
        return "-"
    p = test["p_value"]
    return f"{test['mean_diff']:+.3f} ({'p<0.001' if p < 0.001 else f'p={p:.3f}'})"


def markdown(summary: list[dict], header: dict) -> str:
    """The comparison as markdown: a metrics table, then a lesion-map table when maps were scored."""
    lines = [
        f"Method comparison on {header['dataset']} ({header['budget']} budget: {header['epochs']} epochs, "
        f"batch {header['batch_size']}, {header['image_size']} px, {header['train_images']} training images), "
        f"seeds {', '.join(str(s) for s in header['seeds'])}, {header['machine']}.",
        "",
        "| method | RGA | test accuracy | macro AUC | ECE | accuracy vs baseline | AUC vs baseline |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary:
        base = r.get("baseline")
        name = r["method"] + (f" (vs {base['method']}{' + RGA' if base['rga'] else ' without RGA'})" if base else "")
        lines.append(
            f"| {name} | {'yes' if r['rga'] else 'no'} | {_cell(r['test_acc'])} | {_cell(r['test_auc'])} | "
            f"{_cell(r['test_ece'])} | {_test_cell(r.get('test_acc_vs_baseline'))} | "
            f"{_test_cell(r.get('test_auc_vs_baseline'))} |"
        )
    cams = list(dict.fromkeys(c for r in summary for c in r.get("lesion_maps", {})))
    if cams:
        lines += [
            "",
            "Lesion maps of the true class on test scans with a lesion: pointing game / energy share, mean over seeds.",
            "",
            "| method | RGA | " + " | ".join(cams) + " |",
            "| --- | --- | " + " | ".join("---" for _ in cams) + " |",
        ]
        for r in summary:
            maps = r.get("lesion_maps", {})
            cells = [
                f"{maps[c]['pointing_game']['mean']:.2f} / {maps[c]['energy_share']['mean']:.2f}" if c in maps else "-"
                for c in cams
            ]
            lines.append(f"| {r['method']} | {'yes' if r['rga'] else 'no'} | " + " | ".join(cells) + " |")
        if "uniform_energy_share" in header:
            lines += [
                "",
                f"A uniform map scores {header['uniform_energy_share']:.3f} on both (the lesions' area share).",
            ]
    return "\n".join(lines) + "\n"


def lesion_scans(data, limit: int):
    """The first `limit` test scans that have a lesion mask with a lesion in it."""
    split = data.test
    if split.masks is None:
        return None
    has = split.masks.flatten(1).any(1)
    keep = torch.nonzero(has).flatten()[:limit]
    return split.images[keep], split.labels[keep], split.masks[keep].numpy()


def score_run(run: Path, scans, cams: list[str], *, scorecam_images: int) -> dict:
    model, _, _ = load_model(run)
    out = {}
    for cam in cams:
        n = scorecam_images if cam == "scorecam" else len(scans[0])
        if n > 0:
            out[cam] = score_maps(model, scans[0][:n], scans[1][:n], scans[2][:n], method=cam)
    return out


def result_row(cfg: TrainConfig, run: Path, scans, cams: list[str], *, scorecam_images: int) -> dict:
    """One finished run's test metrics (and lesion-map scores on the demo data), printed as it comes."""
    meta = runs.read_json(run / "model.json")
    m = meta["metrics"]
    row = {
        "method": cfg.method,
        "rga": cfg.rga,
        "seed": cfg.seed,
        "test_acc": m["test_acc"],
        "test_auc": m["test_auc"],
        "test_ece": m["test_ece"],
        "test_ece_calibrated": (meta.get("calibration") or {}).get("test", {}).get("ece_after"),
        "best_epoch": meta["epoch"],
        "train_seconds": sum(r["seconds"] for r in runs.read_metrics(run)),
    }
    if scans is not None:
        row["lesion_maps"] = score_run(run, scans, cams, scorecam_images=scorecam_images)
    print(
        f"{cfg.method:7s} {'RGA' if cfg.rga else '   '} seed {cfg.seed}  acc {row['test_acc']:.3f}  "
        f"auc {row['test_auc'] or float('nan'):.3f}  ece {row['test_ece']:.3f}"
        f"  (trained in {row['train_seconds']:.0f}s)",
        flush=True,
    )
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", choices=BUDGETS, default="cpu")
    ap.add_argument("--dataset", choices=("synthetic", "medmnist", "folder"), default="synthetic")
    ap.add_argument("--data-path", default=None)
    ap.add_argument("--data-seed", type=int, default=0, help="demo data draw, or the split of a folder")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--rga", choices=("both", "on", "off"), default="both")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=None, help="override the budget's epochs")
    ap.add_argument("--train", type=int, default=None, help="demo data: training images (budget default)")
    ap.add_argument("--val", type=int, default=None, help="demo data: validation images (budget default)")
    ap.add_argument("--test", type=int, default=None, help="demo data: test images (budget default)")
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--cams", default=",".join(CAM_METHODS), help="lesion-map methods to score (demo data)")
    ap.add_argument("--cam-images", type=int, default=16, help="lesion scans scored per run")
    ap.add_argument("--scorecam-images", type=int, default=None, help="ScoreCAM is slow: fewer scans (budget default)")
    ap.add_argument("--pretrained", default=None, help="start every run from these weights (a local file)")
    ap.add_argument("--runs-per-device", type=int, default=None, help="runs trained at once (CPU 2, GPU 4)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--runs-dir", default=None, help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=None, help="output stem (default bench/results/methods-...)")
    args = ap.parse_args(argv)

    budget = dict(BUDGETS[args.budget])
    budget.update({k: getattr(args, k) for k in ("epochs", "train", "val", "test") if getattr(args, k) is not None})
    if args.image_size:
        budget["image_size"] = args.image_size
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}.")
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = {"both": (False, True), "on": (True,), "off": (False,)}[args.rga]
    cams = [c for c in args.cams.split(",") if c]
    scorecam_images = args.scorecam_images if args.scorecam_images is not None else (2 if args.budget == "cpu" else 24)
    device = pick_device(args.device)
    per_device = args.runs_per_device or (4 if device.type == "cuda" else 2)
    if device.type == "cpu":
        torch.set_num_threads(1)  # scoring maps here shares the cores with the runs training meanwhile
    data_cfg = DataConfig(
        dataset=args.dataset,
        data_path=args.data_path,
        image_size=budget["image_size"],
        synthetic_train=budget["train"],
        synthetic_val=budget["val"],
        synthetic_test=budget["test"],
        seed=args.data_seed,
    )
    try:
        data = load_dataset(data_cfg)
    except StudioError as e:
        raise SystemExit(str(e)) from None
    scans = lesion_scans(data, args.cam_images) if cams else None

    rows, t_start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        with job_manager(args.runs_dir or tmp, per_device=per_device) as manager:
            queued = []
            for seed in seeds:
                for method in methods:
                    for rga in settings:
                        cfg = TrainConfig(
                            data=data_cfg,
                            method=method,
                            rga=rga,
                            epochs=budget["epochs"],
                            batch_size=budget["batch_size"],
                            device=str(device),
                            seed=seed,
                            name=f"{method}{'-rga' if rga else ''}-s{seed}",
                            pretrained=args.pretrained,
                        )
                        queued.append((cfg, manager.submit(cfg)))
            for cfg, run in queued:  # score each run as it ends, while the next ones train
                status = manager.wait([run])[run.name]
                if status != "done":
                    error = (runs.read_json(run / "status.json", {}) or {}).get("error", "")
                    raise SystemExit(f"{run.name} ended {status}: {error}")
                rows.append(result_row(cfg, run, scans, cams, scorecam_images=scorecam_images))
    summary = summarize(rows)
    header = {
        "dataset": args.dataset if args.dataset != "synthetic" else "the demo data",
        "data_path": Path(args.data_path).name if args.data_path else None,
        "data_seed": args.data_seed,
        "budget": args.budget,
        "epochs": budget["epochs"],
        "batch_size": budget["batch_size"],
        "image_size": budget["image_size"],
        "train_images": len(data.train),
        "seeds": seeds,
        "machine": machine_label(device),
        "runs_per_device": per_device,
        "pretrained": Path(args.pretrained).name if args.pretrained else None,
        "amp": str(amp_dtype(device, "auto")),
        "total_minutes": (time.perf_counter() - t_start) / 60,
    }
    if scans is not None:
        header["uniform_energy_share"] = float(scans[2].mean())
        header["lesion_scans"] = len(scans[0])
        header["scorecam_scans"] = min(scorecam_images, len(scans[0]))
    table = markdown(summary, header)
    print("\n" + table)
    stem = args.out or RESULTS / f"methods-{args.budget}-{args.dataset}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    config = asdict(TrainConfig(data=data_cfg, epochs=budget["epochs"], batch_size=budget["batch_size"]))
    payload = {"header": header, "config": config, "summary": summary, "runs": rows}
    Path(f"{stem}.json").write_text(json.dumps(payload, indent=2))
    Path(f"{stem}.md").write_text(table)
    method_comparison(summary).savefig(f"{stem}.png", dpi=110)
    print(f"wrote {stem}.json, .md and .png ({header['total_minutes']:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
