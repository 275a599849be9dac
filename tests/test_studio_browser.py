"""The studio in a real headless browser (Debian's chromium driven by playwright).

Screenshots go to a temporary folder, so that `make test` leaves the checkout as it was; `make
screenshots` runs these tests with STUDIO_SCREENSHOTS=docs/screenshots to refresh the README's.
"""

import contextlib
import csv
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from bench import CHROMIUM, CHROMIUM_ARGS
from core import listing, runs

SHOTS = Path(os.environ.get("STUDIO_SCREENSHOTS") or Path(tempfile.gettempdir()) / "studio-screenshots")
TABS = ["Diagnose", "Augment", "Temperatures", "Train", "Runs"]
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "examples"

pytestmark = [
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="needs Debian's chromium (.ci/run installs it)"),
    pytest.mark.slow,  # a real browser: `make test-fast` leaves it out
]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    from studio_server import start

    url, app, ctx = start(tmp_path_factory.mktemp("browser"))
    yield url, ctx
    app.close()
    ctx.jobs.close()


@pytest.fixture(scope="module")
def studio_ctx(studio):
    return studio[1]


@pytest.fixture(scope="module")
def page(studio):
    from playwright.sync_api import sync_playwright

    url, _ = studio
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.goto(url)
        pg.get_by_role("tab", name="Diagnose").wait_for(timeout=60_000)
        yield pg
        browser.close()


def pick(page, picker: str, option: str, timeout: float = 15_000) -> None:
    """Choose `option` in the dropdown `picker` as a user does: open it, wait for the option, click it."""
    page.locator(f"{picker} input").first.click()
    page.get_by_role("option", name=option, exact=True).first.click(timeout=timeout)
    page.keyboard.press("Escape")


def wait_text(page, where: str, text: str, timeout: float, *, picker: str | None = None) -> None:
    """Wait for `text` in the element `where`. A long wait that times out fails saying what the page showed
    instead (what `picker` held, and any message such as a lost connection), so that a CI log tells a slow run
    from a page that lost track of it."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.locator(where).get_by_text(text).filter(visible=True).first.wait_for(timeout=timeout)
    except PlaywrightTimeout:
        shown = page.locator(where).first.inner_text(timeout=5_000)
        held = f"; {picker} holds {page.locator(picker).first.input_value(timeout=5_000)!r}" if picker else ""
        toasts = page.locator(".toast-body").all_inner_texts()  # e.g. gradio's "Connection to the server was lost"
        pytest.fail(
            f"{where} did not show {text!r} within {timeout / 1000:.0f} s; it shows {shown!r}{held}; "
            f"messages on the page: {toasts}"
        )


def cropped(page, panel: str) -> list[str]:
    """The pictures in `panel` not shown whole: drawn past the panel's edge (where it hides them), or stretched
    or cut to a box of another shape than the picture's (object-fit other than contain)."""
    return page.locator(panel).evaluate(
        """root => [...root.querySelectorAll('img')].filter(i => {
            const r = i.getBoundingClientRect(), p = root.getBoundingClientRect();
            const outside = r.top < p.top - 1 || r.bottom > p.bottom + 1
                || r.left < p.left - 1 || r.right > p.right + 1;
            const ratio = Math.abs(r.width / r.height - i.naturalWidth / i.naturalHeight) > 0.02;
            return outside || (ratio && getComputedStyle(i).objectFit !== 'contain');
        }).map(i => i.className)"""
    )


def hidden_sideways(page, where: str) -> list[str]:
    """What inside `where` scrolls sideways, hiding columns of a table (its class and how far), if any."""
    return page.locator(where).evaluate(
        """root => [root, ...root.querySelectorAll('*')]
            .filter(e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX))
            .filter(e => e.scrollWidth > e.clientWidth + 1)
            .map(e => `${e.className}: ${e.scrollWidth} > ${e.clientWidth}`)"""
    )


def broken_inside_words(page, where: str) -> list[str]:
    """The cells and headers of the table `where` whose text runs over more lines than it has words (split at
    spaces and hyphens): a column too narrow breaks "synthetic" into "syntheti / c" and "0.933" into "0.9 / 33"."""
    return page.locator(where).evaluate(
        r"""root => [...root.querySelectorAll('.cell-wrap, th span.header')]
            .filter(e => e.innerText.trim())
            .filter(e => {
                const tops = new Set();
                const walker = document.createTreeWalker(e, NodeFilter.SHOW_TEXT);
                for (let n = walker.nextNode(); n; n = walker.nextNode()) {
                    if (!n.textContent.trim()) continue;
                    const range = document.createRange();
                    range.selectNodeContents(n);
                    for (const r of range.getClientRects()) if (r.width > 0) tops.add(Math.round(r.top));
                }
                return tops.size > e.innerText.trim().split(/[\s-]+/).length;
            })
            .map(e => e.innerText)"""
    )


def new_train_form(page) -> None:
    """The Train form as a new user finds it: its reset button (a reload gives back what was typed)."""
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-epochs input").fill("3")  # so that the reset's answer is seen to have come
    page.locator("#train-epochs input").press("Tab")
    page.locator("#train-reset").click()
    expect(page.locator("#train-epochs input")).to_have_value("100", timeout=10_000)
    expect(page.locator("#train-method input")).to_have_value("tss-kd", timeout=10_000)
    page.locator("#train-t-target").wait_for(state="visible", timeout=10_000)  # its method's fields shown


def options(page, picker: str) -> list[str]:
    page.locator(f"{picker} input").first.click()
    names = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    return [n.strip() for n in names]


def test_page_shows_all_five_tabs(page):
    for name in TABS:
        assert page.get_by_role("tab", name=name).is_visible()
    assert "TSS-KD Studio" in page.title()


def test_a_scan_uploaded_in_diagnose_shows_an_overlay(page, tmp_path):
    scan = tmp_path / "scan.png"
    shutil.copy(Path(__file__).resolve().parents[1] / "assets" / "examples" / "demo-ring.png", scan)
    page.get_by_role("tab", name="Diagnose").click()
    page.locator("#diagnose-card").get_by_text("trained on synthetic demo data").wait_for(timeout=10_000)
    expect(page.locator("#diagnose-gallery")).to_be_hidden()  # no empty box before any diagnosis
    page.locator("#diagnose-files input[type=file]").set_input_files(str(scan))
    page.locator("#diagnose-run").click()
    overlay = page.locator("#diagnose-overlay img")
    overlay.wait_for(timeout=60_000)
    assert overlay.evaluate("img => img.naturalWidth") == 64
    page.locator("#diagnose-probs").get_by_text("ring").first.wait_for(timeout=10_000)
    page.get_by_text("Lesion map for: ring").first.wait_for(timeout=10_000)
    assert "studio-greyed" not in (page.locator("#diagnose-probs").get_attribute("class") or "")
    expect(page.locator("#diagnose-probs .output-class")).to_have_text("ring")  # the top class, headed
    assert "Not like the training data" not in page.locator("#diagnose-warning").inner_text()
    expect(page.locator("#diagnose-gallery")).to_be_hidden(timeout=10_000)  # one scan: its map is shown above
    page.screenshot(path=str(SHOTS / "diagnose.png"), full_page=True)


