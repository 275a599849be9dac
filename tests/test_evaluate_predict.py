"""Metrics against hand computations; the evaluate and predict commands on a trained run; lesion maps."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import IDENTIFIERS, write_dicom
from PIL import Image

from core.cam import CAM_METHODS, lesion_box
from core.evaluate import classification_metrics, expected_calibration_error
from core.evaluate import main as evaluate_main
from core.imageio import Scan, to_model_array
from core.infer import Predictor
from core.predict import main as predict_main
from core.synthetic import render
from core.trust import is_no_finding

ROOT = Path(__file__).resolve().parents[1]


def test_metrics_on_a_hand_checked_example():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.2, 0.2]]
    )
    m = classification_metrics(probs, labels, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["per_class"]["a"] == {"sensitivity": 0.5, "specificity": 0.75, "support": 2}
    assert m["per_class"]["b"]["sensitivity"] == 1.0 and m["per_class"]["b"]["specificity"] == 0.75
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    # one-vs-rest AUCs by counting pairs: a 1.0 (0.8, 0.3 vs 0.1, 0.2, 0.1, 0.6 -> 7/8), b 1.0, c 1.0
    auc_a = np.mean([[float(p > n) + 0.5 * (p == n) for n in [0.1, 0.2, 0.1, 0.6]] for p in [0.8, 0.3]])
    auc_b = np.mean([[float(p > n) + 0.5 * (p == n) for n in [0.1, 0.6, 0.2, 0.2]] for p in [0.8, 0.7]])
    auc_c = np.mean([[float(p > n) + 0.5 * (p == n) for n in [0.1, 0.1, 0.1, 0.1]] for p in [0.7, 0.2]])
    assert m["auc"] == pytest.approx((auc_a + auc_b + auc_c) / 3)


def test_binary_auc_uses_the_positive_class():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.45, 0.55], [0.2, 0.8]])  # pairs: 3 of 4 ordered
    assert classification_metrics(probs, labels, ["neg", "pos"])["auc"] == pytest.approx(0.75)


def test_ece_is_zero_when_calibrated_and_large_when_overconfident():
    labels = np.array([0] * 8 + [1] * 2)
    calibrated = np.tile([0.8, 0.2], (10, 1))
    assert expected_calibration_error(calibrated, labels) == pytest.approx(0.0, abs=1e-12)
    overconfident = np.tile([0.99, 0.01], (10, 1))
    assert expected_calibration_error(overconfident, labels) == pytest.approx(0.19)


def test_evaluate_cli_prints_json_for_the_test_split(tiny_run, capsys):
    assert evaluate_main(["--model", str(tiny_run), "--split", "test", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "test" and out["n"] == 32
    assert sum(map(sum, out["confusion_matrix"])) == 32
    meta = json.loads((tiny_run / "model.json").read_text())
    assert out["accuracy"] == pytest.approx(meta["metrics"]["test_acc"])
    counts = [sum(row) for row in out["confusion_matrix"]]  # the true classes' sizes
    assert out["chance_acc"] == max(counts) / 32  # always answering the most common class


def test_evaluate_gives_the_ece_of_the_answers_diagnose_gives_beside_the_raw_one(tiny_run, tmp_path, capsys):
    """Diagnose answers calibrated probabilities, so their ECE is the one a clinician's answers have; the raw
    softmax's stays (the run's end measured it) and is named apart."""

    assert evaluate_main(["--model", str(tiny_run), "--split", "test", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    record = json.loads((tiny_run / "model.json").read_text())["calibration"]
    keys = list(out)
    assert keys.index("calibrated") == keys.index("ece") + 1  # read side by side
    assert out["calibrated"]["temperature"] == record["temperature"] != 1.0
    assert out["calibrated"]["ece"] == pytest.approx(record["test"]["ece_after"], abs=0.02)
    assert out["ece"] == pytest.approx(record["test"]["ece_before"], abs=0.02)
    assert out["calibrated"]["ece"] != out["ece"]

    uncalibrated = shutil.copytree(tiny_run, tmp_path / tiny_run.name)
    meta = json.loads((uncalibrated / "model.json").read_text())
    del meta["calibration"]  # a model saved before calibration existed answers the raw softmax
    (uncalibrated / "model.json").write_text(json.dumps(meta))
    assert evaluate_main(["--model", str(uncalibrated), "--split", "test", "--device", "cpu"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["calibrated"] is None and again["ece"] == out["ece"]

    meta["calibration"] = {}  # a record without its temperature: scored as the answers are given, at T = 1
    (uncalibrated / "model.json").write_text(json.dumps(meta))
    assert evaluate_main(["--model", str(uncalibrated), "--split", "test", "--device", "cpu"]) == 0
    bare = json.loads(capsys.readouterr().out)
    assert bare["calibrated"] == {"temperature": 1.0, "ece": pytest.approx(out["ece"])}


def test_the_runs_tab_shows_metrics_to_four_decimals_and_its_tables_in_words(tiny_run):
    from types import SimpleNamespace

    from ui.runs import COLUMNS, make_evaluate
    from ui.tables import headers, widths

    jobs = SimpleNamespace(find=lambda name: tiny_run)
    shown, _ = make_evaluate(SimpleNamespace(jobs=jobs))(tiny_run.name, "test")
    assert shown["accuracy"] == round(shown["accuracy"], 4) and shown["chance_acc"] is not None
    floats = [v for c in shown["per_class"].values() for v in c.values() if isinstance(v, float)]
    assert floats and all(v == round(v, 4) for v in floats) and shown["n"] == 32
    assert headers(COLUMNS)[:6] == ["run", "status", "warnings", "method", "T target", "T non-target"]
    shares = [float(w.rstrip("%")) for w in widths(COLUMNS)]
    assert len(shares) == len(COLUMNS) and abs(sum(shares) - 100) < 0.5 and shares[0] == max(shares)


@pytest.mark.parametrize("resize", ["lanczos", "bilinear"])
def test_a_predictor_resizes_a_scan_with_the_filter_its_model_json_names(tiny_run, tmp_path, resize):
    meta = json.loads((tiny_run / "model.json").read_text())
    assert meta["resize"] == meta["config"]["data"]["resize"] == "lanczos"  # a run records its filter
    for name in ("model.safetensors", "model.json", "model.ood.safetensors"):
        shutil.copy(tiny_run / name, tmp_path / name)
    (tmp_path / "model.json").write_text(json.dumps({**meta, "resize": resize}))
    predictor = Predictor(tmp_path / "model.safetensors")
    big = Scan(np.random.default_rng(0).integers(0, 256, (90, 70), dtype=np.uint8))
    small = Scan(to_model_array(big, size=16, channels=1, resize=resize)[0])  # resized beforehand with that filter
    assert np.array_equal(predictor.prepare(big).numpy(), predictor.prepare(small).numpy())
    other = "bilinear" if resize == "lanczos" else "lanczos"
    assert not np.array_equal(
        predictor.prepare(big).numpy(),
        predictor.prepare(Scan(to_model_array(big, size=16, channels=1, resize=other)[0])).numpy(),
    )


def test_evaluate_cli_reports_a_bad_run_without_traceback(tmp_path, capsys):
    assert evaluate_main(["--model", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    d = tmp_path_factory.mktemp("scans")
    images, labels, _ = render(2, size=48, seed=11)
    Image.fromarray(images[0, 0].numpy()).save(d / "scan.png")
    write_dicom(d / "IM0001", images[1, 0].numpy().astype(np.uint16) * 16, window=(2000, 4000))
    return d


@pytest.mark.slow
def test_predict_cli_on_png_and_extensionless_dicom(tiny_run, scans, tmp_path):
    cam = tmp_path / "cam.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.predict",
            "--model",
            str(tiny_run),
            str(scans / "scan.png"),
            str(scans / "IM0001"),
            "--cam",
            str(cam),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["scan"]["format"] for r in rows] == ["PNG", "DICOM"]
    for r in rows:
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert r["predicted"] == max(r["probabilities"], key=r["probabilities"].get)
        assert Image.open(r["cam"]["file"]).size == (48, 48)
        assert isinstance(r["in_distribution"], bool) and r["ood_score"] > 0 and isinstance(r["warnings"], list)
    for value in IDENTIFIERS.values():
        assert value not in proc.stdout and value not in proc.stderr


@pytest.mark.parametrize(("example", "boxed"), [("demo-mass.png", True), ("demo-normal.png", False)])
def test_predict_cli_draws_the_lesion_box_as_the_studio_does(tmp_path, capsys, example, boxed):
    scan = ROOT / "assets" / "examples" / example
    out = tmp_path / "cam.png"
    assert predict_main(["--model", str(ROOT / "assets" / "demo-model.safetensors"), str(scan), "--cam", str(out)]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["cam"]["lesion_box"] is not None) is boxed and row["cam"]["target_no_finding"] is not boxed
    studio = Predictor(ROOT / "assets" / "demo-model.safetensors").diagnose(scan)["overlay"]
    assert np.array_equal(np.asarray(Image.open(out)), studio)  # the same picture, box and all
    cyan = (np.asarray(Image.open(out)) == (0, 255, 255)).all(-1).any()
    assert bool(cyan) is boxed


def test_demo_names_the_shipped_model_on_the_command_line_as_in_the_studio(capsys):
    scan = str(ROOT / "assets" / "examples" / "demo-ring.png")
    outputs = []
    for model in ("demo", str(ROOT / "assets" / "demo-model.safetensors")):
        assert predict_main(["--model", model, scan]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1] and outputs[0][0]["predicted"] == "ring"


@pytest.mark.parametrize("given", [Path("demo"), "./demo", "Demo", "demo.safetensors"])
def test_only_the_word_demo_names_the_demo_model(tmp_path, monkeypatch, given):
    from core.errors import StudioError
    from core.model import DEMO_MODEL, resolve_model_path

    assert resolve_model_path("demo") == DEMO_MODEL
    monkeypatch.chdir(tmp_path)  # nothing called demo here: a path named so is not found
    with pytest.raises(StudioError, match="not a model|no such model"):
        resolve_model_path(given)


def test_a_missing_demo_model_is_said_plainly(tmp_path, monkeypatch, capsys):
    import core.model

    monkeypatch.setattr(core.model, "DEMO_MODEL", tmp_path / "demo-model.safetensors")
    assert predict_main(["--model", "demo", str(ROOT / "assets" / "examples" / "demo-ring.png")]) == 2
    err = capsys.readouterr().err
    assert "the demo model is missing from assets/" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["core.calibration", "core.ood"])
def test_the_demo_model_is_not_refitted_by_name(command, capsys):
    import importlib

    from core.model import DEMO_MODEL

    shipped = sorted(DEMO_MODEL.parent.glob(f"{DEMO_MODEL.stem}.*"))  # weights, JSON, detector
    before = {p: p.read_bytes() for p in shipped}
    assert importlib.import_module(command).main(["--model", "demo"]) == 2
    err = capsys.readouterr().err
    assert "not refitted by name" in err and "--model assets/demo-model.safetensors" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in shipped} == before and len(before) == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"opacity": float("nan")}, "opacity must be a number between 0 and 1"),
        ({"opacity": "0.5"}, "opacity must be a number between 0 and 1"),
        ({"opacity": 1.01}, "opacity must be a number between 0 and 1"),
        ({"method": None}, "unknown lesion-map method 'None'"),
        ({"target": True}, "a class is its name or its index, not True"),
        ({"target": 4}, "class index 4 is out of range for 4 classes"),
    ],
    ids=["nan-opacity", "text-opacity", "opacity-above-1", "no-method", "boolean-class", "class-past-the-end"],
)
def test_a_lesion_map_asked_for_wrongly_is_refused_with_a_message(options, message):
    from core.errors import StudioError

    predictor = Predictor("demo")
    with pytest.raises(StudioError, match=message):
        predictor.diagnose(ROOT / "assets" / "examples" / "demo-ring.png", **options)
    assert predictor.diagnose(ROOT / "assets" / "examples" / "demo-ring.png", target=np.int64(2))["target"] == "mass"


def test_predict_cli_names_a_bad_file_and_still_reports_the_good_one(tiny_run, scans, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    code = predict_main(["--model", str(tiny_run), str(scans / "scan.png"), str(bad)])
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert code == 2 and "probabilities" in rows[0] and "broken.png" in rows[1]["error"]
    assert "Traceback" not in captured.err


def test_predict_cli_reads_a_folder_and_its_subfolders_and_names_one_without_scans(tiny_run, scans, tmp_path, capsys):
    folder = tmp_path / "study"
    (folder / "series-2").mkdir(parents=True)
    shutil.copy(scans / "scan.png", folder / "scan.png")
    shutil.copy(scans / "IM0001", folder / "series-2" / "IM0001")  # DICOM without an extension
    (folder / "notes.txt").write_text("not a scan")
    shutil.copy(scans / "scan.png", folder / ".hidden.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "index.json").write_text("{}")
    cam = tmp_path / "cam.png"
    code = predict_main(["--model", str(tiny_run), str(folder), "--cam", str(cam)])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0 and [Path(r["file"]).relative_to(folder).as_posix() for r in rows] == [
        "scan.png",
        "series-2/IM0001",
    ]
    assert [r["scan"]["format"] for r in rows] == ["PNG", "DICOM"]
    assert [r["cam"]["file"] for r in rows] == [str(tmp_path / "cam-1.png"), str(tmp_path / "cam-2.png")]
    code = predict_main(["--model", str(tiny_run), str(empty), str(scans / "scan.png")])
    captured = capsys.readouterr()
    assert "files answered" not in captured.err  # a short list needs no progress
    rows = json.loads(captured.out)
    assert code == 2 and rows[0]["error"] == "empty: a folder with no scans in it." and "probabilities" in rows[1]
    assert "Traceback" not in captured.err


def test_predict_cli_reads_a_zipped_study_and_names_its_scans_without_the_patients_folder(
    tiny_run, scans, tmp_path, capsys, monkeypatch
):
    import tempfile
    import zipfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    study = tmp_path / "study.zip"
    with zipfile.ZipFile(study, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(scans / "IM0001", "Testpatient^Imaginary/SE1/IM0001")  # a DICOM file with identifiers
        z.write(scans / "scan.png", "Testpatient^Imaginary/SE2/scan.png")
        z.writestr("Testpatient^Imaginary/SE2/IM0002", b"damaged pixels")
        z.writestr("DICOMDIR", b"an index")
    folder = tmp_path / "inbox"
    folder.mkdir()
    shutil.copy(study, folder / "again.zip")  # a folder's archive is read as the archive itself is
    (folder / "broken.zip").write_bytes(study.read_bytes()[:400])
    code = predict_main(["--model", str(tiny_run), str(study), str(folder), "--cam", str(tmp_path / "cam.png")])
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert [r["file"] for r in rows] == [
        f"{study} #1: IM0001",
        f"{study} #2: IM0002",
        f"{study} #3: scan.png",
        f"{folder / 'again.zip'} #1: IM0001",
        f"{folder / 'again.zip'} #2: IM0002",
        f"{folder / 'again.zip'} #3: scan.png",
        str(folder / "broken.zip"),
    ]
    assert code == 2 and [r.get("scan", {}).get("format") for r in rows] == ["DICOM", None, "PNG"] * 2 + [None]
    assert rows[1]["error"].startswith("IM0002: ") and rows[6]["error"].startswith("broken.zip: cannot read it")
    assert rows[0]["probabilities"] == rows[3]["probabilities"] and Path(rows[0]["cam"]["file"]).is_file()
    for value in IDENTIFIERS.values():  # neither the DICOM's tags nor the folder named after the patient
        assert value not in captured.out and value not in captured.err
    assert not any((tmp_path / "tmp").iterdir())  # the unpacked scans are removed on exit


def test_predict_cli_says_how_far_a_long_folder_has_got_and_names_no_file(tiny_run, scans, tmp_path, capsys):
    from core.infer import PASS_SCANS

    folder = tmp_path / "Doe_Jane"
    folder.mkdir()
    total = PASS_SCANS + 3
    for i in range(total):
        shutil.copy(scans / "scan.png", folder / f"Doe_Jane_{i:03d}.png")
    assert predict_main(["--model", str(tiny_run), str(folder)]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == total
    assert captured.err.splitlines() == [f"{n} of {total} files answered" for n in (PASS_SCANS, total)]


def test_predict_refuses_a_pickle(tmp_path, scans, capsys):
    evil = tmp_path / "model.pt"
    evil.write_bytes(b"\x80\x04K\x01.")
    assert predict_main(["--model", str(evil), str(scans / "scan.png")]) == 2
    assert "pickled checkpoints are refused" in capsys.readouterr().err


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_every_cam_method_gives_a_map_overlay_and_box(tiny_run, scans, method):
    from core.imageio import read_scan

    predictor = Predictor(tiny_run)
    scan = read_scan(scans / "scan.png")
    lesion = predictor.lesion_map(scan, method=method, target=1, opacity=0.6)
    assert lesion.cam.shape == (16, 16) and 0 <= lesion.cam.min() and lesion.cam.max() <= 1
    assert lesion.overlay.shape == (48, 48, 3) and lesion.overlay.dtype == np.uint8
    assert lesion.target == predictor.classes[1]
    if lesion.box is not None:
        y0, x0, y1, x1 = lesion.box
        assert 0 <= y0 < y1 <= 48 and 0 <= x0 < x1 <= 48


@pytest.mark.parametrize(
    ("name", "no_finding"),
    [
        ("normal", True),
        ("Normal", True),
        ("no_finding", True),
        ("No-Finding", True),
        ("healthy", True),
        ("negative", True),
        ("nodule", False),
        ("normal, benign", False),  # BreastMNIST: a benign lesion is still a lesion
        ("abnormal", False),
        ("0", False),
    ],
)
def test_which_classes_mean_no_lesion(name, no_finding):
    assert is_no_finding(name) is no_finding


def test_lesion_box_surrounds_the_peak_region_only():
    cam = np.zeros((20, 20), np.float32)
    cam[3:7, 10:15] = 1.0  # the lesion
    cam[15:18, 2:4] = 0.6  # a separate, weaker hot spot
    assert lesion_box(cam) == (3, 10, 7, 15)
    assert lesion_box(np.zeros((5, 5))) is None


COLLAPSE = {"kind": "collapse", "epoch": 3, "message": "the model collapsed to a near-constant output"}


def test_a_finished_run_writes_its_training_warnings_into_its_model(tiny_run, tmp_path):
    """`conclude` copies status.json's warnings into model.json, so that they travel with the model."""

    import torch

    from core import runs
    from core.config import TrainConfig
    from core.data import load_dataset
    from core.fit import conclude

    run = Path(shutil.copytree(tiny_run, tmp_path / tiny_run.name))
    runs.add_warning(run, COLLAPSE)
    cfg = TrainConfig.from_dict(runs.read_json(run / "config.json"))
    conclude(run, load_dataset(cfg.data), torch.device("cpu"), cfg, "done")
    kinds = [w["kind"] for w in runs.Run(run).model_meta()["warnings"]]
    assert "collapse" in kinds and kinds == [w["kind"] for w in runs.Run(run).status()["warnings"]]


