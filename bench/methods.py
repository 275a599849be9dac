"""Method comparison: CE, KD, CS-KD, PS-KD and TSS-KD (and TSS-KD's scaling and warm-up variants), each
with and without RGA, over several seeds.

Every run trains the same backbone on the same data with the same budget; only the arm (a method and its
settings), the RGA switch and the seed change. For each (arm, RGA) the table gives test accuracy, macro AUC
and ECE as mean and standard deviation over the seeds, and the comparison with a baseline (CE with the
same RGA setting; for CE with RGA, plain CE) on the same test images:
- McNemar's exact test on the images one model gets right and the other wrong, per seed and pooled over
  the seeds, the pooled p-values Holm-corrected across the table's comparisons;
- a paired bootstrap of the accuracy difference over test images, stratified by seed (10,000 resamples),
  with its 95% interval;
- the seed-level paired t-test, kept as a column (undefined when every seed differs by the same amount).
On the demo data, whose test scans come with lesion masks, each run's lesion maps are scored too
(pointing game and energy share per CAM method). Writes JSON, a markdown table and a plot (default
bench/results/methods-<budget>-<dataset>.*).

    python bench/methods.py                                   # CPU budget on the demo data
    python bench/methods.py --budget gpu --rga on             # 30 epochs on 5,000 images: one GPU call
    python bench/methods.py --budget paper                    # 100 epochs, batch 128 (a GPU's job)
    python bench/methods.py --arms ce,tss-kd,tss-kd/paper --seeds 0,1,2,3,4
    python bench/methods.py --dataset medmnist --data-path pneumoniamnist.npz
    python bench/methods.py --budget quick --arms tss-kd/float32,tss-kd/bf16 --seeds 0,1,2,3,4,5,6,7
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
from core.config import QUICK  # noqa: E402
from core.data import DataConfig, load_dataset  # noqa: E402
from core.device import amp_dtype, pick_device  # noqa: E402
from core.errors import StudioError  # noqa: E402
from core.evaluate import predict_logits  # noqa: E402
from core.figures import method_comparison  # noqa: E402
from core.localization import score_maps  # noqa: E402
from core.model import load_model  # noqa: E402
from core.train import TrainConfig  # noqa: E402

# What each budget trains. "cpu" is a reduced budget for a 2-core CPU (3 epochs: too short for any KD
# warm-up to end, so it says little about the methods); "gpu" is the measurement behind the studio's
# defaults (30 epochs of 5,000 demo images), sized for one 10-minute GPU call with the arms in parallel;
# "paper" is the paper's schedule; "quick" is the studio's quick preset (core.config.QUICK, its KD warm-up
# included) as the Train tab runs it. Demo-data sizes apply to the built-in data only; a budget's
# "settings" apply to every arm unless the arm sets them itself.
BUDGETS = {
    "cpu": {"epochs": 3, "batch_size": 64, "image_size": 28, "train": 1000, "val": 400, "test": 400},
    "quick": {
        "epochs": QUICK["epochs"],
        "batch_size": QUICK["batch_size"],
        "image_size": QUICK["image_size"],
        "train": QUICK["synthetic_train"],
        "val": QUICK["synthetic_train"] // 5,  # the demo data's default share, as the preset leaves it
        "test": QUICK["synthetic_train"] // 5,
        "settings": {k: QUICK[k] for k in ("kd_warmup", "optimizer", "lr")},
    },
    "gpu": {"epochs": 30, "batch_size": 128, "image_size": 32, "train": 5000, "val": 1000, "test": 1000},
    "paper": {"epochs": 100, "batch_size": 128, "image_size": 32, "train": 5000, "val": 1000, "test": 1000},
}
METRICS = ("test_acc", "test_auc", "test_ece")

# An arm is a method with its settings. The plain method names use the studio's defaults (for TSS-KD the
# nontarget scaling with its KD warm-up); the tss-kd/ variants vary the scaling and the warm-up.
ARMS: dict[str, dict] = {
    "ce": {"method": "ce"},
    "kd": {"method": "kd"},
    "cs-kd": {"method": "cs-kd"},
    "ps-kd": {"method": "ps-kd"},
    "tss-kd": {"method": "tss-kd"},
    "tss-kd/no-warmup": {"method": "tss-kd", "kd_warmup": 0},
    "tss-kd/paper": {"method": "tss-kd", "kd_scaling": "paper", "kd_warmup": 0},
    "tss-kd/paper+warmup": {"method": "tss-kd", "kd_scaling": "paper", "kd_warmup": 10},
    # The same methods held to one precision, whatever the machine would choose (`--amp auto`): does bf16
    # autocast cost accuracy? Each bf16 arm is tested against its float32 twin, not against CE.
    "ce/float32": {"method": "ce", "amp": "off"},
    "ce/bf16": {"method": "ce", "amp": "bf16"},
    "tss-kd/float32": {"method": "tss-kd", "amp": "off"},
    "tss-kd/bf16": {"method": "tss-kd", "amp": "bf16"},
    # The optimizer of the quick budget's runs: Adam at 0.001 (the quick preset's since 2026-12-06) against the
    # SGD at 0.01 the preset had before, which is the long default runs' (core.config.PRESETS). Each Adam arm is
    # tested against its SGD twin.
    "tss-kd/sgd": {"method": "tss-kd", "optimizer": "sgd", "lr": 0.01},
    "tss-kd/adam": {"method": "tss-kd", "optimizer": "adam", "lr": 0.001},
}
DEFAULT_ARMS = [a for a in ARMS if not {"amp", "optimizer"} & set(ARMS[a])]
ARM_BASELINES = {a: a.replace("/bf16", "/float32") for a in ARMS if a.endswith("/bf16")}  # each its twin
ARM_BASELINES["tss-kd/adam"] = "tss-kd/sgd"
BOOTSTRAP = 10_000
# Per-epoch figures kept for each run: what the collapse rule (core.health) reads, and the KD term.
CURVE_KEYS = (
    "epoch",
    "train_ce",
    "train_kd",
    "kd_weight",
    "val_acc",
    "val_top_class_share",
    "logit_spread",
    "view_gap",
)


def mean_std(values: list[float]) -> dict | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None}


def baseline_of(method: str, rga: bool) -> tuple[str, bool] | None:
    """What an (arm, RGA) row is tested against: CE with the same RGA setting; CE with RGA against plain CE;
    a bf16 arm against its float32 twin and the Adam arm against its SGD twin, with the same RGA setting."""
    if method in ARM_BASELINES:
        return ARM_BASELINES[method], rga
    if method == "ce":
        return ("ce", False) if rga else None
    return ("ce", rga)


def paired_test(values: dict[int, float], base: dict[int, float]) -> dict | None:
    """Mean difference and a two-sided paired t-test over the seeds both have. When every seed differs by
    the same amount the t statistic is undefined: the p-value is then None (1 when that amount is 0)."""
    seeds = sorted(s for s in values if s in base and values[s] is not None and base[s] is not None)
    if len(seeds) < 2:
        return None
    a, b = np.array([values[s] for s in seeds]), np.array([base[s] for s in seeds])
    diff = a - b
    p = float(stats.ttest_rel(a, b).pvalue) if np.ptp(diff) > 0 else (1.0 if diff[0] == 0 else None)
    return {"mean_diff": float(diff.mean()), "p_value": p, "pairs": len(seeds)}


def mcnemar(correct: np.ndarray, base: np.ndarray) -> dict:
    """McNemar's exact test on paired per-image outcomes (bool arrays over the same images): b images only
    this model gets right, c only the baseline; two-sided binomial p of b among b + c at 1/2."""
    b, c = int((correct & ~base).sum()), int((~correct & base).sum())
    p = float(stats.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return {"b": b, "c": c, "p_value": p}


def bootstrap_diff(pairs: list[tuple[np.ndarray, np.ndarray]], *, resamples: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Paired bootstrap of the accuracy difference over test images, stratified by seed: each resample
    draws each seed's images with replacement and averages the seeds' differences. Returns the observed
    mean difference and the 2.5th and 97.5th percentiles."""
    rng = np.random.default_rng(seed)
    observed = float(np.mean([a.mean() - b.mean() for a, b in pairs]))
    total = np.zeros(resamples)
    for a, b in pairs:
        d = a.astype(np.float64) - b.astype(np.float64)  # per image: +1, 0 or -1
        for lo in range(0, resamples, 1000):  # in chunks: resamples x images would not fit at once
            hi = min(lo + 1000, resamples)
            total[lo:hi] += d[rng.integers(0, len(d), (hi - lo, len(d)))].mean(1)
    total /= len(pairs)
    low, high = np.percentile(total, [2.5, 97.5])
    return {"mean_diff": observed, "ci95": [float(low), float(high)], "resamples": resamples}