def test_a_new_user_diagnoses_the_demo_scans_without_a_file_of_their_own(page):
    page.get_by_role("tab", name="Diagnose").click()
    page.locator("#diagnose-examples").get_by_text("all four").click()
    page.locator("#diagnose-files").get_by_text("demo-ring").wait_for(timeout=15_000)
    page.locator("#diagnose-run").click()
    table = page.locator("#diagnose-table")
    for name in ("mass", "nodule", "normal", "ring"):
        table.get_by_text(f"demo-{name}.png").filter(visible=True).first.wait_for(timeout=60_000)
    for row in range(4):  # each answered its own class, confidently and like the training data
        file, prediction, _, trust = (table.get_by_test_id(f"cell-{row}-{col}").inner_text() for col in range(4))
        assert file == f"demo-{prediction}.png" and trust == "like the training data"
    expect(page.locator("#diagnose-gallery")).to_be_visible(timeout=10_000)  # several scans: all their maps
    # the first scan's bars: the demo model gives its mass scan 0.99994 and the other classes under 0.0001, which
    # the Label's own rounding shows as 100% and 0%; every bar reads as its exact probability does
    mass = table.get_by_test_id("cell-0-2").inner_text()
    assert table.get_by_test_id("cell-0-0").inner_text() == "demo-mass.png" and mass == ">99.9%", mass
    bars = page.locator("#diagnose-probs .confidence-set")
    expect(bars.locator("dd.confidence")).to_have_text([">99%", "<1%", "<1%", "<1%"])
    for bar in bars.all():
        p, shown = float(bar.locator("meter").evaluate("m => m.value")), bar.locator("dd.confidence").inner_text()
        assert shown == (">99%" if 0.995 <= p < 1 else "<1%" if 0 < p < 0.005 else f"{round(p * 100)}%"), (p, shown)
    for header in table.locator("th span.header").all():  # each header wraps between words, if at all
        lines = header.evaluate("e => Math.round(e.offsetHeight / parseFloat(getComputedStyle(e).lineHeight))")
        assert lines <= len(header.inner_text().split()), header.inner_text()
    assert hidden_sideways(page, "#diagnose-table") == []  # every column in view, no sideways scrolling
    assert broken_inside_words(page, "#diagnose-table") == []
    download = page.locator("#diagnose-download")  # the table to keep: every class's probability, the flags
    expect(download).to_be_visible(timeout=10_000)
    with page.expect_download() as got:
        download.click()
    assert got.value.suggested_filename == "diagnosis.csv"
    rows = list(csv.DictReader(Path(got.value.path()).read_text(encoding="utf-8").splitlines()))
    assert [(r["file"], r["predicted"]) for r in rows] == [
        (f"demo-{c}.png", c) for c in ("mass", "nodule", "normal", "ring")
    ]
    assert all(r["in_distribution"] == "True" and r["p_mass"] and r["error"] == "" for r in rows)


def test_scorecams_cost_is_said_for_the_model_and_the_scans_chosen_before_it_runs(page, studio_ctx, tiny_run):
    """ScoreCAM runs the model once per feature map: before Diagnose is clicked the tab says what that costs a
    scan with the chosen model, and for the scans chosen; another model or other scans say it again."""
    run = studio_ctx.runs_dir / "small-scans-20261207-120000"  # 16 px: a sixteenth of the demo model's work
    studio_ctx.runs_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(tiny_run, run)
    page.reload()
    page.get_by_role("tab", name="Diagnose").click()
    cost = page.locator("#diagnose-cost")
    try:
        pick(page, "#diagnose-method", "scorecam")
        expect(cost).to_contain_text("ScoreCAM runs the model once per feature map", timeout=30_000)
        expect(cost).to_contain_text("per scan on this machine.")
        page.locator("#diagnose-examples").get_by_text("all four").click()
        expect(cost).to_contain_text(re.compile(r"per scan on this machine; these 4 scans about \d+ (s|min)\."))
        demo = cost.inner_text()
        page.locator("#diagnose-model input").click()
        page.get_by_role("option", name=run.name).first.click(timeout=15_000)  # its label says more than its name
        page.locator("#diagnose-card").get_by_text(run.name).wait_for(timeout=10_000)
        expect(cost).not_to_have_text(demo, timeout=30_000)  # the small model's cost, not the demo model's
        expect(cost).to_contain_text("per scan on this machine")
        pick(page, "#diagnose-method", "gradcam")
        expect(cost).to_have_text("", timeout=10_000)  # the others cost about three passes: nothing to say
    finally:
        shutil.rmtree(run)
        page.reload()


@pytest.fixture
def short_cache_page(page, tmp_path, monkeypatch):
    """A studio of its own whose cache keeps uploads 3 s instead of 5 minutes (cleaned every second), and a
    page on it in the same browser: what a user meets after a coffee break, in seconds."""
    from studio_server import start

    import app

    monkeypatch.setattr(app, "CACHE_SWEEP_S", 1)
    monkeypatch.setattr(app, "UPLOAD_KEEP_S", 3)
    url, server, ctx = start(tmp_path)
    pg = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
    pg.goto(url)
    pg.get_by_role("tab", name="Diagnose").wait_for(timeout=60_000)
    yield pg
    pg.close()
    server.close()
    ctx.jobs.close()


def test_demo_scans_still_answer_after_the_cache_clean_up_and_a_removed_upload_says_so(short_cache_page, tmp_path):
    """Demo scans served from copies made at start-up failed ("no such file") once the clean-up had removed
    them, five minutes after the studio started; an upload older than that is refused with what to do."""
    page = short_cache_page
    page.wait_for_timeout(5_000)  # past the cache's age limit since start-up
    for _ in range(2):  # and again, past it since the first click
        page.locator("#diagnose-examples").get_by_text("ring", exact=True).click()
        page.locator("#diagnose-files").get_by_text("demo-ring").wait_for(timeout=15_000)
        page.locator("#diagnose-run").click()
        wait_text(page, "#diagnose-table", "like the training data", 60_000)
        page.wait_for_timeout(5_000)
    scan = tmp_path / "scan.png"
    shutil.copy(EXAMPLES_DIR / "demo-mass.png", scan)
    page.locator("#diagnose-files input[type=file]").set_input_files(str(scan))
    page.locator("#diagnose-files").get_by_text("scan.png").wait_for(timeout=15_000)
    page.wait_for_timeout(5_000)  # the upload is removed
    page.locator("#diagnose-run").click()
    message = "the studio keeps uploads for 5 minutes only"  # its real limit, not this test's
    page.get_by_text(message).first.wait_for(timeout=30_000)  # the toast says what to do
    said = page.get_by_text(message).first.inner_text()
    assert "scan.png" in said and "demo-ring.png" in said and "removed them" in said  # the upload joined the list
    assert "upload again" in said


