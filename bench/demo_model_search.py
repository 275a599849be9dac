"""Which TSS-KD settings train a good demo model: a small grid on the demo data, the best one exported.

Each variant trains ResNet-18 with TSS-KD and RGA on the built-in demo data (CE alongside, as the
yardstick); the TSS-KD variant with the best validation AUC is exported as float16 (the studio's demo
model). Writes JSON with every variant's validation and test figures.

    python bench/demo_model_search.py --image-size 64 --epochs 20 --out-dir bench/results
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import trained  # noqa: E402
from core.data import DataConfig  # noqa: E402
from core.device import pick_device  # noqa: E402
from core.export import export_model  # noqa: E402

# (method, t_target, t_nontarget, kd_weight)
GRID = [("ce", None, None, None), ("tss-kd", 4.0, 0.4, 0.1), ("tss-kd", 4.0, 0.4, 0.3), ("tss-kd", 2.0, 0.2, 1.0)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    device = pick_device(args.device)
    rows, best = [], None
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for method, tt, tn, w in GRID:
            data = DataConfig(image_size=args.image_size, synthetic_train=5000, synthetic_val=1000, synthetic_test=1000)
            t = trained(
                data,
                method,
                epochs=args.epochs,
                device=device,
                runs_dir=tmp,
                t_target=tt,
                t_nontarget=tn,
                kd_weight=w,
                name=f"{method}-{tt}-{tn}-{w}",
            )
            run, meta = t.run, t.meta
            row = {
                "method": method,
                "t_target": meta["temperatures"]["t_target"],
                "t_nontarget": meta["temperatures"]["t_nontarget"],
                "kd_weight": meta["kd_weight"],
                "rga": t.cfg.rga,
                **meta["metrics"],
                "best_epoch": meta["epoch"],
                "seconds": t.seconds,
                "curve": t.curve,
            }
            rows.append(row)
            print(
                f"{run.name:40s} val auc {row['val_auc']:.4f}  test acc {row['test_acc']:.4f}  "
                f"auc {row['test_auc']:.4f}  ({row['seconds']:.0f}s)",
                flush=True,
            )
            if method == "tss-kd" and (best is None or row["val_auc"] > best[0]["val_auc"]):
                best = (row, run)
                export_model(run, args.out_dir / "demo-model.safetensors", half=True)
    (args.out_dir / "demo-model-search.json").write_text(
        json.dumps(
            {
                "device": str(device),
                "image_size": args.image_size,
                "epochs": args.epochs,
                "results": rows,
                "chosen": best[0] if best else None,
            },
            indent=2,
        )
    )
    print("chosen:", json.dumps({k: best[0][k] for k in ("t_target", "t_nontarget", "kd_weight", "val_auc")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
