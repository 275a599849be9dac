"""Write the example scans the studio offers (`assets/examples/demo-<class>.png`) from the demo model's
own test split, at the size it was trained on: for each class, the first test scan that Diagnose answers
as that class without a flag (confident, and like the training data), read back from the very PNG written.
That is what most of the model's right answers look like (the median right answer's confidence is above
0.88 for every class), so a first look at Diagnose shows the model as it usually is; the share of each
class's test scans answered that way is printed beside it.

    python bench/demo_examples.py [--model assets/demo-model.safetensors] [--out assets/examples]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from core.evaluate import load_trained
from core.infer import Predictor

ROOT = Path(__file__).resolve().parents[1]


def unflagged_right(answer: dict, name: str) -> bool:
    """Diagnose's answer is `name`, confident, and like the training data."""
    return answer["predicted"] == name and not answer["low_confidence"] and answer["in_distribution"] is not False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "assets" / "demo-model.safetensors"))
    ap.add_argument("--out", type=Path, default=ROOT / "assets" / "examples")
    args = ap.parse_args(argv)
    _, spec, _, data = load_trained(args.model)
    predictor = Predictor(args.model)
    images, labels = data.test.images[:, 0].numpy(), data.test.labels.numpy()
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = {}
    with tempfile.TemporaryDirectory() as tmp:
        for c, name in enumerate(spec.classes):
            members = (labels == c).nonzero()[0]
            good = []
            for i in members:  # each scan through Diagnose's own path: written as PNG, read back, answered
                png = Path(tmp) / f"demo-{name}-{i}.png"
                Image.fromarray(images[i]).save(png)
                answer = predictor.predict(png)
                if unflagged_right(answer, name):
                    good.append((int(i), png, answer))
            if not good:
                raise SystemExit(f"no test scan of class '{name}' is answered right without a flag")
            i, png, answer = good[0]
            shutil.copyfile(png, args.out / f"demo-{name}.png")
            chosen[name] = {
                "test_index": i,
                "probability": round(answer["confidence"], 4),
                "ood_score": None if answer["ood_score"] is None else round(answer["ood_score"], 3),
                "share_of_class_answered_so": round(len(good) / len(members), 3),
            }
    print(json.dumps(chosen, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