def test_a_zipped_study_uploaded_in_the_browser_answers_each_of_its_scans(page, tmp_path):
    """A study exported as a ZIP (scans under a folder named after the patient, a DICOMDIR, a note): each scan
    gets its row and map, named by its place in the archive and its file name only."""
    import zipfile

    study = tmp_path / "study.zip"
    with zipfile.ZipFile(study, "w") as z:
        for name in ("demo-mass.png", "demo-ring.png"):
            z.write(EXAMPLES_DIR / name, f"DOE^JOHN/SE1/{name}")
        z.writestr("DICOMDIR", b"an index")
        z.writestr("README.TXT", b"exported by a viewer")
    page.reload()  # a fresh upload box: files from an earlier test would be diagnosed too
    page.get_by_role("tab", name="Diagnose").click()
    page.locator("#diagnose-files input[type=file]").set_input_files(str(study))
    page.locator("#diagnose-run").click()
    table = page.locator("#diagnose-table")
    table.get_by_text("study.zip #2: demo-ring.png").filter(visible=True).first.wait_for(timeout=60_000)
    expect(table.get_by_text("study.zip #1: demo-mass.png").filter(visible=True).first).to_be_visible()
    expect(page.locator("#diagnose-gallery")).to_be_visible(timeout=10_000)  # two scans: each map shown
    expect(page.locator("#diagnose-probs .output-class")).to_have_text("mass")  # the first scan's answer
    assert "DOE" not in page.locator("#diagnose-table").inner_text()
    assert "could not be read" not in page.locator("#diagnose-warning").inner_text()


def test_a_large_scan_is_shown_at_the_maps_size_and_a_new_opacity_redraws_it(page, tmp_path):
    """A 1200 x 1500 scan's map, and both sides of the before/after slider, are drawn 819 x 1024; moving the
    opacity redraws them from what the studio kept (no new diagnosis), at the same size and with no error."""
    from PIL import Image

    scan = tmp_path / "large.png"
    Image.open(EXAMPLES_DIR / "demo-ring.png").convert("L").resize((1200, 1500)).save(scan)
    page.reload()  # a fresh upload box: files from an earlier test would be diagnosed too
    page.get_by_role("tab", name="Diagnose").click()
    page.locator("#diagnose-files input[type=file]").set_input_files(str(scan))
    page.locator("#diagnose-run").click()
    page.locator("#diagnose-table").get_by_text("large.png").filter(visible=True).first.wait_for(timeout=60_000)
    overlay = page.locator("#diagnose-overlay img")
    pair = page.locator("#diagnose-slider img")
    expect(pair).to_have_count(2, timeout=10_000)
    sizes = "imgs => imgs.map(i => i.complete ? [i.naturalWidth, i.naturalHeight] : null)"
    page.wait_for_function("() => document.querySelector('#diagnose-overlay img').naturalWidth > 0")
    assert overlay.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [819, 1024]
    page.wait_for_function(f"() => ({sizes})([...document.querySelectorAll('#diagnose-slider img')]).every(Boolean)")
    assert pair.evaluate_all(sizes) == [[819, 1024], [819, 1024]]
    for panel in ("#diagnose-overlay", "#diagnose-slider"):  # the whole scan in view, as in the lesion map
        assert cropped(page, panel) == [], panel
    before = overlay.get_attribute("src")
    number = page.locator("#diagnose-opacity input[type=number]")
    number.fill("0.9")
    number.press("Tab")  # the slider's release: the stored maps are redrawn
    expect(overlay).not_to_have_attribute("src", before, timeout=30_000)
    page.wait_for_function("() => document.querySelector('#diagnose-overlay img').naturalWidth > 0")
    assert overlay.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [819, 1024]
    expect(page.locator(".toast-body.error")).to_have_count(0)
    number.fill("0.5")
    number.press("Tab")


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "photo"])
def test_diagnose_flags_a_scan_unlike_the_training_data_and_greys_its_probabilities(page, tmp_path, name):
    from PIL import Image
    from pydicom.data import get_testdata_file
    from skimage import data as photos

    if name == "photo":
        path = tmp_path / "astronaut.png"
        Image.fromarray(photos.astronaut()).save(path)
    else:
        path = tmp_path / name
        shutil.copy(get_testdata_file(name), path)
    page.reload()  # a fresh upload box: files from an earlier test would be diagnosed too
    page.get_by_role("tab", name="Diagnose").click()
    page.locator("#diagnose-files input[type=file]").set_input_files(str(path))
    page.locator("#diagnose-run").click()
    banner = page.locator("#diagnose-warning").get_by_text("Not like the training data: do not trust this prediction")
    banner.wait_for(timeout=60_000)
    colour = banner.evaluate("e => getComputedStyle(e).backgroundColor")
    assert colour == "rgb(176, 0, 32)"  # white on red, above the probabilities
    page.wait_for_function("document.querySelector('#diagnose-probs').classList.contains('studio-greyed')")
    expect(page.locator("#diagnose-probs .output-class")).to_have_count(0)  # no "mass" in large type over it
    table = page.locator("#diagnose-table")  # its longest cells (the trust warning, how a DICOM was read) wrap
    table.get_by_text("OUT OF DISTRIBUTION").filter(visible=True).first.wait_for(timeout=15_000)
    assert hidden_sideways(page, "#diagnose-table") == [] and broken_inside_words(page, "#diagnose-table") == []
    if name == "CT_small.dcm":
        page.screenshot(path=str(SHOTS / "diagnose-ood.png"), full_page=True)


def test_a_run_finished_after_start_up_appears_in_diagnose_and_a_deleted_one_goes(page, studio_ctx, tiny_run):
    page.reload()
    page.get_by_role("tab", name="Diagnose").click()
    run = studio_ctx.runs_dir / "late-finisher-20261126-120000"
    studio_ctx.runs_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(tiny_run, run)
    picker = page.locator("#diagnose-model input")
    picker.click()
    page.get_by_role("option", name=run.name).first.wait_for(timeout=15_000)  # no reload, no Refresh
    page.get_by_role("option", name=run.name).first.click()
    page.locator("#diagnose-card").get_by_text(run.name).wait_for(timeout=10_000)
    shutil.rmtree(run)
    page.wait_for_function(
        "document.querySelector('#diagnose-model input').value.startsWith('Demo model')", timeout=15_000
    )


def test_a_model_file_put_in_the_models_folder_appears_in_diagnose_and_answers(page, studio_ctx, tiny_run):
    """A colleague's model (a run's download) dropped into models/: listed within seconds, with its card, and
    it answers a scan with its out-of-distribution check."""
    from core.export import export_run

    page.reload()
    page.get_by_role("tab", name="Diagnose").click()
    expect(page.locator("#diagnose-model")).to_contain_text("model files put in models/")  # where to put them
    studio_ctx.models_dir.mkdir(parents=True, exist_ok=True)
    export_run(tiny_run, studio_ctx.models_dir)
    picker = page.locator("#diagnose-model input")
    picker.click()
    option = page.get_by_role("option", name=f"{tiny_run.name} (model file, tss-kd")
    option.first.wait_for(timeout=15_000)  # no reload, no Refresh
    option.first.click()
    page.locator("#diagnose-card").get_by_text(tiny_run.name).first.wait_for(timeout=10_000)
    page.reload()  # the picked model stays picked (?model=...): a reload does not fall back to the demo model
    page.get_by_role("tab", name="Diagnose").click()
    page.wait_for_function(
        f"document.querySelector('#diagnose-model input').value.startsWith('{tiny_run.name}')", timeout=15_000
    )
    page.locator("#diagnose-card").get_by_text(tiny_run.name).first.wait_for(timeout=10_000)
    page.locator("#diagnose-files input[type=file]").set_input_files(str(EXAMPLES_DIR / "demo-ring.png"))
    page.locator("#diagnose-run").click()
    page.locator("#diagnose-table").get_by_text("demo-ring.png").filter(visible=True).first.wait_for(timeout=60_000)
    trust = page.locator("#diagnose-table").inner_text()
    assert "no check for this model" not in trust  # the check came with the file
    address = page.url
    for f in studio_ctx.models_dir.iterdir():
        f.unlink()
    page.wait_for_function(
        "document.querySelector('#diagnose-model input').value.startsWith('Demo model')", timeout=15_000
    )
    page.goto(address)  # an address naming a model no longer there opens on the demo model, said on its card
    page.get_by_role("tab", name="Diagnose").click()
    page.wait_for_function(
        "document.querySelector('#diagnose-model input').value.startsWith('Demo model')", timeout=15_000
    )
    page.locator("#diagnose-card").get_by_text("trained on synthetic demo data").first.wait_for(timeout=10_000)