def per_image_test(items: list[dict], base_items: list[dict]) -> dict | None:
    """McNemar per seed and pooled, and the stratified bootstrap, over the seeds both have per-image results."""
    base = {r["seed"]: r for r in base_items if r.get("correct") is not None}
    pairs = {
        r["seed"]: (np.asarray(r["correct"], bool), np.asarray(base[r["seed"]]["correct"], bool))
        for r in items
        if r.get("correct") is not None and r["seed"] in base
    }
    if not pairs:
        return None
    per_seed = {str(seed): mcnemar(a, b) for seed, (a, b) in sorted(pairs.items())}
    b = sum(t["b"] for t in per_seed.values())
    c = sum(t["c"] for t in per_seed.values())
    pooled = float(stats.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return {
        "mcnemar_per_seed": per_seed,
        "mcnemar": {"b": b, "c": c, "p_value": pooled},
        "bootstrap": bootstrap_diff(list(pairs.values())),
        "images": int(sum(len(a) for a, _ in pairs.values())),
    }


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: the adjusted p-values, in the order given, capped at 1."""
    order = np.argsort(p_values)
    adjusted = np.empty(len(p_values))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (len(p_values) - rank) * p_values[i])
        adjusted[i] = min(1.0, running)
    return adjusted.tolist()


def summarize(rows: list[dict]) -> list[dict]:
    """Aggregate per-run rows (arm, method, rga, seed, metrics, correct, lesion_maps) into one row per
    (arm, rga), with the per-image tests' pooled McNemar p-values Holm-corrected across the rows."""
    groups: dict[tuple[str, bool], list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get("arm", r["method"]), r["rga"]), []).append(r)
    out = []
    for (arm, rga), items in groups.items():
        row = {"arm": arm, "method": items[0]["method"], "rga": rga, "seeds": sorted(r["seed"] for r in items)}
        for m in METRICS:
            row[m] = mean_std([r[m] for r in items])
        base = baseline_of(arm, rga)
        if base in groups:
            row["baseline"] = {"method": base[0], "rga": base[1]}
            for m in METRICS:
                row[f"{m}_vs_baseline"] = paired_test(
                    {r["seed"]: r[m] for r in items}, {r["seed"]: r[m] for r in groups[base]}
                )
            images = per_image_test(items, groups[base])
            if images:
                row["per_image_vs_baseline"] = images
        maps: dict[str, dict] = {}
        for cam in dict.fromkeys(k for r in items for k in r.get("lesion_maps", {})):
            scored = [r["lesion_maps"][cam] for r in items if cam in r.get("lesion_maps", {})]
            maps[cam] = {k: mean_std([s[k] for s in scored]) for k in ("pointing_game", "energy_share")}
        if maps:
            row["lesion_maps"] = maps
        out.append(row)
    tested = [r["per_image_vs_baseline"] for r in out if "per_image_vs_baseline" in r]
    for test, adjusted in zip(tested, holm([t["mcnemar"]["p_value"] for t in tested]), strict=True):
        test["mcnemar"]["p_holm"] = adjusted
    return out


