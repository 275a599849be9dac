"""How hard the built-in demo task is: ResNet-18, 32 px, 10 epochs, 5,000 training images, per lesion contrast.

The demo data should be neither trivial nor impossible: plain cross-entropy should land between 75% and
95% test accuracy at the default contrast. Writes JSON (default bench/results/demo-difficulty-<device>.json).

    python bench/demo_difficulty.py --contrasts 0.6,0.8,1.0 --methods ce,tss-kd
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import RESULTS, trained, write_result  # noqa: E402
from core.data import DataConfig  # noqa: E402
from core.device import pick_device  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contrasts", default="0.6,0.8,1.0,1.3")
    ap.add_argument("--methods", default="ce")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train", type=int, default=5000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--init-from-ce",
        action="store_true",
        help="start every non-CE method from the CE run of the same contrast (run ce first)",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    device = pick_device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for contrast in (float(c) for c in args.contrasts.split(",")):
            ce_run = None
            for method in args.methods.split(","):
                data = DataConfig(
                    image_size=32,
                    synthetic_train=args.train,
                    synthetic_val=1000,
                    synthetic_test=1000,
                    synthetic_contrast=contrast,
                    seed=args.seed,
                )
                init = str(ce_run) if args.init_from_ce and method != "ce" and ce_run else None
                t = trained(
                    data, method, epochs=args.epochs, device=device, runs_dir=tmp, seed=args.seed, pretrained=init
                )
                ce_run = t.run if method == "ce" else ce_run
                m = t.meta["metrics"]
                rows.append(
                    {
                        "contrast": contrast,
                        "method": method,
                        "rga": t.cfg.rga,
                        "init_from_ce": bool(init),
                        "test_acc": m["test_acc"],
                        "test_auc": m["test_auc"],
                        "val_auc": m["val_auc"],
                        "best_epoch": t.meta["epoch"],
                        "seconds": t.seconds,
                        "curve": t.curve,
                    }
                )
                print(
                    f"contrast {contrast:4.2f}  {method:7s}{' (from CE)' if init else ''}"
                    f" test acc {m['test_acc']:.4f}  auc {m['test_auc']:.4f}"
                    f"  ({rows[-1]['seconds']:.0f}s)",
                    flush=True,
                )
    out = args.out or RESULTS / f"demo-difficulty-{device.type}.json"
    write_result(out, {"device": str(device), "epochs": args.epochs, "train_images": args.train, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