def test_augment_preview_is_drawn_on_opening_and_follows_its_settings(page):
    page.reload()
    page.get_by_role("tab", name="Augment").click()
    page.locator("#augment-samples img").first.wait_for(timeout=60_000)  # no click: drawn on page load
    captions = page.locator("#augment-samples").inner_text()
    assert "gamma" in captions
    page.locator("#augment-seed input").fill("7")
    page.locator("#augment-seed input").press("Enter")  # a new seed: new pictures, still without a click
    page.wait_for_function(f"document.querySelector('#augment-samples').innerText !== {captions!r}", timeout=30_000)
    assert "gamma" in page.locator("#augment-samples").inner_text()
    # each picture's caption is read whole (its exact gamma and box, a view's crop and flips), not cut short
    page.locator("#augment-views .caption-label").first.wait_for(timeout=30_000)
    for caption in page.locator("#augment-samples .caption-label, #augment-views .caption-label").all():
        assert caption.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), caption.inner_text()
        assert caption.evaluate("e => e.scrollHeight <= e.clientHeight + 1"), caption.inner_text()
    page.screenshot(path=str(SHOTS / "augment.png"), full_page=True)


def test_temperatures_tab_draws_the_soft_targets(page):
    page.get_by_role("tab", name="Temperatures").click()
    page.get_by_text("Reading the plot").wait_for(timeout=10_000)
    assert page.locator("#temps-curvature").inner_text().startswith("s = 1 ")
    page.locator("#temps-scaling").get_by_text("paper").click()  # the paper's scaling: s = 100, in red
    page.locator("#temps-curvature-warning").get_by_text("100 times as stiff").wait_for(timeout=10_000)
    assert page.locator("#temps-curvature").inner_text().startswith("s = 100 ")
    page.locator("#temps-scaling").get_by_text("nontarget").click()
    page.wait_for_function("!document.querySelector('#temps-curvature-warning').innerText.includes('Warning')")


def test_the_default_run_on_a_cpu_says_how_long_it_takes_before_any_run_was_measured(page):
    # a new user's first Start: 100 epochs of 5,000 images on this CPU; the trial steps say so beforehand
    page.get_by_role("tab", name="Train").click()
    estimate = page.locator("#train-estimate")
    estimate.get_by_text("a first figure from a few trial steps").wait_for(timeout=30_000)
    # hours on a 2-core AVX2 CPU; under an hour where AMX trains bf16: either way long enough to offer the preset
    assert re.search(r"about (\d+ h )?\d+ min on cpu", estimate.inner_text()), estimate.inner_text()
    assert page.locator("#train-quick").is_visible()  # and the quick preset is offered


def test_the_train_tab_offers_the_datasets_in_the_data_folder_and_counts_the_one_picked(page, studio_ctx):
    """A researcher puts a MedMNIST file in the data folder: the Train tab lists it under MedMNIST with its
    training images, picking it gives the estimate for them, and typing a path still works."""
    from helpers import class_folders, write_medmnist

    (studio_ctx.data_root / "mnist").mkdir(parents=True, exist_ok=True)
    write_medmnist(studio_ctx.data_root / "mnist" / "pneumonia.npz", n=(37, 5, 5))
    page.reload()
    new_train_form(page)
    page.get_by_role("radio", name="MedMNIST .npz").click()
    path = page.locator("#train-data-path input")
    path.click()
    option = page.get_by_role("option", name="mnist/pneumonia.npz (MedMNIST, 37 training images)")
    option.wait_for(timeout=15_000)
    option.click()
    wait_text(page, "#train-estimate", "37 training images an epoch", 30_000)
    path.fill("missing.npz")
    path.press("Enter")
    wait_text(page, "#train-estimate", "'missing.npz' does not exist in the data folder", 30_000)
    (studio_ctx.data_root / "mnist" / "pneumonia.npz").unlink()
    # Start with data it cannot train on says why at once, and makes no run (each made a run that failed)
    before = sorted(studio_ctx.runs_dir.iterdir()) if studio_ctx.runs_dir.exists() else []
    new_train_form(page)  # MedMNIST picked, its path left empty
    page.get_by_role("radio", name="MedMNIST .npz").click()
    wait_text(page, "#train-estimate", "once the data path is given", 30_000)
    page.locator("#train-start").click()
    page.locator(".toast-body").get_by_text("the medmnist data needs its path").first.wait_for(timeout=15_000)
    class_folders(studio_ctx.data_root / "tiny", {"a": 3, "b": 3})  # 15% of three rounds to no validation scan
    page.get_by_role("radio", name="image folder or CSV").click()
    path.fill("tiny")
    path.press("Enter")
    wait_text(page, "#train-estimate", "tiny: the validation split is empty", 30_000)
    page.locator("#train-start").click()
    page.locator(".toast-body").get_by_text("one image from 4 on").first.wait_for(timeout=15_000)
    assert (sorted(studio_ctx.runs_dir.iterdir()) if studio_ctx.runs_dir.exists() else []) == before
    # the same page goes on, as a user's would: a new form for the tests after this one. (Its Data radio once
    # re-sent its change three times a second from here, and the next test's run took 749 s; ui.kept.IN_ORDER)
    new_train_form(page)