def _cell(stat: dict | None, digits: int = 3) -> str:
    if not stat:
        return "-"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}" if stat["std"] is not None else f"{stat['mean']:.3f}"


def _p(p: float | None) -> str:
    if p is None:
        return "p undefined"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _test_cell(test: dict | None) -> str:
    if not test:
        return "-"
    return f"{test['mean_diff']:+.3f} ({_p(test['p_value'])})"


def _image_cell(test: dict | None) -> str:
    if not test:
        return "-"
    boot, mc = test["bootstrap"], test["mcnemar"]
    low, high = boot["ci95"]
    return f"{boot['mean_diff']:+.3f} [{low:+.3f}, {high:+.3f}] ({mc['b']}/{mc['c']}, Holm {_p(mc['p_holm'])})"


def markdown(summary: list[dict], header: dict) -> str:
    """The comparison as markdown: a metrics table, then a lesion-map table when maps were scored."""
    lines = [
        f"Method comparison on {header['dataset']} ({header['budget']} budget: {header['epochs']} epochs, "
        f"batch {header['batch_size']}, {header['image_size']} px, {header['train_images']} training images), "
        f"seeds {', '.join(str(s) for s in header['seeds'])}, {header['machine']}.",
        "",
        "Accuracy vs baseline, per image: the difference with its 95% bootstrap interval over test images "
        "(stratified by seed), the images only this arm / only the baseline got right, and McNemar's exact "
        "test pooled over the seeds, Holm-corrected across the table. Per seed: the seed-level paired t-test.",
        "",
        "| arm | RGA | test accuracy | macro AUC | ECE | accuracy vs baseline, per image | per seed | "
        "AUC vs baseline, per seed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary:
        base = r.get("baseline")
        name = r["arm"] + (f" (vs {base['method']}{' + RGA' if base['rga'] else ' without RGA'})" if base else "")
        lines.append(
            f"| {name} | {'yes' if r['rga'] else 'no'} | {_cell(r['test_acc'])} | {_cell(r['test_auc'])} | "
            f"{_cell(r['test_ece'])} | {_image_cell(r.get('per_image_vs_baseline'))} | "
            f"{_test_cell(r.get('test_acc_vs_baseline'))} | {_test_cell(r.get('test_auc_vs_baseline'))} |"
        )
    cams = list(dict.fromkeys(c for r in summary for c in r.get("lesion_maps", {})))
    if cams:
        lines += [
            "",
            "Lesion maps of the true class on test scans with a lesion: pointing game / energy share, mean over seeds.",
            "",
            "| arm | RGA | " + " | ".join(cams) + " |",
            "| --- | --- | " + " | ".join("---" for _ in cams) + " |",
        ]
        for r in summary:
            maps = r.get("lesion_maps", {})
            cells = [
                f"{maps[c]['pointing_game']['mean']:.2f} / {maps[c]['energy_share']['mean']:.2f}" if c in maps else "-"
                for c in cams
            ]
            lines.append(f"| {r['arm']} | {'yes' if r['rga'] else 'no'} | " + " | ".join(cells) + " |")
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


def score_run(model, scans, cams: list[str], *, scorecam_images: int) -> dict:
    out = {}
    for cam in cams:
        n = scorecam_images if cam == "scorecam" else len(scans[0])
        if n > 0:
            out[cam] = score_maps(model, scans[0][:n], scans[1][:n], scans[2][:n], method=cam)
    return out


def test_correct(model, test) -> list[int]:
    """1 or 0 per test image: whether `model` classifies it correctly (in test-split order)."""
    logits = predict_logits(model, test.images, batch_size=512)
    return (logits.argmax(1).cpu() == test.labels.cpu()).int().tolist()


def result_row(arm: str, cfg: TrainConfig, run: Path, data, scans, cams: list[str], *, scorecam_images: int) -> dict:
    """One finished run's test metrics, per-image outcomes (and lesion-map scores on the demo data), printed
    as it comes."""
    model, _, meta = load_model(run)  # once: the per-image outcomes and the lesion maps both use it
    status = runs.Run(run).status()
    m = meta["metrics"]
    row = {
        "arm": arm,
        "method": cfg.method,
        "rga": cfg.rga,
        "seed": cfg.seed,
        "test_acc": m["test_acc"],
        "test_auc": m["test_auc"],
        "test_ece": m["test_ece"],
        "test_ece_calibrated": (meta.get("calibration") or {}).get("test", {}).get("ece_after"),
        "best_epoch": meta["epoch"],
        "train_seconds": sum(r["seconds"] for r in runs.read_metrics(run)),
        "warnings": [w["kind"] for w in status.get("warnings") or []],
        "autocast": (status.get("precision") or {}).get("autocast"),  # what it trained in (None: float32)
        "correct": test_correct(model, data.test),
        "curve": [{k: r.get(k) for k in CURVE_KEYS} for r in runs.read_metrics(run)],
    }
    if scans is not None:
        row["lesion_maps"] = score_run(model, scans, cams, scorecam_images=scorecam_images)
    flags = f"  warnings: {', '.join(row['warnings'])}" if row["warnings"] else ""
    print(
        f"{arm:19s} {'RGA' if cfg.rga else '   '} seed {cfg.seed}  {row['autocast'] or 'float32':8s}  "
        f"acc {row['test_acc']:.3f}  "
        f"auc {row['test_auc'] or float('nan'):.3f}  ece {row['test_ece']:.3f}"
        f"  (trained in {row['train_seconds']:.0f}s){flags}",
        flush=True,
    )
    return row


def write_outputs(stem: Path, payload: dict) -> None:
    """The comparison's JSON, markdown table and plot at `stem`.json, .md and .png."""
    table = markdown(payload["summary"], payload["header"])
    print("\n" + table)
    Path(f"{stem}.json").write_text(json.dumps(payload, indent=2))
    Path(f"{stem}.md").write_text(table)
    method_comparison(payload["summary"]).savefig(f"{stem}.png", dpi=110)
    print(f"wrote {stem}.json, .md and .png")


def rewrite(path: Path) -> int:
    """Summarize the runs of a result written elsewhere (a GPU machine's, perhaps cut short) again here."""
    payload = json.loads(path.read_text())
    header = payload.get("header") or {
        "dataset": "the demo data",
        "budget": "partial",
        "epochs": "?",
        "batch_size": "?",
        "image_size": "?",
        "train_images": "?",
        "seeds": sorted({r["seed"] for r in payload["runs"]}),
        "machine": "?",
    }
    stem = Path(str(path).removesuffix(".json").removesuffix(".partial"))
    write_outputs(stem, {**payload, "header": header, "summary": summarize(payload["runs"])})
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", choices=BUDGETS, default="cpu")
    ap.add_argument("--dataset", choices=("synthetic", "medmnist", "folder"), default="synthetic")
    ap.add_argument("--data-path", default=None)
    ap.add_argument("--data-seed", type=int, default=0, help="demo data draw, or the split of a folder")
    ap.add_argument(
        "--arms",
        "--methods",
        default=",".join(DEFAULT_ARMS),
        help=f"methods and variants to compare, from {', '.join(ARMS)} (default: all but the precision arms)",
    )
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
    ap.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="train nothing: summarize the runs of an earlier result (or its .partial.json) and write its "
        "JSON, table and plot beside it",
    )
    args = ap.parse_args(argv)
    if args.from_json:
        return rewrite(args.from_json)

    budget = dict(BUDGETS[args.budget])
    budget.update({k: getattr(args, k) for k in ("epochs", "train", "val", "test") if getattr(args, k) is not None})
    if args.image_size:
        budget["image_size"] = args.image_size
    arms = [m for m in args.arms.split(",") if m]
    unknown = [m for m in arms if m not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}.")
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = {"both": (False, True), "on": (True,), "off": (False,)}[args.rga]
    cams = [c for c in args.cams.split(",") if c]
    cpu_budget = args.budget in ("cpu", "quick")  # ScoreCAM: 9 s a scan on a 2-core CPU in float32, 2 s with AMX
    scorecam_images = args.scorecam_images if args.scorecam_images is not None else (2 if cpu_budget else 24)
    device = pick_device(args.device)
    per_device = args.runs_per_device or (6 if device.type == "cuda" else 2)
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

    stem = args.out or RESULTS / f"methods-{args.budget}-{args.dataset}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(f"{stem}.partial.json")
    rows, t_start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        with job_manager(args.runs_dir or tmp, per_device=per_device) as manager:
            queued = []
            for seed in seeds:
                for arm in arms:
                    for rga in settings:
                        cfg = TrainConfig(
                            data=data_cfg,
                            rga=rga,
                            epochs=budget["epochs"],
                            batch_size=budget["batch_size"],
                            device=str(device),
                            seed=seed,
                            name=f"{arm.replace('/', '-')}{'-rga' if rga else ''}-s{seed}",
                            pretrained=args.pretrained,
                            **{**budget.get("settings", {}), **ARMS[arm]},
                        )
                        queued.append((arm, cfg, manager.submit(cfg)))
            for arm, cfg, run in queued:  # score each run as it ends, while the next ones train
                status = manager.wait([run])[run.name]
                if status != "done":
                    error = runs.Run(run).status().get("error", "")
                    raise SystemExit(f"{run.name} ended {status}: {error}")
                rows.append(result_row(arm, cfg, run, data, scans, cams, scorecam_images=scorecam_images))
                partial.write_text(json.dumps({"partial": True, "runs": rows}))  # kept if the bench is cut short
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
        "arms": {a: ARMS[a] for a in arms},
        "budget_settings": budget.get("settings", {}),
        "kd_defaults": {"kd_scaling": TrainConfig.kd_scaling, "kd_warmup": TrainConfig.kd_warmup},
        "total_minutes": (time.perf_counter() - t_start) / 60,
    }
    if scans is not None:
        header["uniform_energy_share"] = float(scans[2].mean())
        header["lesion_scans"] = len(scans[0])
        if "scorecam" in cams:
            header["scorecam_scans"] = min(scorecam_images, len(scans[0]))
    config = asdict(TrainConfig(data=data_cfg, epochs=budget["epochs"], batch_size=budget["batch_size"]))
    write_outputs(stem, {"header": header, "config": config, "summary": summary, "runs": rows})
    partial.unlink(missing_ok=True)
    print(f"({header['total_minutes']:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
