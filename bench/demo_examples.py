"""Write the example scans the studio offers (`assets/examples/demo-<class>.png`) from the demo model's
own test split, at the size it was trained on: the first test scan of each class that the model gets
right. They are demo scans in the full sense, so Diagnose must not flag them as unlike the training data.

    python bench/demo_examples.py [--model assets/demo-model.safetensors] [--out assets/examples]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from core.evaluate import load_trained, predict_probs

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "assets" / "demo-model.safetensors"))
    ap.add_argument("--out", type=Path, default=ROOT / "assets" / "examples")
    args = ap.parse_args(argv)
    model, spec, _, data = load_trained(args.model)
    probs = predict_probs(model, data.test.images)
    right = probs.argmax(1) == data.test.labels
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = {}
    for c, name in enumerate(spec.classes):
        i = int(((data.test.labels == c) & right).nonzero()[0, 0])
        Image.fromarray(data.test.images[i, 0].numpy()).save(args.out / f"demo-{name}.png")
        chosen[name] = {"test_index": i, "probability": round(float(probs[i, c]), 4)}
    print(json.dumps(chosen, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