@pytest.mark.timeout(900)  # the quick preset's run: 55 s on a 2-core Xeon with AMX, minutes on a slow EPYC
def test_the_quick_preset_offered_for_a_long_run_trains_above_chance(page, studio_ctx):
    """A new user on a CPU, told the default run is long, takes the quick preset and starts it: the run is
    followed to the end, draws its curves, keeps a model clearly above chance and carries no warning."""
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-quick").wait_for(state="visible", timeout=30_000)  # the default run is long on a CPU
    page.locator("#train-quick").click()
    page.wait_for_function("document.querySelector('#train-epochs input').value === '5'", timeout=10_000)
    assert page.locator("#train-demo-images input").input_value() == "1000"
    assert page.locator("#train-size input").input_value() == "32"
    assert page.locator("#train-kd-warmup input").input_value() == "0"  # 5 epochs: KD at full weight throughout
    page.locator("#train-kd-warmup input").fill("10")  # a warm-up longer than the run is pointed out
    page.locator("#train-kd-warmup input").press("Tab")
    page.locator("#train-estimate").get_by_text("reaches only 50% of its value").wait_for(timeout=15_000)
    page.locator("#train-kd-warmup input").fill("0")
    page.locator("#train-kd-warmup input").press("Tab")
    page.locator("#train-start").click()
    wait_text(page, "#train-progress", "epoch 1/5", 300_000, picker="#train-run input")
    wait_text(page, "#train-progress", "test acc", 600_000, picker="#train-run input")
    run_id = page.locator("#train-run input").input_value()
    status = studio_ctx.jobs.status(run_id)
    assert status["status"] == "done" and status["warnings"] == []
    assert status["test_acc"] > status["chance_acc"] + 0.1 and status["test_auc"] > 0.65, status
    assert page.locator("#train-warnings").inner_text().strip() == ""
    assert f"Kept model: epoch {status['best_epoch']}" in page.locator("#train-progress").inner_text()
    point = page.locator("#train-curves .js-plotly-plot .scatterlayer .point").nth(4)  # the loss's 5th epoch
    point.wait_for(timeout=30_000)
    point.scroll_into_view_if_needed()
    box = point.bounding_box()  # hover it: the point says its run, epoch and value
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=3)
    page.locator("#train-curves .hoverlayer").get_by_text("epoch 5").wait_for(timeout=10_000)
    page.screenshot(path=str(SHOTS / "train.png"), full_page=True)
    # the speed that run measured now estimates the next one, as soon as the run has ended
    measured = re.compile(r"measured over \d+ earlier epochs")
    page.locator("#train-estimate").get_by_text(measured).wait_for(timeout=15_000)
    assert "trial steps" not in page.locator("#train-estimate").inner_text()
    assert runs.Run(studio_ctx.jobs.find(run_id)).config()["preset"] == "quick"  # as `--preset quick` records it
    five = page.locator("#train-estimate").inner_text()
    # and the next run's, as its settings change: ten times the epochs, so that the rounded figure must differ
    # (3 epochs against 5 both round to "about 1 min" where the run's start costs half a minute)
    page.locator("#train-epochs input").fill("50")
    page.locator("#train-epochs input").press("Tab")
    page.wait_for_function(f"!document.querySelector('#train-estimate').innerText.includes({five[:60]!r})")
    assert measured.search(page.locator("#train-estimate").inner_text())


# The sweep the test queues: two runs of one short epoch; for the README's screenshot (`make screenshots`) a
# 2 x 2 grid of the quick preset's runs, so that the heatmap shows models that learned (about 3 min on AMX).
SWEEP = (
    {"targets": "2, 4", "nontargets": "0.4, 4", "epochs": 5, "size": 32, "images": 1000}
    if os.environ.get("STUDIO_SCREENSHOTS")
    else {"targets": "2, 4", "nontargets": "0.4", "epochs": 1, "size": 16, "images": 128}
)
SWEEP_RUNS = len(SWEEP["targets"].split(",")) * len(SWEEP["nontargets"].split(","))
# how long the test waits for them: the screenshot's sweep took 12.7 min on a 2-core Xeon without AMX (float32,
# 24-38 images/s with the page open), past the 10 minutes the test's own sweep is allowed
SWEEP_WAIT_S = 1800 if os.environ.get("STUDIO_SCREENSHOTS") else 600


def measured_epochs(ctx) -> int:
    """How many measured epochs of runs like the sweep's the time estimates go by (core.estimate.measured)."""
    from core.estimate import measured
    from ui.temperatures import sweep_base

    base = sweep_base(ctx, SWEEP["epochs"], "cpu", SWEEP["size"], "nontarget", 0, SWEEP["images"])
    found = measured(ctx.runs_dir, base, "cpu")
    return found["epochs"] if found else 0


@pytest.mark.timeout(SWEEP_WAIT_S + 300)  # the wait for the runs, and the rest
def test_a_temperature_sweep_fills_its_heatmap(page, studio_ctx):
    page.get_by_role("tab", name="Temperatures").click()
    page.locator("#sweep-targets textarea, #sweep-targets input").first.fill(SWEEP["targets"])
    page.locator("#sweep-nontargets textarea, #sweep-nontargets input").first.fill(SWEEP["nontargets"])
    page.locator("#sweep-epochs input").fill(str(SWEEP["epochs"]))
    page.locator("#sweep-size input").fill(str(SWEEP["size"]))
    page.locator("#sweep-images input").fill(str(SWEEP["images"]))
    page.locator("#sweep-images input").press("Tab")
    epochs = f"{SWEEP['epochs']} epoch{'s' if SWEEP['epochs'] != 1 else ''}"
    what = f"{SWEEP_RUNS} runs of {epochs} x {SWEEP['images']:,} images: about"
    page.locator("#sweep-estimate").get_by_text(what).wait_for(timeout=30_000)
    before = measured_epochs(studio_ctx)  # trial steps, or the runs of this kind already trained (the quick one)
    page.locator("#sweep-start").click()
    done = f"{SWEEP_RUNS} of {SWEEP_RUNS} runs done"
    wait_text(page, "#sweep-progress", done, SWEEP_WAIT_S * 1000, picker="#sweep-tag input")
    page.locator("#sweep-heatmap img, #sweep-heatmap svg").first.wait_for(timeout=30_000)
    # the form's estimate now goes by what the sweep's own runs measured, not by the trial steps
    from ui.temperatures import sweep_estimate

    form = (SWEEP["targets"], SWEEP["nontargets"], SWEEP["epochs"], "cpu", SWEEP["size"], "nontarget", 0)
    measured = sweep_estimate(studio_ctx, *form, SWEEP["images"]).replace("**", "")
    page.locator("#sweep-estimate").get_by_text(measured).wait_for(timeout=15_000)
    assert measured_epochs(studio_ctx) == before + SWEEP_RUNS * SWEEP["epochs"]  # every epoch of the sweep counts
    table = "#sweep-runs"  # every column in view, no "0.9 / 33"
    assert hidden_sideways(page, table) == [] and broken_inside_words(page, table) == []
    page.screenshot(path=str(SHOTS / "temperatures.png"), full_page=True)
    tag = page.locator("#sweep-tag input").input_value()
    assert tag.startswith("sweep")
    page.wait_for_function(f"window.location.search.includes('sweep={tag}')", timeout=10_000)
    page.reload()  # the sweep is not lost with the page: a reload comes back to it, and Runs reopens it by name
    page.get_by_role("tab", name="Temperatures").click()
    page.wait_for_function(f"document.querySelector('#sweep-tag input').value === '{tag}'", timeout=15_000)
    page.locator("#sweep-progress").get_by_text(done).wait_for(timeout=15_000)
    page.locator("#sweep-heatmap img, #sweep-heatmap svg").first.wait_for(timeout=15_000)
    page.get_by_role("tab", name="Runs").click()
    page.get_by_text("Temperature sweeps").click()
    pick(page, "#runs-sweep", tag)
    page.locator("#runs-sweep-table").get_by_text(f"{tag}-T4-t0.4").filter(visible=True).first.wait_for(timeout=15_000)
    page.locator("#runs-sweep-heatmap img, #runs-sweep-heatmap svg").first.wait_for(timeout=15_000)
    table = "#runs-sweep-table"  # the tab's width: every column in view, no "0.9 / 33"
    assert hidden_sideways(page, table) == [] and broken_inside_words(page, table) == []


