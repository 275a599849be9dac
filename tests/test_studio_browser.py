"""The studio in a real headless browser (Debian's chromium driven by playwright).

Screenshots go to a temporary folder, so that `make test` leaves the checkout as it was; `make
screenshots` runs these tests with STUDIO_SCREENSHOTS=docs/screenshots to refresh the README's.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(os.environ.get("STUDIO_SCREENSHOTS") or Path(tempfile.gettempdir()) / "studio-screenshots")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
TABS = ["Diagnose", "Augment", "Temperatures", "Train", "Runs"]

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="needs Debian's chromium (.ci/run installs it)")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from playwright.sync_api import sync_playwright
    from studio_server import start

    tmp = tmp_path_factory.mktemp("browser")
    url, app, ctx = start(tmp)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.goto(url)
        pg.get_by_role("tab", name="Diagnose").wait_for(timeout=60_000)
        yield pg
        browser.close()
    app.close()
    ctx.jobs.close()


def test_page_shows_all_five_tabs(page):
    for name in TABS:
        assert page.get_by_role("tab", name=name).is_visible()
    assert "TSS-KD Studio" in page.title()


def test_a_scan_uploaded_in_diagnose_shows_an_overlay(page, tmp_path):
    scan = tmp_path / "scan.png"
    shutil.copy(Path(__file__).resolve().parents[1] / "assets" / "examples" / "demo-ring.png", scan)
    page.get_by_role("tab", name="Diagnose").click()
    page.locator("#diagnose-files input[type=file]").set_input_files(str(scan))
    page.locator("#diagnose-run").click()
    overlay = page.locator("#diagnose-overlay img")
    overlay.wait_for(timeout=60_000)
    assert overlay.evaluate("img => img.naturalWidth") == 128
    page.locator("#diagnose-probs").get_by_text("ring").first.wait_for(timeout=10_000)
    page.screenshot(path=str(SHOTS / "diagnose.png"), full_page=True)


def test_augment_preview_renders_samples(page):
    page.get_by_role("tab", name="Augment").click()
    page.locator("#augment-run").click()
    page.locator("#augment-samples img").first.wait_for(timeout=60_000)
    assert page.locator("#augment-samples").get_by_text("gamma").first.is_visible()
    page.screenshot(path=str(SHOTS / "augment.png"), full_page=True)


def test_temperatures_tab_draws_the_soft_targets(page):
    page.get_by_role("tab", name="Temperatures").click()
    page.get_by_text("Reading the plot").wait_for(timeout=10_000)


def test_a_training_started_in_train_draws_its_first_curve_point(page):
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-epochs input").fill("1")
    page.locator("#train-size input").fill("16")
    page.locator("#train-demo-images input").fill("256")
    page.locator("#train-start").click()
    page.locator("#train-progress").get_by_text("epoch 1/1").wait_for(timeout=240_000)
    page.locator("#train-curves img, #train-curves svg").first.wait_for(timeout=30_000)
    page.screenshot(path=str(SHOTS / "train.png"), full_page=True)


def test_a_temperature_sweep_fills_its_heatmap(page):
    page.get_by_role("tab", name="Temperatures").click()
    page.locator("#sweep-targets textarea, #sweep-targets input").first.fill("2, 4")
    page.locator("#sweep-nontargets textarea, #sweep-nontargets input").first.fill("0.4")
    page.locator("#sweep-epochs input").fill("1")
    page.locator("#sweep-size input").fill("16")
    page.locator("#sweep-start").click()
    page.locator("#sweep-progress").get_by_text("2 of 2 runs done").wait_for(timeout=300_000)
    page.locator("#sweep-heatmap img, #sweep-heatmap svg").first.wait_for(timeout=30_000)
    page.screenshot(path=str(SHOTS / "temperatures.png"), full_page=True)
