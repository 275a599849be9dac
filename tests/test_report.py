"""The one-file HTML run report: every section, inline images, the exact config; it opens in a browser."""

import html
import json
import os
import re
import shutil

import pytest

from core.report import main as report_main
from core.report import versions


def test_report_of_a_finished_run(tiny_run, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert report_main(["--model", str(tiny_run), "--out", str(out)]) == 0
    page = out.read_text()
    for section in (
        "Data",
        "Method",
        "Training curves",
        "Test metrics",
        "Calibration",
        "Sample lesion maps (test split)",
        "Configuration",
        "Software",
    ):
        assert f"<h2>{section}</h2>" in page, section
    images = re.findall(r'src="data:image/png;base64,', page)
    assert len(images) >= 4 + 4  # curves, confusion, ROC, reliability and four lesion maps
    config = json.loads((tiny_run / "config.json").read_text())
    assert json.dumps(config["data"]["synthetic_train"]) in page and "tss-kd" in page
    assert versions()["torch"] in page and versions()["python-gdcm"] in page
    metrics = page.split("<h2>Test metrics</h2>")[1].split("<img")[0]
    assert metrics.count("sensitivity / specificity") == 4
    assert re.findall(r"<td>[^<]*</td>", metrics) and not re.search(r"\d\.\d{5}", metrics)  # rounded, as shown
    calibration = json.loads((tiny_run / "model.json").read_text())["calibration"]  # the answers' ECE, as Evaluate's
    shown = re.search(r"ECE of the answers \(calibrated, T = ([\d.]+)\)</t[dh]><td>([\d.]+)<", metrics)
    assert shown and float(shown[1]) == pytest.approx(calibration["temperature"], abs=0.005)
    assert float(shown[2]) == pytest.approx(calibration["test"]["ece_after"], abs=0.02)


def test_report_refuses_a_folder_without_a_model(tmp_path, capsys):
    assert report_main(["--model", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("/usr/bin/chromium") is None, reason="needs Debian's chromium")
@pytest.mark.slow
def test_report_opens_in_a_real_browser(tiny_run, tmp_path):
    from playwright.sync_api import sync_playwright

    from bench import CHROMIUM, CHROMIUM_ARGS

    out = tmp_path / "report.html"
    report_main(["--model", str(tiny_run), "--out", str(out)])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page()
        page.goto(out.as_uri())
        assert page.title().startswith("TSS-KD Studio report")
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
        assert len(widths) >= 8 and all(w > 0 for w in widths)  # every inline image decodes
        browser.close()


@pytest.mark.parametrize(
    ("status", "shown"),
    [
        (
            {"status": "done", "warnings": [{"kind": "chance", "epoch": 2, "message": "no better than chance"}]},
            ["<b>Warning (chance, epoch 2):</b> no better than chance"],
        ),
        (
            {"status": "failed", "error": "the run collapsed <to one answer>", "warnings": []},
            ["<b>The run failed:</b> the run collapsed &lt;to one answer&gt;"],
        ),
        (
            {"status": "running", "pid": 2**22 + 12345, "warnings": []},  # above any pid Linux hands out
            ["running, but its trainer is no longer running"],
        ),
        (
            {"status": "running", "pid": os.getpid(), "warnings": []},  # its pid now another program's (pytest)
            ["running, but its trainer is no longer running"],
        ),
        ({"status": "done", "warnings": []}, []),
    ],
    ids=["warning", "failed", "trainer-gone", "pid-reused", "clean"],
)
def test_the_report_carries_the_runs_failure_and_warnings_at_the_top(tiny_run, tmp_path, status, shown):
    """A report is handed on: a flagged or failed run must not read as a fine one."""
    from core import runs
    from core.report import build_report

    run = tmp_path / tiny_run.name
    shutil.copytree(tiny_run, run)
    runs.write_json(run / "status.json", status)
    page = build_report(run, samples=1)
    top = page.split("<h2>Data</h2>")[0]
    for text in shown:
        assert text in top
    alerts = len(status.get("warnings", [])) + ("error" in status)
    assert top.count("class='alert'") == alerts
    assert "2 of 2 epochs trained" in top and "majority-class rate" in page


@pytest.mark.parametrize(("burned", "maps"), [(0, 4), (1, 0), (3, 0)], ids=["none-says-so", "one-file", "three"])
def test_a_report_shows_no_scan_when_its_data_says_text_is_burned_into_pixels(tmp_path, burned, maps):
    """A report is shared; a scan whose DICOM file says text (a name, a date of birth) is drawn into its pixels
    must not travel in it. Files that say NO, or say nothing, leave the sample lesion maps in. The run says
    so as well, in its log and status, and the Train tab beside its progress."""
    from conftest import tiny_config
    from helpers import write_dicom_folder

    from core.data import DataConfig, load_dataset
    from core.report import build_report, burned_in_note
    from core.train import run_training

    write_dicom_folder(tmp_path / "data", 48, burned=burned, seed=5)
    data = DataConfig(dataset="folder", data_path=str(tmp_path / "data"), image_size=16)
    assert load_dataset(data).summary().get("burned_in_annotation", 0) == burned  # counted over every split
    run = run_training(tiny_config(tmp_path, data=data))
    page = build_report(run)
    section = page.split("<h2>Sample lesion maps (test split)</h2>")[1].split("<h2>")[0]
    assert section.count("<img") == maps
    assert (html.escape(burned_in_note(burned)) in section) == bool(burned)
    says = {1: "One of the data's DICOM files says that text is burned into its pixels", 3: "3 of the data's DICOM"}
    assert burned == 0 or html.escape(says[burned]) in section

    from core import runs
    from core.jobs import JobManager
    from ui.context import Studio
    from ui.watch import monitor

    assert runs.Run(run).status().get("burned_in", 0) == burned
    log = runs.Run(run).log_path.read_text()
    assert ("text is burned into" in log) == bool(burned)
    assert burned == 0 or (says[burned] in log and "(BurnedInAnnotation): it may identify a patient" in log)
    jobs = JobManager(run.parent)
    try:
        assert jobs.status(run.name).get("burned_in", 0) == burned
        text = monitor(Studio(data_root=tmp_path, runs_dir=run.parent, jobs=jobs), run.name)[0]
    finally:
        jobs.close()
    shown = {1: "One of its DICOM files says that text is burned into its pixels", 3: "3 of its DICOM files say that"}
    assert ("**Note on the data:**" in text) == bool(burned)
    assert burned == 0 or (shown[burned] in text and "report leaves out sample scans" in text)