def test_runs_compares_the_finished_runs_and_evaluates_one(page, studio_ctx):
    """The Runs tab after the runs above (the quick preset's and the sweep's; two tiny ones of its own when run
    alone): two runs' curves overlaid, then the better one evaluated on its test split."""

    done = [r for r in listing.list_runs(studio_ctx.runs_dir) if r["status"] == "done"]
    if len(done) < 2:
        from conftest import tiny_config

        from core.train import run_training

        for method in ("ce", "tss-kd"):
            run_training(tiny_config(studio_ctx.runs_dir.parent, method=method, runs_dir=str(studio_ctx.runs_dir)))
        done = [r for r in listing.list_runs(studio_ctx.runs_dir) if r["status"] == "done"]
    shown = sorted(done, key=lambda r: -(r["test_auc"] or 0))[:2]  # the two best on their test split
    page.get_by_role("tab", name="Runs").click()
    for r in shown:
        page.locator("#runs-table").get_by_text(r["run"]).filter(visible=True).first.wait_for(timeout=15_000)
        # how it stepped its weights (Adam for quick runs and sweeps), beside its method and temperatures
        page.locator("#runs-table").get_by_text(r["optimizer"]).filter(visible=True).first.wait_for(timeout=15_000)
        box = page.locator("#runs-compare input").first
        box.click()
        box.fill(r["run"])  # filtered to that run, as a user types a name, and taken with Enter
        page.get_by_role("option", name=r["run"], exact=True).first.wait_for(timeout=15_000)
        box.press("Enter")
        page.keyboard.press("Escape")
        box.blur()  # closed for good: a click on a focused multiselect would not open it again
    legend = page.locator("#runs-curves .legend")
    for r in shown:
        legend.get_by_text(r["run"]).first.wait_for(timeout=15_000)  # both runs' curves, named
    pick(page, "#runs-one", shown[0]["run"])
    page.locator("#runs-evaluate").click()
    page.locator("#runs-metrics").get_by_text("balanced_accuracy").first.wait_for(timeout=60_000)
    # beside the softmax's ECE, the ECE of the calibrated answers Diagnose gives, with their temperature
    page.locator("#runs-metrics").get_by_text("temperature").first.wait_for(timeout=15_000)
    page.locator("#runs-confusion .js-plotly-plot, #runs-confusion img, #runs-confusion svg").first.wait_for(
        timeout=30_000
    )
    for header in page.locator("#runs-table th span.header").all():  # each header wraps between words, if at all
        lines = header.evaluate("e => Math.round(e.offsetHeight / parseFloat(getComputedStyle(e).lineHeight))")
        assert lines <= len(header.inner_text().split()), header.inner_text()
    assert hidden_sideways(page, "#runs-table") == [] and broken_inside_words(page, "#runs-table") == []
    files = page.locator("#runs-files")
    expect(files).to_be_hidden()  # no empty box that reads as one to upload into
    page.screenshot(path=str(SHOTS / "runs.png"), full_page=True)
    page.get_by_role("button", name="Download model and config").click()
    for name in (".safetensors", ".json", ".ood.safetensors", "-config.json"):  # named as a user would save them
        expect(files.locator(f'[aria-label="{shown[0]["run"]}{name}"]')).to_be_visible(timeout=30_000)
    page.reload()  # the runs compared and the run picked stay so (?compare=A,B&inspect=A in the page's address)
    page.get_by_role("tab", name="Runs").click()
    for r in shown:
        legend.get_by_text(r["run"]).first.wait_for(timeout=15_000)
    picked = shown[0]["run"]
    page.wait_for_function(f"document.querySelector('#runs-one input').value === '{picked}'", timeout=15_000)
    expect(page.locator("#runs-evaluate")).to_be_enabled()


def test_stop_this_sweep_stops_every_run_of_it(page):
    page.goto(page.url.split("?")[0])  # a new page: no sweep chosen (a reload would come back to the last one)
    page.get_by_role("tab", name="Temperatures").click()
    assert page.locator("#sweep-stop").is_disabled()  # no sweep chosen: nothing to stop
    page.locator("#sweep-targets textarea, #sweep-targets input").first.fill("2, 4")
    page.locator("#sweep-nontargets textarea, #sweep-nontargets input").first.fill("0.4")
    page.locator("#sweep-epochs input").fill("50")  # a long sweep
    page.locator("#sweep-size input").fill("16")
    page.locator("#sweep-images input").fill("128")
    page.locator("#sweep-start").click()
    wait_text(page, "#sweep-progress", "2 running", 120_000, picker="#sweep-tag input")
    page.locator("#sweep-stop").click()
    page.get_by_text("Stopping 2 run(s)").first.wait_for(timeout=15_000)
    wait_text(page, "#sweep-progress", "0 of 2 runs done, 2 stopped", 120_000, picker="#sweep-tag input")
    page.wait_for_function("document.querySelector('#sweep-stop').disabled", timeout=15_000)  # all stopped


def test_the_paper_recipe_fills_the_train_form_and_the_studio_default_restores_it(page):
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-recipe").get_by_text("paper (Liu et al. 2025, exactly)").click()
    page.wait_for_function("document.querySelector('#train-epochs input').value === '100'", timeout=10_000)
    expect(page.locator("#train-kd-scaling input")).to_have_value("paper", timeout=10_000)
    expect(page.locator("#train-kd-warmup input")).to_have_value("0", timeout=10_000)
    page.locator("#train-recipe").get_by_text("studio default (stable)").click()
    page.wait_for_function("document.querySelector('#train-kd-warmup input').value === '10'", timeout=10_000)
    expect(page.locator("#train-kd-scaling input")).to_have_value("nontarget", timeout=10_000)


