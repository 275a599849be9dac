"""The one-file HTML run report: every section, inline images, the exact config; it opens in a browser."""

import json
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