@pytest.mark.parametrize("where", ["model.json", "status.json only (an older run)", "exported model"])
def test_a_model_that_did_not_learn_flags_every_answer_and_says_so_on_its_card(tiny_run, scans, tmp_path, where):

    from core import runs
    from core.export import export_model
    from core.trust import UNLEARNED_MESSAGE

    run = Path(shutil.copytree(tiny_run, tmp_path / tiny_run.name))
    meta = runs.Run(run).model_meta()
    runs.Run(run).write_model_meta({k: v for k, v in meta.items() if k != "warnings"})
    runs.write_json(run / "status.json", {**runs.Run(run).status(), "warnings": []})
    learned = Predictor(run)
    answer = learned.predict(scans / "scan.png")
    assert answer["model_learned"] and UNLEARNED_MESSAGE not in answer["warnings"] and learned.card()["learned"]

    if where == "status.json only (an older run)":
        runs.add_warning(run, COLLAPSE)
        model = run
    else:
        runs.Run(run).write_model_meta({**meta, "warnings": [COLLAPSE]})
        model = run if where == "model.json" else export_model(run, tmp_path / "exported.safetensors")
    predictor = Predictor(model)
    for name in ("scan.png", "IM0001"):
        answer = predictor.predict(scans / name)
        assert answer["model_learned"] is False and answer["warnings"][0] == UNLEARNED_MESSAGE
    card = predictor.card()
    assert card["learned"] is False and card["warnings"][0]["kind"] == "collapse"