def test_a_collapsed_run_is_shown_in_red_in_train_and_marked_in_runs(page, studio_ctx):
    """A finished run whose status carries the collapse warning the trainer writes."""
    from conftest import tiny_config

    from core.train import run_training

    run = run_training(tiny_config(studio_ctx.runs_dir.parent, name="collapsed", runs_dir=str(studio_ctx.runs_dir)))
    message = "the model collapsed to a near-constant output: use the stable KD scaling"
    runs.add_warning(run, {"kind": "collapse", "epoch": 1, "message": message})
    page.get_by_role("tab", name="Train").click()
    pick(page, "#train-run", run.name)
    warning = page.locator("#train-warnings").get_by_text("Warning (collapse, epoch 1)")
    warning.wait_for(timeout=15_000)
    assert "use the stable KD scaling" in page.locator("#train-warnings").inner_text()
    color = warning.evaluate("e => getComputedStyle(e.closest('p')).color")
    assert color == "rgb(176, 0, 32)"  # the studio's warning red, not the body text's colour
    page.get_by_role("tab", name="Runs").click()
    page.locator("#runs-table").get_by_text("collapse (epoch 1)").filter(visible=True).first.wait_for(timeout=15_000)
    # and Diagnose says, on its card and on every answer, that this model's answers carry no information
    page.get_by_role("tab", name="Diagnose").click()
    page.locator("#diagnose-model input").first.click()
    page.get_by_role("option").filter(has_text=run.name).first.click(timeout=15_000)
    page.keyboard.press("Escape")
    page.locator("#diagnose-card").get_by_text("This model did not learn its task").wait_for(timeout=15_000)
    page.locator("#diagnose-examples").get_by_text("ring", exact=True).click()
    page.locator("#diagnose-files").get_by_text("demo-ring").wait_for(timeout=15_000)
    page.locator("#diagnose-run").click()
    wait_text(page, "#diagnose-table", "MODEL DID NOT LEARN", 60_000, picker="#diagnose-model input")
    assert "did not learn its task" in page.locator("#diagnose-warning").inner_text()
    page.wait_for_function("document.querySelector('#diagnose-probs').classList.contains('studio-greyed')")
    expect(page.locator("#diagnose-probs .output-class")).to_have_count(0)  # no "mass" in large type over it


def test_a_run_on_dicom_files_with_burned_in_text_says_so_on_the_train_tab(page, studio_ctx, tmp_path):
    """Two of the run's DICOM files say text is burned into their pixels: the Train tab's progress says so."""
    from conftest import tiny_config
    from helpers import write_dicom_folder

    from core.data import DataConfig
    from core.train import run_training

    write_dicom_folder(tmp_path / "burned", 40, burned=2, seed=6)
    data = DataConfig(dataset="folder", data_path=str(tmp_path / "burned"), image_size=16)
    cfg = tiny_config(studio_ctx.runs_dir.parent, name="burned", runs_dir=str(studio_ctx.runs_dir), data=data)
    run = run_training(cfg)
    page.get_by_role("tab", name="Train").click()
    pick(page, "#train-run", run.name)
    wait_text(page, "#train-progress", "Note on the data:", 15_000, picker="#train-run")
    note = page.locator("#train-progress").inner_text()
    assert "2 of its DICOM files say that text is burned into their pixels" in note
    assert "report leaves out sample scans" in note


def test_a_run_started_through_the_api_appears_in_runs_without_a_click_and_reload_returns_to_it(page, studio):
    from gradio_client import Client

    url, ctx = studio
    page.goto(url)
    page.get_by_role("tab", name="Runs").click()
    page.locator("#runs-table").wait_for()
    client = Client(url, verbose=False)
    run_id = client.predict(
        {
            "method": "ce",
            "epochs": 1,
            "image_size": 16,
            "synthetic_train": 64,
            "batch_size": 16,
            "device": "cpu",
            "name": "from-api",
        },
        api_name="/start_training",
    )
    page.locator("#runs-table").get_by_text(run_id).filter(visible=True).first.wait_for(
        timeout=10_000
    )  # no click, no reload
    page.get_by_role("tab", name="Train").click()
    pick(page, "#train-run", run_id)
    page.wait_for_function(f"window.location.search.includes('run={run_id}')", timeout=10_000)
    page.reload()
    page.get_by_role("tab", name="Train").click()
    page.wait_for_function(f"document.querySelector('#train-run input').value === '{run_id}'", timeout=15_000)
    page.locator("#train-progress").get_by_text(run_id).wait_for(timeout=15_000)
    # its settings into the form, to start one like it with a change: the API's run was a 1-epoch CE run
    page.locator("#train-take-settings").click()
    page.get_by_text(f"The form now holds {run_id}'s settings").first.wait_for(timeout=15_000)
    expect(page.locator("#train-epochs input")).to_have_value("1", timeout=10_000)
    expect(page.locator("#train-method input")).to_have_value("ce")
    expect(page.locator("#train-demo-images input")).to_have_value("64")
    expect(page.locator("#train-size input")).to_have_value("16")
    expect(page.locator("#train-t-target")).to_be_hidden()  # CE has no temperatures to set
    ctx.jobs.wait([ctx.jobs.find(run_id)], timeout=240)


