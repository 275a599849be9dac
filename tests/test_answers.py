"""The answers as a table (core.answers): Diagnose's CSV download and `core.predict --csv` write the same one."""

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import IDENTIFIERS, write_dicom
from PIL import Image

from core import answers
from core.infer import Predictor
from core.predict import main as predict_main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo-model.safetensors"
EXAMPLES = sorted((ROOT / "assets" / "examples").glob("demo-*.png"))  # mass, nodule, normal, ring


@pytest.fixture(scope="module")
def predictor():
    return Predictor(DEMO)


def read(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("maps", [True, False], ids=["diagnose", "predict"])
def test_the_table_has_a_row_per_file_in_order_with_every_class_and_the_flags(predictor, tmp_path, maps):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a scan")
    paths = [*EXAMPLES, bad]
    found = predictor.diagnose_files(paths) if maps else predictor.predict_files(paths)
    rows = read(answers.to_csv([(p.name, r) for p, r in zip(paths, found, strict=True)], predictor.classes))
    assert list(rows[0]) == answers.columns(predictor.classes)
    assert [r["file"] for r in rows] == [p.name for p in paths]
    for path, row, r in zip(EXAMPLES, rows[:-1], found[:-1], strict=True):
        p = {c: float(row[f"p_{c}"]) for c in predictor.classes}
        assert sum(p.values()) == pytest.approx(1, abs=1e-4)
        assert row["predicted"] == max(p, key=p.get) == path.stem.removeprefix("demo-") == r["predicted"]
        assert float(row["confidence"]) == pytest.approx(r["confidence"], abs=1e-6)
        assert row["in_distribution"] == "True" and float(row["ood_score"]) == pytest.approx(r["ood_score"], 1e-5)
        assert row["format"] == "PNG" and (row["width"], row["height"]) == ("64", "64") and row["error"] == ""
        box = row["lesion_box"].split()
        if maps:  # a lesion box of four pixel coordinates, none on the no-finding class's map
            assert row["map_of"] == row["predicted"] and row["map_method"] == "gradcam"
            assert len(box) == (0 if row["predicted"] == "normal" else 4) and all(v.isdigit() for v in box)
        else:
            assert row["map_of"] == row["map_method"] == row["lesion_box"] == ""
    error = rows[-1]
    assert error["error"].startswith("notes.txt: ") and not any(
        v for k, v in error.items() if k not in ("file", "error")
    )


@pytest.mark.parametrize(
    ("name", "written"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1-1", "'+1-1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tscan", "'\tscan"),
        ("scan-01.png", "scan-01.png"),
        ("study.zip #3: IM000002", "study.zip #3: IM000002"),
    ],
)
def test_a_file_name_a_spreadsheet_would_run_as_a_formula_is_written_as_text(name, written):
    (row,) = read(answers.to_csv([(name, {"error": f"{name}: cannot read it."})], ["a", "b"]))
    assert row["file"] == written


def test_the_command_line_writes_the_table_of_its_answers_without_patient_identifiers(tmp_path, capsys):
    scan = np.asarray(Image.open(EXAMPLES[0])).astype(np.uint16) * 16
    write_dicom(tmp_path / "IM0001", np.stack([scan, 4095 - scan]), window=(2000, 4000), modality="CT")
    study = tmp_path / "study.zip"
    with zipfile.ZipFile(study, "w") as z:  # as a PACS exports it: folders named after the patient
        z.write(tmp_path / "IM0001", "Testpatient^Imaginary/SE1/IM0001")
    table = tmp_path / "answers.csv"
    code = predict_main(
        ["--model", "demo", str(EXAMPLES[3]), str(study), "--csv", str(table), "--cam", str(tmp_path / "m.png")]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    shown = json.loads(captured.out)
    text = table.read_text(encoding="utf-8")
    rows = read(text)
    assert [r["file"] for r in rows] == [r["file"] for r in shown] == [str(EXAMPLES[3]), f"{study} #1: IM0001"]
    for row, r in zip(rows, shown, strict=True):  # the table says what the JSON says
        assert row["predicted"] == r["predicted"] and row["map_of"] == r["cam"]["target"]
        for c, p in r["probabilities"].items():
            assert float(row[f"p_{c}"]) == pytest.approx(p, abs=1e-6)
    assert (rows[1]["format"], rows[1]["modality"], rows[1]["frame"]) == ("DICOM", "CT", "1 of 2")
    for value in IDENTIFIERS.values():
        assert value not in text


@pytest.mark.parametrize("where", ["missing folder", "a folder"])
def test_a_table_that_cannot_be_written_is_refused_before_any_scan_is_read(tmp_path, capsys, where):
    out = tmp_path / "nowhere" / "a.csv" if where == "missing folder" else tmp_path
    before = sorted(tmp_path.rglob("*"))
    assert predict_main(["--model", "demo", str(EXAMPLES[0]), "--csv", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(f"error: {out}: ")
    assert ("does not exist" if where == "missing folder" else "a folder, not a file") in captured.err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_an_unreadable_file_still_gets_its_row_and_the_exit_code_says_so(tmp_path, capsys):
    (tmp_path / "IM0009").write_bytes(b"DICM" + bytes(200))
    table = tmp_path / "t.csv"
    assert predict_main(["--model", "demo", str(EXAMPLES[1]), str(tmp_path / "IM0009"), "--csv", str(table)]) == 2
    capsys.readouterr()
    rows = read(table.read_text(encoding="utf-8"))
    assert [bool(r["error"]) for r in rows] == [False, True] and rows[0]["predicted"] == "nodule"