@pytest.mark.parametrize("status", ["running", "stopped", "failed", "queued"])
@pytest.mark.parametrize("given", ["run folder", "its model file"])
def test_an_unfinished_runs_model_warns_on_every_answer_that_it_is_uncalibrated_and_unchecked(
    tiny_run, scans, tmp_path, status, given
):
    """A run saves its model at each better epoch but calibrates it and fits its out-of-distribution check
    only when it ends: before that, `core.predict` on it says so first on every answer and on its card."""

    from core import runs
    from core.trust import UNFINISHED_MESSAGE

    run = Path(shutil.copytree(tiny_run, tmp_path / tiny_run.name))
    runs.write_json(run / "status.json", {**runs.Run(run).status(), "status": status, "epoch": 1, "epochs": 2})
    meta = runs.Run(run).model_meta()  # as it stands mid-run: no calibration, no check yet
    runs.Run(run).write_model_meta({k: v for k, v in meta.items() if k not in ("calibration", "ood")})
    predictor = Predictor(run if given == "run folder" else run / "model.safetensors")
    for name in ("scan.png", "IM0001"):
        answer = predictor.predict(scans / name)
        assert answer["warnings"][0] == UNFINISHED_MESSAGE
        assert answer["calibrated"] is False and answer["in_distribution"] is None
    assert predictor.card()["unfinished"] == (
        f"run {run.name} has not finished ({status}, 1 of 2 epochs trained): its model is calibrated and "
        "checked against its training data only when the run ends"
    )
    runs.write_json(run / "status.json", {**runs.Run(run).status(), "status": "done"})  # ended: no warning
    assert UNFINISHED_MESSAGE not in Predictor(run).predict(scans / "scan.png")["warnings"]
    assert Predictor(run).card()["unfinished"] is None