def test_a_run_started_on_the_command_line_is_stopped_and_resumed_from_the_train_tab(page, studio):
    """A user watches a run started from a shell after the studio: Stop is live while it trains and stops it
    (it once answered "is not running"), Resume is live once it is stopped and trains it on, and neither is
    live where it cannot act."""
    import subprocess
    import sys

    url, ctx = studio
    argv = [sys.executable, "-m", "core.train", "--image-size", "16", "--synthetic-train", "1024", "--epochs", "20"]
    argv += ["--batch-size", "16", "--device", "cpu", "--runs-dir", str(ctx.runs_dir), "--name", "from-shell"]
    root = Path(__file__).resolve().parents[1]
    trainer = subprocess.Popen(argv, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        page.goto(url)
        page.get_by_role("tab", name="Train").click()
        run = None
        deadline = time.time() + 120
        while run is None and time.time() < deadline:
            run = next(iter(ctx.runs_dir.glob("from-shell-*")), None)
            page.wait_for_timeout(500)
        assert run is not None, "the command-line run made no folder"
        pick(page, "#train-run", run.name)
        stop, resume = page.locator("#train-stop"), page.locator("#train-resume")
        page.locator("#train-progress").get_by_text(f"{run.name}: running").wait_for(timeout=120_000)
        expect(stop).to_be_enabled(timeout=10_000)
        expect(resume).to_be_disabled()
        stop.click()
        page.locator("#train-progress").get_by_text(f"{run.name}: stopped").wait_for(timeout=120_000)
        assert trainer.wait(timeout=60) == 0  # it saved its step and ended on its own
        expect(resume).to_be_enabled(timeout=10_000)
        expect(stop).to_be_disabled()
        assert page.locator(".toast-body").all_inner_texts() == []  # no "is not running"
        resume.click()  # the studio trains it on, as one of its own
        page.locator("#train-progress").get_by_text(re.compile(f"{run.name}: (queued|running)")).wait_for(
            timeout=60_000
        )
        expect(stop).to_be_enabled(timeout=10_000)
        expect(resume).to_be_disabled()
        stop.click()
        page.locator("#train-progress").get_by_text(f"{run.name}: stopped").wait_for(timeout=120_000)
        expect(page.locator("#train-take-settings")).to_be_enabled()  # a run is watched, whatever its state
    finally:
        if trainer.poll() is None:
            trainer.kill()
        for name in ctx.jobs.active():
            with contextlib.suppress(Exception):
                ctx.jobs.stop(name)


def test_a_deleted_run_leaves_every_picker(page, studio):
    url, ctx = studio
    from conftest import tiny_config

    from core.train import run_training

    run = run_training(tiny_config(ctx.runs_dir.parent, name="doomed", runs_dir=str(ctx.runs_dir)))
    page.goto(url)
    page.get_by_role("tab", name="Runs").click()
    page.locator("#runs-table").get_by_text(run.name).filter(visible=True).first.wait_for(timeout=10_000)
    delete = page.get_by_role("button", name="Delete run")
    assert delete.is_disabled()  # no run picked: nothing to delete, evaluate or download
    pick(page, "#runs-one", run.name)
    pick(page, "#runs-compare", run.name)
    page.get_by_label("Yes, delete this run and its files").check()
    delete.click()
    page.wait_for_function(f"!document.querySelector('#runs-table').innerText.includes('{run.name}')", timeout=15_000)
    page.wait_for_function("document.querySelector('#runs-one input').value === ''", timeout=10_000)
    page.wait_for_function("[...document.querySelectorAll('button')].find(b => b.innerText === 'Delete run').disabled")
    assert run.name not in options(page, "#runs-one") and run.name not in options(page, "#runs-compare")
    page.get_by_role("tab", name="Train").click()
    page.wait_for_timeout(4_000)  # a timer tick
    assert run.name not in options(page, "#train-run")
    page.get_by_role("tab", name="Diagnose").click()
    page.wait_for_timeout(6_000)
    assert not any(run.name in o for o in options(page, "#diagnose-model"))
    assert not run.exists()  # the folder itself is gone


def test_choosing_ce_hides_the_settings_it_does_not_use(page):
    new_train_form(page)  # an earlier test's run's settings (CE) are kept across its reload
    for field in ("#train-t-target", "#train-t-nontarget", "#train-kd-weight", "#train-kd-scaling"):
        assert page.locator(field).is_visible(), field
    pick(page, "#train-method", "ce")
    page.wait_for_function(
        "!document.querySelector('#train-t-target') || document.querySelector('#train-t-target').offsetParent === null",
        timeout=10_000,
    )
    for field in (
        "#train-t-target",
        "#train-t-nontarget",
        "#train-kd-weight",
        "#train-kd-scaling",
        "#train-kd-warmup",
        "#train-ps-alpha",
    ):
        assert not page.locator(field).is_visible(), field
    pick(page, "#train-method", "ps-kd")
    page.locator("#train-ps-alpha").wait_for(state="visible", timeout=10_000)
    assert not page.locator("#train-t-target").is_visible()
    pick(page, "#train-method", "tss-kd")
    page.locator("#train-t-nontarget").wait_for(state="visible", timeout=10_000)


def wait_kept(ctx, form: str, value, timeout: float = 15.0) -> None:
    """Until the studio holds `value` among form `form`'s kept values (the save runs as its own event)."""
    deadline = time.monotonic() + timeout
    while value not in (ctx.kept.get(None, form) or []):
        assert time.monotonic() < deadline, (form, value, ctx.kept.get(None, form))
        time.sleep(0.1)


def test_a_reload_keeps_every_tabs_settings_and_nothing_of_them_is_stored_in_the_browser(page, studio):
    url, ctx = studio
    ctx.kept.clear()  # as a studio just started: no earlier test's form comes back to race the edits below
    page.goto(url)
    page.get_by_role("tab", name="Train").click()
    name = page.locator("#train-name textarea, #train-name input").first
    page.locator("#train-epochs input").fill("7")
    page.locator("#train-epochs input").press("Enter")
    name.fill("kept-across-reload")
    name.press("Enter")
    pick(page, "#train-method", "ce")
    wait_kept(ctx, "train", "kept-across-reload")
    wait_kept(ctx, "train", "ce")
    page.get_by_role("tab", name="Temperatures").click()
    page.locator("#sweep-epochs input").fill("3")
    page.locator("#sweep-epochs input").press("Enter")
    wait_kept(ctx, "sweep", 3)
    page.get_by_role("tab", name="Augment").click()
    page.locator("#augment-seed input").fill("11")
    page.locator("#augment-seed input").press("Enter")
    wait_kept(ctx, "augment", 11)
    page.get_by_role("tab", name="Runs").click()
    page.locator("#runs-split").get_by_text("val").click()
    wait_kept(ctx, "runs", "val")
    page.reload()
    page.get_by_role("tab", name="Train").click()
    expect(page.locator("#train-epochs input")).to_have_value("7", timeout=15_000)
    expect(page.locator("#train-name textarea, #train-name input").first).to_have_value("kept-across-reload")
    expect(page.locator("#train-method input")).to_have_value("ce")
    expect(page.locator("#train-t-target")).to_be_hidden()  # the restored method's own fields shown, no others
    page.get_by_role("tab", name="Temperatures").click()
    expect(page.locator("#sweep-epochs input")).to_have_value("3", timeout=15_000)
    page.get_by_role("tab", name="Augment").click()
    expect(page.locator("#augment-seed input")).to_have_value("11", timeout=15_000)
    page.get_by_role("tab", name="Runs").click()
    expect(page.locator("#runs-split input[value='val']")).to_be_checked(timeout=15_000)
    # the studio kept them, not the browser: no storage and no address holds what was typed
    stored = page.evaluate("JSON.stringify([localStorage, sessionStorage, window.location.href, document.cookie])")
    assert "kept-across-reload" not in stored
    # the reset button puts the defaults back, and a reload after it keeps them
    new_train_form(page)
    name = page.locator("#train-name textarea, #train-name input").first
    expect(name).to_have_value("")
    page.locator("#train-t-target").wait_for(state="visible", timeout=10_000)  # TSS-KD's fields shown again
    wait_kept(ctx, "train", 100)
    page.reload()
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-estimate").get_by_text("Estimated time").wait_for(timeout=30_000)
    expect(page.locator("#train-epochs input")).to_have_value("100")
    expect(page.locator("#train-method input")).to_have_value("tss-kd")


def test_with_login_each_user_gets_back_only_their_own_settings(page, tmp_path):
    """Two users of a studio with login: what one typed comes back to them after a reload, never to the other
    (a handler that took its values as *args got no user, and kept every user's form as one)."""
    from studio_server import start

    url, app, ctx = start(tmp_path, auth=[("ana", "pw of ana"), ("ben", "pw of ben")])
    contexts = []
    try:

        def logged_in(user: str):
            contexts.append(page.context.browser.new_context(viewport={"width": 1400, "height": 1000}))
            pg = contexts[-1].new_page()
            pg.goto(url)
            pg.locator("input").first.fill(user)
            pg.locator("input[type=password]").fill(f"pw of {user}")
            pg.locator("button").filter(has_text="Login").click()
            pg.get_by_role("tab", name="Train").click(timeout=60_000)
            return pg

        ana = logged_in("ana")
        ana.locator("#train-epochs input").fill("9")
        ana.locator("#train-epochs input").press("Enter")
        deadline = time.monotonic() + 15
        while 9 not in (ctx.kept.get("ana", "train") or []):
            assert time.monotonic() < deadline, ctx.kept.get("ana", "train")
            time.sleep(0.1)
        assert ctx.kept.get(None, "train") is None  # kept as ana's, not the studio's
        ana.reload()
        ana.get_by_role("tab", name="Train").click(timeout=60_000)
        expect(ana.locator("#train-epochs input")).to_have_value("9", timeout=15_000)
        ben = logged_in("ben")
        ben.get_by_text("Estimated time").first.wait_for(timeout=30_000)  # loaded, its own form restored
        expect(ben.locator("#train-epochs input")).to_have_value("100")
    finally:
        for c in contexts:
            c.close()
        app.close()
        ctx.jobs.close()
