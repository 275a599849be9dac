"""`python -m core.predict --model RUN_OR_FILE IMAGE_OR_FOLDER... [--cam OUT.png]`: probabilities as JSON.

A folder stands for the files in it and its subfolders, in order (hidden files and notes such as .txt, .csv
or .json left out, as a training folder's are).

Prints a JSON list with one object per image: the predicted class, its probability, every class's
probability, whether the scan is like the training data (``in_distribution``, ``ood_score``: above 1 is
out of distribution, as is a colour image given to a model of greyscale scans or a DICOM file of a
modality its DICOM training files lacked, which ``mismatch`` names; null for a model without the check),
``warnings`` a reader must see, and what was read from the file (format, modality, window; never patient
identifiers).
With ``--cam`` a Grad-CAM overlay with its lesion box, as the studio draws it, is written (``OUT.png`` for
one image, ``OUT-<n>.png`` for several); a map of a no-finding class ("normal") gets no box, nor does a scan
out of distribution or a model that did not learn its task.
Exits 2 if any image could not be read; the others are still reported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image

from core.cam import CAM_METHODS
from core.cli import MODEL_HELP
from core.device import pick_device
from core.errors import StudioError
from core.folder import scan_files
from core.infer import PASS_SCANS, Predictor

# What a diagnosis holds beyond `Predictor.predict`'s answer: the map, its pictures and its box.
MAP_KEYS = ("image", "cam", "overlay", "lesion_box", "target", "target_no_finding", "target_probability", "method")


def expand(names: list[str]) -> list[str]:
    """The files named, each folder replaced by its scan files (`core.folder.scan_files`); a folder with
    none stays, to be reported as the error it is."""
    out = []
    for name in names:
        files = scan_files(Path(name)) if Path(name).is_dir() else []
        out += [str(f) for f in files] or [name]
    return out


def cam_path(out: Path, index: int, count: int) -> Path:
    return out if count == 1 else out.with_name(f"{out.stem}-{index + 1}{out.suffix or '.png'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help=MODEL_HELP)
    ap.add_argument("images", nargs="+", help="image or DICOM files, or folders of them")
    ap.add_argument("--cam", type=Path, default=None, metavar="OUT.png", help="write a lesion-map overlay")
    ap.add_argument("--cam-method", default="gradcam", choices=tuple(CAM_METHODS))
    ap.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")
    args = ap.parse_args(argv)
    try:
        predictor = Predictor(args.model, device=pick_device(args.device))
    except StudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    images = expand(args.images)
    results, failed = [], False
    for start in range(0, len(images), PASS_SCANS):  # a batch at a time: its scans and maps are let go after it
        batch = images[start : start + PASS_SCANS]
        if args.cam is None:
            answers = predictor.predict_files(batch)
        else:  # one read and one pass give the answer and its map, the box drawn as Diagnose draws it
            answers = predictor.diagnose_files(batch, method=args.cam_method)
        for i, (image, r) in enumerate(zip(batch, answers, strict=True), start):
            if "error" in r:
                # a folder left by `expand` has nothing in it to read
                error = f"{Path(image).name}: a folder with no scans in it." if Path(image).is_dir() else r["error"]
                row, failed = {"file": image, "error": error}, True
                print(f"error: {error}", file=sys.stderr)
            elif args.cam is None:
                row = {"file": image, **r}
            else:
                out = cam_path(args.cam, i, len(images))
                Image.fromarray(r["overlay"]).save(out, format="PNG")
                row = {"file": image, **{k: v for k, v in r.items() if k not in MAP_KEYS}}
                row["cam"] = {
                    "file": str(out),
                    "method": r["method"],
                    "target": r["target"],
                    "lesion_box": r["lesion_box"],
                    "target_no_finding": r["target_no_finding"],
                }
            results.append(row)
        if len(images) > PASS_SCANS:  # a long folder says how far it has got (no file names: stderr may be logged)
            print(f"{len(results)} of {len(images)} files answered", file=sys.stderr)
    print(json.dumps(results, indent=2))
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