@pytest.mark.parametrize("status", ["running", "stopped", "failed"])
def test_a_model_exported_before_its_run_finished_says_so_wherever_it_goes(tiny_run, scans, tmp_path, status):
    """An exported file once lost what its run folder said: put in another studio's models folder it was
    offered and answered without a word that it was never calibrated or checked."""
    from core import runs
    from core.export import export_model
    from core.trust import UNFINISHED_MESSAGE, unfinished_run

    run = Path(shutil.copytree(tiny_run, tmp_path / tiny_run.name))
    runs.write_json(run / "status.json", {**runs.Run(run).status(), "status": status, "epoch": 1, "epochs": 2})
    meta = runs.Run(run).model_meta()
    runs.Run(run).write_model_meta({k: v for k, v in meta.items() if k not in ("calibration", "ood")})
    exported = export_model(run, tmp_path / "out" / "m.safetensors")
    again = export_model(exported, tmp_path / "again" / "m2.safetensors", half=True)  # passed on once more
    said = f"run {run.name} has not finished ({status}, 1 of 2 epochs trained)"
    for path in (exported, again):
        shutil.rmtree(run, ignore_errors=True) if path == again else None  # the run folder gone: the file says it
        assert unfinished_run(path).startswith(said)
        answer = Predictor(path).predict(scans / "scan.png")
        assert answer["warnings"][0] == UNFINISHED_MESSAGE and answer["calibrated"] is False
        assert Predictor(path).card()["unfinished"].startswith(said)


