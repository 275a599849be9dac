"""The answers for a batch of scans as one table, to keep in a spreadsheet: Diagnose's "Download the table
(CSV)" and `python -m core.predict --csv OUT.csv` write the same columns.

One row per file in the order given: its name (as Diagnose and `core.predict` label it: a ZIP archive's scans
as ``study.zip #3: IM000002``), the prediction and every class's probability as plain numbers, the trust
flags and the warnings as they were shown, the lesion map's class and box when a map was made, and what was
read from the file (format, modality, size, frame); a file that could not be read has its message in `error`
and nothing else. Nothing from a DICOM header beyond `core.imageio`'s summary is written, so no patient
identifiers; the file names are the user's own, as on screen. A cell a spreadsheet would run as a formula (a
file named ``=HYPERLINK(...)``) is written as text.
"""

from __future__ import annotations

import csv
import io
import math

HEAD = ["file", "predicted", "confidence"]
TAIL = [
    "calibrated",
    "model_learned",
    "in_distribution",
    "ood_score",
    "mismatch",
    "low_confidence",
    "map_of",
    "map_method",
    "lesion_box",
    "format",
    "modality",
    "width",
    "height",
    "frame",
    "warnings",
    "error",
]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a cell as a formula


def columns(classes: list[str]) -> list[str]:
    """The table's header: the file and prediction, a `p_<class>` column per class, then `TAIL`."""
    return [*HEAD, *(f"p_{c}" for c in classes), *TAIL]


def frame_text(info: dict) -> str:
    """Which image of a series in one file was diagnosed, "3 of 40" (counted from 1); "" for a single image."""
    return f"{info.get('frame_used', 0) + 1} of {info['frames']}" if info.get("frames") else ""


def row(name: str, answer: dict, classes: list[str]) -> list:
    """One file's row: `answer` is `core.infer`'s answer for it (with or without a lesion map), or
    `{"error": message}`."""
    if "error" in answer:
        return [name, *[""] * (len(columns(classes)) - 2), answer["error"]]
    info = answer.get("scan", {})
    size = info.get("size") or ["", ""]
    box = answer.get("lesion_box")
    return [
        name,
        answer["predicted"],
        _number(answer["confidence"]),
        *(_number(answer["probabilities"][c]) for c in classes),
        answer["calibrated"],
        answer["model_learned"],
        "" if answer["in_distribution"] is None else answer["in_distribution"],  # blank: the model has no check
        "" if answer["ood_score"] is None else _number(answer["ood_score"]),
        answer["mismatch"] or "",
        answer["low_confidence"],
        answer.get("target", ""),
        answer.get("method", ""),
        " ".join(str(v) for v in box) if box else "",  # y0 x0 y1 x1 in the scan's pixels
        info.get("format", ""),
        info.get("modality", "") if info.get("format") == "DICOM" else "",
        size[0],
        size[1],
        frame_text(info),
        "; ".join(answer.get("warnings", [])),
        "",
    ]


def to_csv(results: list[tuple[str, dict]], classes: list[str]) -> str:
    """The table for `(name, answer)` pairs as CSV text (a header, then a row per file)."""
    return rows_csv([row(name, answer, classes) for name, answer in results], classes)


def rows_csv(rows: list[list], classes: list[str]) -> str:
    """CSV text for rows made by `row` (gathered a batch at a time, so no answer's images are held)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns(classes))
    writer.writerows([_cell(v) for v in r] for r in rows)
    return out.getvalue()


def _number(x: float) -> float | str:
    return round(float(x), 6) if math.isfinite(x) else ""


def _cell(value):
    """A value as written: a string a spreadsheet would take for a formula gets a leading apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
