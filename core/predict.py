"""`python -m core.predict --model RUN_OR_FILE IMAGE_OR_FOLDER... [--cam OUT.png]`: probabilities as JSON.

A folder stands for the files in it and its subfolders, in order (hidden files and notes such as .txt, .csv
or .json left out, as a training folder's are); a ZIP archive (a study exported from a PACS) for the scans in
it, each named ``ARCHIVE #n: FILE`` (`core.archive`), unpacked into a private temporary folder removed on exit.

Prints a JSON list with one object per image: the predicted class, its probability, every class's
probability, whether the scan is like the training data (``in_distribution``, ``ood_score``: above 1 is
out of distribution, as is a colour image given to a model of greyscale scans or a DICOM file of a
modality its DICOM training files lacked, which ``mismatch`` names; null for a model without the check),
``warnings`` a reader must see, and what was read from the file (format, modality, window; never patient
identifiers).
With ``--cam`` a Grad-CAM overlay with its lesion box, as the studio draws it, is written (``OUT.png`` for
one image, ``OUT-<n>.png`` for several); a map of a no-finding class ("normal") gets no box, nor does a scan
out of distribution or a model that did not learn its task.
With ``--csv OUT.csv`` the answers are also written as a table to keep in a spreadsheet, one row per file and a
column per class (`core.answers`: the columns of Diagnose's download).
Exits 2 if any image could not be read; the others are still reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from PIL import Image

from core import answers, archive, cli
from core.archive import Item
from core.cam import CAM_METHODS
from core.cli import MODEL_HELP
from core.device import pick_device
from core.errors import StudioError
from core.folder import scan_files
from core.infer import PASS_SCANS, Predictor
from core.model import atomic_write

# What a diagnosis holds beyond `Predictor.predict`'s answer: the map, its pictures and its box.
MAP_KEYS = ("image", "cam", "overlay", "lesion_box", "target", "target_no_finding", "target_probability", "method")


def expand(names: list[str], dest: Path) -> list[Item]:
    """An item for each file named, each folder replaced by its scan files (`core.folder.scan_files`) and each
    ZIP archive by its scans (unpacked under `dest`); a folder with no scans, or an archive that cannot be read,
    is one item carrying its message."""
    out: list[Item] = []
    for j, name in enumerate(names):
        path = Path(name)
        files = [str(f) for f in scan_files(path)] if path.is_dir() else [name]
        if not files:
            out.append(Item(name, None, f"{path.name or name}: a folder with no scans in it."))
        else:
            out += archive.expand(files, dest / str(j), labels=files)
    return out


def unwritable(out: Path) -> str | None:
    """Why a file cannot be written at `out` (a folder there, or no folder to hold it), or None."""
    if out.is_dir():
        return "a folder, not a file."
    return None if out.resolve().parent.is_dir() else "its folder does not exist."


def cam_path(out: Path, index: int, count: int) -> Path:
    return out if count == 1 else out.with_name(f"{out.stem}-{index + 1}{out.suffix or '.png'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help=MODEL_HELP)
    ap.add_argument("images", nargs="+", help="image or DICOM files, folders of them, or ZIP archives of them")
    ap.add_argument("--cam", type=Path, default=None, metavar="OUT.png", help="write a lesion-map overlay")
    ap.add_argument("--cam-method", default="gradcam", choices=tuple(CAM_METHODS))
    ap.add_argument("--csv", type=Path, default=None, metavar="OUT.csv", help="also write the answers as a table")
    ap.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")
    args = ap.parse_args(argv)
    try:
        for out in (args.cam, args.csv):  # before any scan is read, not after the whole folder is answered
            if out is not None and (why := unwritable(out)):
                raise StudioError(f"{out}: {why}")
        predictor = Predictor(args.model, device=pick_device(args.device))
    except StudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table: list[list] = []
    with tempfile.TemporaryDirectory(prefix="tsskd-predict-") as tmp:
        results, failed = answer_all(predictor, expand(args.images, Path(tmp)), args.cam, args.cam_method, table)
    if args.csv is not None:  # whole or not at all: never a table cut short
        text = answers.rows_csv(table, predictor.classes)
        atomic_write(args.csv, lambda path: path.write_text(text, encoding="utf-8"))
    print(json.dumps(results, indent=2))
    return 2 if failed else 0


def answer_all(
    predictor: Predictor, items: list[Item], cam: Path | None, cam_method: str, table: list | None = None
) -> tuple[list[dict], bool]:
    """A JSON row for each item, answered a batch of `PASS_SCANS` at a time (its scans and maps let go after
    it), and whether any could not be read; `table` gets each item's `core.answers` row."""
    results, failed = [], False
    for start in range(0, len(items), PASS_SCANS):
        batch = items[start : start + PASS_SCANS]
        if cam is None:
            found = archive.answer(batch, predictor.predict_files)
        else:  # one read and one pass give the answer and its map, the box drawn as Diagnose draws it
            found = archive.answer(batch, lambda paths: predictor.diagnose_files(paths, method=cam_method))
        for i, (item, r) in enumerate(zip(batch, found, strict=True), start):
            if table is not None:
                table.append(answers.row(item.label, r, predictor.classes))
            if "error" in r:
                row, failed = {"file": item.label, "error": r["error"]}, True
                print(f"error: {r['error']}", file=sys.stderr)
            elif cam is None:
                row = {"file": item.label, **r}
            else:
                out = cam_path(cam, i, len(items))
                Image.fromarray(r["overlay"]).save(out, format="PNG")
                row = {"file": item.label, **{k: v for k, v in r.items() if k not in MAP_KEYS}}
                row["cam"] = {
                    "file": str(out),
                    "method": r["method"],
                    "target": r["target"],
                    "lesion_box": r["lesion_box"],
                    "target_no_finding": r["target_no_finding"],
                }
            results.append(row)
        if len(items) > PASS_SCANS:  # a long folder says how far it has got (no file names: stderr may be logged)
            print(f"{len(results)} of {len(items)} files answered", file=sys.stderr)
    return results, failed


if __name__ == "__main__":
    cli.run(main)