def test_a_finished_or_exported_model_and_the_demo_carry_no_unfinished_warning(tiny_run, tmp_path):
    from core.export import export_model
    from core.trust import unfinished_run

    assert unfinished_run(tiny_run) is None and unfinished_run("demo") is None
    assert unfinished_run(export_model(tiny_run, tmp_path / "m.safetensors")) is None


@pytest.mark.parametrize(
    "command",
    [
        ["core.predict", "--model", "demo", "assets/examples/"],
        ["core.evaluate", "--model", "{run}"],
        ["core.runs", "--runs-dir", "{runs}"],
        ["core.export", "--model", "{run}", "--out", "{tmp}/model.safetensors"],
    ],
    ids=lambda c: c[0],
)
def test_a_command_read_by_a_reader_that_stops_early_ends_quietly(tiny_run, tmp_path, command):
    """`... | head`: the reader is gone before the command prints; no traceback, the status of a tool ended by
    SIGPIPE, and what it writes to files is there whole."""
    args = [a.format(run=tiny_run, runs=tiny_run.parent, tmp=tmp_path) for a in command]
    proc = subprocess.Popen(
        [sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    proc.stdout.close()  # as `head` does once it has its lines
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    if args[0] == "core.export":
        assert (tmp_path / "model.safetensors").stat().st_size > 0
