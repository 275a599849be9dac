"""The studio through its API, as gradio_client sees it: every API name, and a training followed to done."""

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from helpers import (
    IDENTIFIERS,
    compress_dicom,
    htj2k_dicom,
    needs_ojph,
    write_dicom,
    write_dicom_folder,
    write_medmnist,
)
from PIL import Image

from core import config, runs
from core import settings as settings_io
from core.config import PRESETS, TrainConfig
from core.errors import StudioError
from core.synthetic import render
from core.trust import COLOUR_MESSAGE

pytestmark = pytest.mark.slow  # the studio server and its training runs: `make test-fast` leaves them out

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    from studio_server import start

    tmp = tmp_path_factory.mktemp("studio")
    url, app, ctx = start(tmp)
    client = Client(url, verbose=False)
    yield client, ctx, tmp
    client.close() if hasattr(client, "close") else None
    app.close()
    ctx.jobs.close()


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    d = tmp_path_factory.mktemp("upload")
    images, labels, _ = render(4, size=96, seed=99)
    Image.fromarray(images[0, 0].numpy()).save(d / "scan.png")
    slice_ = images[1, 0].numpy().astype(np.uint16) * 16
    write_dicom(d / "IM0001", slice_, window=(2000, 4000))
    # The same slice first in a two-frame series, JPEG lossless as a PACS exports it.
    write_dicom(d / "series.dcm", np.stack([slice_, 4095 - slice_]), window=(2000, 4000))
    compress_dicom(d / "series.dcm", d / "IM0002", "JPEGLosslessProcess14_1")
    return d


def test_the_api_lists_exactly_the_documented_names(studio):
    client, _, _ = studio
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert names == {
        "/diagnose",
        "/augment_preview",
        "/start_training",
        "/run_status",
        "/stop_training",
        "/resume_training",
        "/start_sweep",
        "/stop_sweep",
        "/list_runs",
    }


def test_augment_preview_and_diagnose_need_only_what_a_user_must_give(studio):
    client, _, _ = studio
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    required = {
        name: [p["parameter_name"] for p in api[name]["parameters"] if not p["parameter_has_default"]]
        for name in ("/augment_preview", "/diagnose", "/start_training")
    }
    assert required == {"/augment_preview": [], "/diagnose": ["files"], "/start_training": ["settings"]}
    samples, views = client.predict(api_name="/augment_preview")  # demo scan 0, the tab's defaults
    assert len(samples) == 8 and len(views) == 2
    samples, _ = client.predict(
        upload=handle_file(str(EXAMPLES / "demo-mass.png")), count=3, api_name="/augment_preview"
    )
    assert len(samples) == 3


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"seed": None}, "the seed must be a whole number from 0 to"),  # the browser's emptied field
        ({"seed": 10**30}, "the seed must be a whole number from 0 to"),
        ({"seed": -1}, "the seed must be a whole number from 0 to"),
        ({"demo_index": None}, "the demo scan number must be a whole number from 0 to"),
        ({"demo_index": -(10**30)}, "the demo scan number must be a whole number from 0 to"),
    ],
    ids=["no-seed", "huge-seed", "negative-seed", "no-scan-number", "huge-scan-number"],
)
def test_augment_preview_refuses_a_seed_or_scan_number_it_cannot_use(studio, given, message):
    client, _, _ = studio  # an overflow or a TypeError said nothing before
    with pytest.raises(Exception, match=message):
        client.predict(**given, api_name="/augment_preview")


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "eigencam", "layercam"])  # scorecam: test_evaluate
def test_diagnose_png_and_extensionless_dicom(studio, scans, method):
    client, _, _ = studio
    warning, probs, overlay, slider, table, gallery, details = client.predict(
        [handle_file(str(scans / name)) for name in ("scan.png", "IM0001", "IM0002")],
        "demo",
        method,
        "predicted class",
        0.5,
        api_name="/diagnose",
    )
    confidences = {c["label"]: c["confidence"] for c in probs["confidences"]}
    assert set(confidences) == {"normal", "nodule", "mass", "ring"}
    assert sum(confidences.values()) == pytest.approx(1.0, abs=1e-4)
    img = Image.open(overlay)
    assert img.format == "PNG" and img.size == (96, 96)
    assert not img.info.get("exif") and not any(k for k in img.info if k not in ("dpi", "gamma"))
    assert len(table["data"]) == 3 and len(gallery) == 3
    assert table["headers"][5] == "calibration" and table["headers"][8] == "read as"
    read_as = [row[8] for row in table["data"]]
    assert all(row[5] == "calibrated" for row in table["data"])  # the demo model carries a calibration
    assert read_as[0].startswith("PNG") and read_as[1].startswith("DICOM, modality CT, window 2000/4000")
    assert read_as[2] == "DICOM, modality CT, JPEG lossless, window 2000/4000, 96x96, frame 1 of 2"
    assert [d["file"] for d in details] == ["scan.png", "IM0001", "IM0002"]
    assert details[2]["probabilities"] == pytest.approx(details[1]["probabilities"], abs=1e-6)  # lossless
    assert all(isinstance(d["in_distribution"], bool) and d["ood_score"] > 0 for d in details)
    text = json.dumps(details) + json.dumps(table)
    for value in IDENTIFIERS.values():
        assert value not in text


@needs_ojph
def test_diagnose_a_high_throughput_jpeg_2000_series_as_dicomweb_serves_it(studio, scans, tmp_path):
    client, _, _ = studio
    packed = htj2k_dicom(scans / "series.dcm", tmp_path / "IM0003")
    _, _, _, _, table, _, details = client.predict(
        [handle_file(str(scans / "IM0001")), handle_file(str(packed))],
        "demo",
        "gradcam",
        "predicted class",
        0.5,
        api_name="/diagnose",
    )
    assert table["data"][1][8] == "DICOM, modality CT, HTJ2K lossless, window 2000/4000, 96x96, frame 1 of 2"
    assert details[1]["probabilities"] == pytest.approx(details[0]["probabilities"], abs=1e-6)  # lossless


def test_diagnose_a_bad_file_is_a_clear_error_and_the_server_keeps_serving(studio, scans, tmp_path):
    client, _, _ = studio
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"definitely not a png")
    with pytest.raises(Exception, match="broken.png"):
        client.predict([handle_file(str(bad))], "demo", "gradcam", "predicted class", 0.5, api_name="/diagnose")
    _, probs, *_ = client.predict(
        [handle_file(str(scans / "scan.png"))], "demo", "gradcam", "predicted class", 0.5, api_name="/diagnose"
    )
    assert probs["label"] in ("normal", "nodule", "mass", "ring")


def test_diagnose_a_zipped_study_as_a_pacs_exports_it_answers_each_scan_and_keeps_none(studio, scans, tmp_path):
    import tempfile
    import zipfile

    client, ctx, _ = studio
    study = tmp_path / "study.zip"
    with zipfile.ZipFile(study, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(scans / "IM0002", "Testpatient^Imaginary/SE1/IM0002")  # JPEG lossless, with identifiers
        z.write(scans / "IM0001", "Testpatient^Imaginary/SE2/IM0001")
        z.writestr("DICOMDIR", b"an index")
        z.writestr("README.TXT", b"exported by a viewer")
    warning, _, _, _, table, gallery, details = client.predict(
        [handle_file(str(EXAMPLES / "demo-ring.png")), handle_file(str(study))], api_name="/diagnose"
    )
    assert [row[0] for row in table["data"]] == ["demo-ring.png", "study.zip #1: IM0002", "study.zip #2: IM0001"]
    assert [d["file"] for d in details] == [row[0] for row in table["data"]] and len(gallery) == 3
    assert [row[8].split(",")[0] for row in table["data"]] == ["PNG", "DICOM", "DICOM"]
    assert details[1]["probabilities"] == pytest.approx(details[2]["probabilities"], abs=1e-6)  # the same slice
    text = json.dumps([warning, table, details, gallery])
    for value in IDENTIFIERS.values():  # neither the tags nor the folder named after the patient
        assert value not in text
    assert not list(Path(tempfile.gettempdir()).glob("tsskd-studio-unpack-*"))  # the unpacked scans are gone

    broken = tmp_path / "broken.zip"
    broken.write_bytes(study.read_bytes()[:300])
    with pytest.raises(Exception, match="broken.zip: cannot read it as a ZIP archive"):
        client.predict([handle_file(str(broken))], api_name="/diagnose")
    _, _, _, _, table, _, _ = client.predict(
        [handle_file(str(broken)), handle_file(str(EXAMPLES / "demo-mass.png"))], api_name="/diagnose"
    )
    assert table["data"][0][3].startswith("NOT READ: broken.zip: cannot read it") and table["data"][1][1] == "mass"


@pytest.mark.parametrize("flagged", [1, 8, 9, 300])
def test_the_banner_names_a_few_flagged_scans_of_a_long_series_and_leaves_the_rest_to_the_table(flagged):
    from ui.diagnose import BANNER_NAMES, _banner

    answer = {"warnings": [], "in_distribution": True, "scan": {}}
    results = [(f"ct.zip #{k}: IM{k}", {**answer, "in_distribution": k > flagged}) for k in range(1, 302)]
    results += [(f"bad{k}.png", {"error": "unreadable"}) for k in range(flagged)]
    banner = _banner(results)
    shown = min(flagged, BANNER_NAMES)
    named = f"{', '.join(f'ct.zip #{k}: IM{k}' for k in range(1, shown + 1))}"
    rest = f" and {flagged - shown} more (see the table)" if flagged > shown else ""
    assert f"{flagged} of {len(results)} scans are not like the training data: {named}{rest}." in banner
    assert f"ct.zip #{shown + 1}: " not in banner and banner.count("bad") == shown


@pytest.mark.parametrize("count", [1, 8, 10])
def test_uploads_none_of_which_can_be_read_say_why_for_a_few_and_count_the_rest(studio, tmp_path, count):
    client, _, _ = studio
    paths = [tmp_path / f"page{k}.txt" for k in range(count)]
    for path in paths:
        path.write_text("a letter, not a scan")
    with pytest.raises(Exception) as refused:
        client.predict([handle_file(str(p)) for p in paths], api_name="/diagnose")
    message = str(refused.value)
    shown = min(count, 8)
    assert [f"page{k}.txt: not an image" in message for k in range(count)] == [k < shown for k in range(count)]
    assert ("and 2 more files" in message) is (count == 10)


def test_diagnose_a_truncated_dicom_between_two_good_scans_sinks_only_itself(studio, tmp_path):
    from pydicom.data import get_testdata_file

    client, _, _ = studio
    bad = tmp_path / "truncated.dcm"
    bad.write_bytes(open(get_testdata_file("CT_small.dcm"), "rb").read()[:2000])
    files = [EXAMPLES / "demo-ring.png", bad, EXAMPLES / "demo-mass.png"]
    warning, _, _, _, table, gallery, details = client.predict(
        [handle_file(str(f)) for f in files], api_name="/diagnose"
    )
    assert [row[0] for row in table["data"]] == ["demo-ring.png", "truncated.dcm", "demo-mass.png"]
    assert table["data"][1][3].startswith("NOT READ: truncated.dcm")
    assert [d.get("predicted") for d in details] == ["ring", None, "mass"]
    assert "truncated.dcm" in details[1]["error"] and len(gallery) == 2
    assert "1 of 3 files could not be read: truncated.dcm" in warning


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "photo", "tinted demo scan"])
def test_diagnose_flags_scans_unlike_the_training_data(studio, tmp_path, name):
    from pydicom.data import get_testdata_file
    from skimage import data as photos

    client, _, _ = studio
    if name == "photo":
        path = tmp_path / "retina.jpg"
        Image.fromarray(photos.retina()[::4, ::4]).save(path)
    elif name == "tinted demo scan":  # the demo model's own kind of scan in colour: flagged by the colour rule
        path = tmp_path / "warm.png"
        grey = np.asarray(Image.open(EXAMPLES / "demo-mass.png")).astype(int)[..., None]
        Image.fromarray(np.clip(grey + np.array([40, 0, -40]), 0, 255).astype(np.uint8)).save(path)
    else:
        path = get_testdata_file(name)
    warning, probs, _, _, table, _, details = client.predict([handle_file(str(path))], api_name="/diagnose")
    assert "Not like the training data: do not trust this prediction" in warning
    assert details[0]["in_distribution"] is False
    assert details[0]["lesion_box"] is None and table["data"][0][7] == "none (answer not to be trusted)"
    if name == "tinted demo scan":
        assert details[0]["ood_score"] < 1 and COLOUR_MESSAGE in warning and COLOUR_MESSAGE in details[0]["warnings"]
        assert table["data"][0][3].startswith("OUT OF DISTRIBUTION (a colour image)")
    else:
        assert details[0]["ood_score"] > 1  # flagged by the check itself; the retina photograph is in colour too
        assert (COLOUR_MESSAGE in warning) == (name == "photo")
        why = " (a colour image):" if name == "photo" else ":"
        assert table["data"][0][3].startswith("OUT OF DISTRIBUTION" + why)


def test_diagnose_says_when_a_dicom_file_has_text_burned_into_its_pixels(studio, tmp_path):
    """The answer is the same; the reader is told that the scan and its map may show who the patient is."""
    from core.trust import BURNED_IN_MESSAGE

    client, _, _ = studio
    pixels = np.asarray(Image.open(EXAMPLES / "demo-mass.png"))
    files = [write_dicom(tmp_path / n, pixels, modality="OT", burned_in=tag) for n, tag in (("a", "NO"), ("b", "YES"))]
    for order, shown in ((files, "a"), (files[::-1], "b")):
        uploads = [handle_file(str(f)) for f in order]
        warning, probs, *_, table, _, details = client.predict(uploads, api_name="/diagnose")
        said = {d["file"]: BURNED_IN_MESSAGE in d["warnings"] for d in details}
        assert said == {"a": False, "b": True}
        assert {row[0]: row[8].endswith("text burned into the pixels") for row in table["data"]} == said
        assert details[0]["probabilities"] == pytest.approx(details[1]["probabilities"])  # the same pixels
        assert all(d["in_distribution"] is True for d in details) and probs["label"] == "mass"  # trusted as before
        assert (BURNED_IN_MESSAGE in warning) == (shown == "b")  # the banner: the scan shown, and the batch
        assert "1 of 2 scans say text is burned into their pixels, which may identify the patient: b." in warning


@pytest.mark.parametrize(
    ("in_distribution", "learned", "no_finding", "box", "said"),
    [
        (True, True, False, (1, 2, 3, 4), "(1, 2, 3, 4)"),
        (True, True, False, None, "none (empty map)"),
        (True, True, True, None, "none ('normal' is no finding)"),
        (None, True, True, None, "none ('normal' is no finding)"),  # a model without a check
        (False, True, True, None, "none (answer not to be trusted)"),  # flagged: that first, whatever the class
        (True, False, True, None, "none (answer not to be trusted)"),
        (False, True, False, None, "none (answer not to be trusted)"),
    ],
)
def test_the_table_says_why_a_scan_has_no_lesion_box_weightiest_reason_first(
    in_distribution, learned, no_finding, box, said
):
    from ui.diagnose import _box

    answer = {"lesion_box": box, "in_distribution": in_distribution, "model_learned": learned}
    assert _box(answer | {"target_no_finding": no_finding, "target": "normal"}) == said


@pytest.mark.parametrize(
    ("p", "decimals", "shown"),
    [
        (0.99994, 0, ">99%"),  # the demo model on its own mass scan
        (0.99994, 1, ">99.9%"),
        (0.9974, 0, ">99%"),
        (0.9974, 1, "99.7%"),
        (0.994, 0, "99%"),
        (1.0, 0, "100%"),  # only a probability of exactly 1 reads as certain
        (0.5, 0, "50%"),
        (0.004, 0, "<1%"),
        (0.004, 1, "0.4%"),
        (0.00004, 1, "<0.1%"),
        (0.0, 0, "0%"),
        (0.0, 1, "0.0%"),
    ],
)
def test_a_probability_short_of_certain_never_reads_as_100_or_0_percent(p, decimals, shown):
    from ui.diagnose import percent

    assert percent(p, decimals) == shown


def test_diagnose_shows_the_demo_mass_scan_as_short_of_certain_wherever_it_gives_a_probability(studio):
    client, _, _ = studio
    _, probs, _, _, table, gallery, details = client.predict(
        [handle_file(str(EXAMPLES / "demo-mass.png"))], api_name="/diagnose"
    )
    assert details[0]["confidence"] > 0.9995 and probs["label"] == "mass"  # the API keeps the exact figure
    assert table["data"][0][2] == ">99.9%" and table["data"][0][6] == "mass (>99%)"
    assert gallery[0]["caption"] == "demo-mass.png: mass (>99%); map for: mass, >99%"


@pytest.mark.parametrize(("greyed", "heading"), [(True, False), (False, True)])
def test_an_answer_not_to_be_read_as_it_is_loses_the_headline_naming_its_top_class(greyed, heading):
    from ui.diagnose import GREYED, style

    view = {"greyed": greyed, "overlay_label": "Lesion map for: mass", "several": False, "table": "/t/diagnosis.csv"}
    probs, overlay, gallery, download = style(view)
    assert probs["show_heading"] is heading and (GREYED in probs["elem_classes"]) is greyed
    assert overlay["label"] == "Lesion map for: mass" and gallery["visible"] is False
    assert download == {"__type__": "update", "value": "/t/diagnosis.csv", "visible": True}  # the table to keep


def test_diagnose_a_demo_scan_is_not_flagged_and_maps_any_class_by_name(studio):
    client, _, _ = studio
    warning, probs, overlay, _, table, gallery, details = client.predict(
        [handle_file(str(EXAMPLES / "demo-ring.png"))], "demo", "gradcam", "mass", 0.5, api_name="/diagnose"
    )
    assert warning == "" and details[0]["in_distribution"] is True and probs["label"] == "ring"
    assert details[0]["map_of"] == "mass" and table["data"][0][6].startswith("mass (")
    assert details[0]["map_of_no_finding"] is False and table["data"][0][7].startswith("(")
    assert gallery[0]["caption"].endswith(f"map for: mass, {table['data'][0][6].split('(')[1].rstrip(')')}")
    with pytest.raises(Exception, match="unknown class 'tumour'"):
        client.predict(
            [handle_file(str(EXAMPLES / "demo-ring.png"))], "demo", "gradcam", "tumour", 0.5, api_name="/diagnose"
        )
    *_, table, _, details = client.predict([handle_file(str(EXAMPLES / "demo-normal.png"))], api_name="/diagnose")
    assert details[0]["map_of"] == "normal" and details[0]["map_of_no_finding"] is True
    assert details[0]["lesion_box"] is None and table["data"][0][7] == "none ('normal' is no finding)"


@pytest.mark.parametrize(
    ("method", "target", "message"),
    [
        ([], "predicted class", "unknown lesion-map method '\\[\\]'"),
        ("gradcam", [], "a class is its name or its index, not \\[\\]"),
        ("gradcam", {"class": "mass"}, "a class is its name or its index"),
        ("gradcam", ["mass"], "a class is its name or its index"),
        ("gradcam", 1.5, "a class is its name or its index, not 1.5"),
    ],
    ids=["method-list", "class-list", "class-object", "class-in-a-list", "class-fraction"],
)
def test_diagnose_with_arguments_of_the_wrong_json_type_says_what_is_wrong(studio, method, target, message):
    client, _, _ = studio  # what the REST API lets a caller send; a bare TypeError said nothing before
    with pytest.raises(Exception, match=message):
        client.predict(
            [handle_file(str(EXAMPLES / "demo-ring.png"))], "demo", method, target, 0.5, api_name="/diagnose"
        )


@pytest.mark.parametrize("session", ["pacs-bridge-1", None])
def test_diagnose_over_plain_http_as_docs_studio_shows(studio, session):
    """Upload, call, read the event stream: what a script without gradio_client does (docs/studio.md)."""
    import httpx

    client, _, _ = studio
    url = client.src.rstrip("/") + "/gradio_api/"
    with httpx.Client(timeout=60) as http:
        scan = EXAMPLES / "demo-ring.png"
        (path,) = http.post(url + "upload", files=[("files", (scan.name, scan.read_bytes()))]).json()
        data = [[{"path": path, "meta": {"_type": "gradio.FileData"}}], "demo", "gradcam", "predicted class", 0.5]
        body = {"data": data} if session is None else {"data": data, "session_hash": session}
        event_id = http.post(url + "call/diagnose", json=body).json()["event_id"]
        lines = http.get(url + "call/diagnose/" + event_id).text.splitlines()
    assert lines[0] == "event: complete", lines[:2]
    outputs = json.loads(lines[1].removeprefix("data: "))
    warning, probs, overlay, _, table, gallery, details, *page_state = outputs
    assert page_state == [None, None]  # the tab's own state stays on the server
    assert warning == "" and probs["label"] == "ring" and details[0]["in_distribution"] is True
    assert overlay["path"].endswith(".png") and len(table["data"]) == 1


TINY = {"image_size": 16, "epochs": 1, "batch_size": 16, "device": "cpu", "synthetic_train": 64}


def test_start_training_follows_a_tiny_run_to_done(studio):
    client, ctx, _ = studio
    settings = {"method": "tss-kd", "image_size": 16, "epochs": 1, "batch_size": 16, "device": "cpu"}
    run_id = client.predict(
        {**settings, "name": "api-tiny", "data": {"synthetic_train": 256, "synthetic_val": 64, "synthetic_test": 64}},
        api_name="/start_training",
    )
    assert run_id.startswith("api-tiny-")
    deadline = time.time() + 240
    status = {}
    while time.time() < deadline:
        status = client.predict(run_id, api_name="/run_status")
        if status["status"] in ("done", "failed"):
            break
        time.sleep(1)
    assert status["status"] == "done", status
    assert status["epoch"] == 1 and status["latest"]["val_auc"] is not None
    # listed as the Runs tab lists it, with how it stepped its weights and its test figures
    (listed,) = [r for r in client.predict(api_name="/list_runs") if r["run"] == run_id]
    assert (listed["status"], listed["method"], listed["optimizer"], listed["epochs"]) == (
        "done",
        "tss-kd",
        "sgd 0.01",
        "1/1",
    )
    assert listed["test_acc"] == status["test_acc"] and listed["best_val_auc"] == pytest.approx(
        status["latest"]["val_auc"]
    )
    assert status["latest"]["logit_spread"] > 0 and status["latest"]["kd_weight"] == pytest.approx(0.1)
    # one epoch of 256 images learns nothing yet: the finished run says so instead of looking fine
    assert [w["kind"] for w in status["warnings"]] in ([], ["chance"])
    cfg = json.loads((ctx.jobs.find(run_id) / "config.json").read_text())
    assert (cfg["kd_scaling"], cfg["kd_warmup"], cfg["preset"]) == ("nontarget", 10, None)
    # finished after start-up, usable from Diagnose by id with any of its classes, no restart
    warning, probs, *_, details = client.predict(
        [handle_file(str(EXAMPLES / "demo-ring.png"))], run_id, "gradcam", "mass", 0.5, api_name="/diagnose"
    )
    assert details[0]["map_of"] == "mass" and isinstance(details[0]["in_distribution"], bool)
    # the Runs tab's Report and Download buttons hand over files the studio removes later itself
    from ui.runs import make_download, make_report

    name = ctx.jobs.find(run_id).name
    (report,) = make_report(ctx)(run_id)
    downloads = make_download(ctx)(run_id)
    assert Path(report).name == f"{name}-report.html" and "<html" in Path(report).read_text()[:200].lower()
    assert {Path(f).name for f in downloads} == {
        f"{name}-config.json",
        f"{name}.safetensors",
        f"{name}.json",
        f"{name}.ood.safetensors",
    }
    assert all(Path(f).is_relative_to(ctx.images.folder) for f in [report, *downloads])


def ended(client, run_id: str, seconds: float = 240) -> dict:
    """The run's /run_status once it is done or failed (or the last one after `seconds`)."""
    deadline, status = time.time() + seconds, {}
    while time.time() < deadline:
        status = client.predict(run_id, api_name="/run_status")
        if status["status"] in ("done", "failed"):
            break
        time.sleep(0.5)
    return status


def test_stop_and_resume_through_the_api_as_the_train_tabs_buttons_do(studio):
    """A run started through the API is stopped through it (answered once stopped, its epochs kept), resumed from
    where it stopped, not from scratch, and stopped again; a queued run stops without ever training."""
    client, ctx, _ = studio
    long = {**TINY, "epochs": 200, "synthetic_train": 256, "name": "api-stop"}
    run_id = client.predict(long, api_name="/start_training")
    queued = client.predict({**long, "name": "api-queued"}, api_name="/start_training")  # behind it on the CPU
    stopped = client.predict(queued, api_name="/stop_training")
    assert (stopped["status"], stopped["epoch"]) == ("stopped", 0)
    deadline = time.time() + 240
    while client.predict(run_id, api_name="/run_status")["epoch"] < 2 and time.time() < deadline:
        time.sleep(0.5)
    first = client.predict(run_id, api_name="/stop_training")
    assert first["status"] == "stopped" and 2 <= first["epoch"] < 200, first
    assert client.predict(run_id, api_name="/run_status")["epoch"] == first["epoch"]  # nothing trained on after
    again = client.predict(run_id, api_name="/resume_training")
    assert again["status"] in ("queued", "running") and again["epoch"] == first["epoch"]
    deadline = time.time() + 240
    while client.predict(run_id, api_name="/run_status")["epoch"] < first["epoch"] + 1 and time.time() < deadline:
        time.sleep(0.5)
    second = client.predict(run_id, api_name="/stop_training")
    assert second["status"] == "stopped" and first["epoch"] < second["epoch"] < 200, second
    epochs = [row["epoch"] for row in runs.read_metrics(ctx.jobs.find(run_id))]
    assert epochs == list(range(1, second["epoch"] + 1))  # resumed, not trained again from its first epoch


@pytest.mark.parametrize(
    "endpoint, run, message",
    [
        ("/stop_training", "no-such-run", "no run named"),
        ("/resume_training", "no-such-run", "no run named"),
        ("/stop_training", "../../etc", "no run named"),
        ("/resume_training", "../../etc", "no run named"),
        ("/stop_training", "done", "is not running"),
        ("/resume_training", "done", "only stopped or failed runs resume"),
    ],
)
def test_stop_and_resume_through_the_api_refuse_what_they_cannot_do_and_change_nothing(studio, endpoint, run, message):
    client, ctx, _ = studio
    if run == "done":
        run = client.predict({**TINY, "name": "api-done"}, api_name="/start_training")
        assert ended(client, run)["status"] == "done"
    before = sorted(p.name for p in ctx.runs_dir.iterdir())
    with pytest.raises(Exception, match=message):
        client.predict(run, api_name=endpoint)
    assert sorted(p.name for p in ctx.runs_dir.iterdir()) == before
    if run.startswith("api-done"):
        assert client.predict(run, api_name="/run_status")["status"] == "done"


def test_a_sweep_started_through_the_api_trains_its_runs_together_as_the_temperatures_tab_does(studio):
    client, ctx, _ = studio
    tag = client.predict({"t_targets": [2, 4], "t_nontargets": "0.4", **TINY, "lr": 0.02}, api_name="/start_sweep")
    assert re.fullmatch(r"sweep\d+", tag)
    members = sorted(r["run"] for r in client.predict(api_name="/list_runs") if r["run"].startswith(tag + "-"))
    assert [m.split("-")[1:3] for m in members] == [["T2", "t0.4"], ["T4", "t0.4"]]
    assert all(ended(client, m)["status"] == "done" for m in members)
    for m in members:  # the settings given, TSS-KD, and one process for both: a grid
        cfg, status = (json.loads((ctx.jobs.find(m) / f).read_text()) for f in ("config.json", "status.json"))
        assert (cfg["method"], cfg["lr"], cfg["epochs"], cfg["data"]["image_size"]) == ("tss-kd", 0.02, 1, 16)
        assert status["grid"] == members
    with pytest.raises(Exception, match=f"no run of the sweep {tag} is queued or running"):
        client.predict(tag, api_name="/stop_sweep")


def test_a_sweep_stopped_through_the_api_stops_every_run_and_each_resumes_alone(studio):
    client, ctx, _ = studio
    tag = client.predict(
        {"t_targets": [2, 4], "t_nontargets": [0.4], **TINY, "epochs": 200, "synthetic_train": 256},
        api_name="/start_sweep",
    )
    members = sorted(r["run"] for r in client.predict(api_name="/list_runs") if r["run"].startswith(tag + "-"))
    deadline = time.time() + 240
    while client.predict(members[0], api_name="/run_status")["epoch"] < 1 and time.time() < deadline:
        time.sleep(0.5)
    assert sorted(client.predict(tag, api_name="/stop_sweep")) == members
    assert all(ended_as(client, m, "stopped")["epoch"] < 200 for m in members)
    again = client.predict(members[1], api_name="/resume_training")  # alone, the other stays stopped
    assert again["status"] in ("queued", "running")
    assert client.predict(members[1], api_name="/stop_training")["status"] == "stopped"
    assert client.predict(members[0], api_name="/run_status")["status"] == "stopped"


def ended_as(client, run_id: str, status: str, seconds: float = 60) -> dict:
    deadline, got = time.time() + seconds, {}
    while time.time() < deadline:
        got = client.predict(run_id, api_name="/run_status")
        if got["status"] == status:
            break
        time.sleep(0.25)
    return got


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"t_nontargets": [0.4]}, '"t_targets" takes a list of numbers'),
        ({"t_targets": [], "t_nontargets": [0.4]}, '"t_targets" takes a list of numbers'),
        ({"t_targets": [True], "t_nontargets": [0.4]}, '"t_targets" takes a list of numbers'),
        ({"t_targets": "2, x", "t_nontargets": [0.4]}, "t_targets: write numbers separated by commas"),
        ({"t_targets": [2, -1], "t_nontargets": [0.4]}, "positive numbers, not -1"),
        ({"t_targets": list(range(1, 7)), "t_nontargets": [1, 2, 3, 4, 5]}, "at most 25 runs"),
        ({"t_targets": [2], "t_nontargets": [0.4], "method": "ce"}, "leave out 'method'"),
        ({"t_targets": [2], "t_nontargets": [0.4], "t_target": 3, "name": "x"}, "leave out 't_target', 'name'"),
        ({"t_targets": [2], "t_nontargets": [0.4], "like": "some-run"}, "leave out 'like'"),
        ({"t_targets": [2], "t_nontargets": [0.4], "epochs": 0}, "at least one epoch"),
        ({"t_targets": [2], "t_nontargets": [0.4], "colour": 1}, "unknown setting 'colour'"),
        ({"t_targets": [2], "t_nontargets": [0.4], "runs_dir": "/tmp"}, "set by the studio"),
        ({"t_targets": [2], "t_nontargets": [0.4], "dataset": "folder", "data_path": "../.."}, "data folder"),
        ({"t_targets": [2], "t_nontargets": [0.4], "device": "cuda:64"}, "cuda:64"),
    ],
)
def test_a_sweep_the_api_cannot_train_is_refused_and_makes_no_run(studio, settings, message):
    client, ctx, _ = studio
    before = sorted(p.name for p in ctx.runs_dir.iterdir())
    with pytest.raises(Exception, match=re.escape(message)):
        client.predict({**TINY, **settings}, api_name="/start_sweep")
    assert sorted(p.name for p in ctx.runs_dir.iterdir()) == before


def test_a_run_on_dicom_files_with_text_burned_into_their_pixels_says_so_through_run_status(studio):
    """The count is in /run_status (the Train tab's note reads it), and the run's log says so, not only its report."""
    client, ctx, tmp = studio
    write_dicom_folder(tmp / "data" / "burned", 40, burned=5, seed=8)
    run_id = client.predict({**TINY, "dataset": "folder", "data_path": "burned"}, api_name="/start_training")
    status = ended(client, run_id)
    assert status["status"] == "done" and status.get("burned_in") == 5, status
    assert "5 of the data's DICOM files say that text is burned" in (ctx.jobs.find(run_id) / "train.log").read_text()


@pytest.mark.parametrize(
    ("settings", "scaling", "warmup", "preset"),
    [
        ({"preset": "paper"}, "paper", 0, "paper"),
        ({"preset": "quick"}, "nontarget", 0, "quick"),
        ({"kd_warmup": 3}, "nontarget", 3, None),
    ],
)
def test_start_training_records_the_recipe_scaling_and_warm_up(studio, settings, scaling, warmup, preset):
    client, ctx, _ = studio
    run_id = client.predict({**TINY, **settings, "stop_on_collapse": True}, api_name="/start_training")
    cfg = json.loads((ctx.jobs.find(run_id) / "config.json").read_text())
    assert (cfg["kd_scaling"], cfg["kd_warmup"], cfg["preset"], cfg["stop_on_collapse"]) == (
        scaling,
        warmup,
        preset,
        True,
    )
    if preset:  # the recipe applied, and the settings given still won
        lr = PRESETS[preset]["lr"]  # paper: SGD's 0.01; quick: Adam's 0.001
        assert (cfg["epochs"], cfg["lr"], cfg["t_target"], cfg["kd_weight"]) == (1, lr, 4.0, 1.0)
        assert (cfg["data"]["image_size"], cfg["data"]["synthetic_train"]) == (16, 64)
    ctx.jobs.stop(run_id)


def test_start_training_with_only_a_method_and_epochs_starts_a_run_with_the_rest_defaulted(studio):
    client, ctx, _ = studio
    run_id = client.predict({"method": "ce", "epochs": 1}, api_name="/start_training")
    ctx.jobs.stop(run_id)
    cfg = json.loads((ctx.jobs.find(run_id) / "config.json").read_text())
    assert (cfg["method"], cfg["epochs"], cfg["batch_size"], cfg["data"]["dataset"]) == ("ce", 1, 128, "synthetic")
    assert cfg["runs_dir"] == str(ctx.runs_dir) and run_id.startswith("synthetic-ce-")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kd_scaling": "hinton"}, "unknown KD scaling 'hinton'"),
        ({"epoch": 3}, "unknown setting 'epoch'; known settings: .*epochs"),
        ({"epochs": "many"}, "setting 'epochs' must be int"),
        ({"epochs": 2.5}, "setting 'epochs' must be int"),
        ({"runs_dir": "/tmp/elsewhere"}, "'runs_dir' is set by the studio"),
        ({"preset": "fastest"}, "unknown preset 'fastest'"),
        ({"data": {"colour": 1}}, "unknown data setting 'colour'"),
        ({"method": "magic"}, "unknown method"),
        ({"pretrained": "../weights.pth"}, "outside the data folder"),
        # the Train form's Start with MedMNIST or a folder and no path once made a run that failed in its trainer
        ({"dataset": "medmnist"}, "the medmnist data needs its path, a MedMNIST .npz file"),
        ({"dataset": "medmnist", "data_path": ""}, "the medmnist data needs its path"),
        ({"dataset": "folder", "data_path": "   "}, "give a path inside the data folder"),
        ({"dataset": "folder"}, "the folder data needs its path, an image folder or a CSV manifest"),
        ({"data": {"dataset": "folder", "data_path": None}}, "the folder data needs its path"),
        ({"dataset": "dicomweb"}, "unknown dataset 'dicomweb'; choose one of synthetic, medmnist, folder"),
        # a device this machine lacks once made a run that failed in its trainer ("cuda" when CUDA is here)
        ({"device": "cuda:64"}, "cuda:64"),
        ({"device": "mps"}, "unsupported device 'mps'"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"device": "cpu", "cuda_graphs": True}, "CUDA graphs need a CUDA GPU"),  # made a run that then failed
    ],
)
def test_start_training_refuses_bad_settings_and_makes_no_run(studio, settings, message):
    client, ctx, _ = studio
    before = set(p.name for p in ctx.runs_dir.iterdir())
    with pytest.raises(Exception, match=message):
        client.predict({**TINY, **settings}, api_name="/start_training")
    assert set(p.name for p in ctx.runs_dir.iterdir()) == before


@pytest.mark.parametrize(
    ("first", "changes"),
    [
        ({"momentum": 0.8, "gamma_min": 0.3}, {"t_target": 6.0}),  # settings the Train form has no field for
        ({"preset": "quick"}, {"seed": 4}),
        ({"method": "ce", "weight_decay": 0.0}, {"method": "tss-kd"}),
        ({"dataset": "folder", "data_path": "like-scans"}, {"epochs": 2}),  # its data named inside the data folder
    ],
    ids=["form-has-no-field", "quick", "another-method", "folder-data"],
)
def test_start_training_like_a_run_takes_its_settings_and_changes_only_those_given(studio, first, changes):
    """ "like": a run's id: an API user starts that run again with one change, without copying its settings
    (its config.json, with the studio's runs folder and absolute data path, cannot be sent back as it is)."""
    client, ctx, tmp = studio
    image_folder(tmp / "data" / "like-scans", 20)
    one = client.predict({**TINY, **first}, api_name="/start_training")
    ctx.jobs.stop(one)
    two = client.predict({"like": one, **changes}, api_name="/start_training")
    ctx.jobs.stop(two)
    old = json.loads((ctx.jobs.find(one) / "config.json").read_text())
    new = json.loads((ctx.jobs.find(two) / "config.json").read_text())
    expected = config.to_record(settings_io.from_settings({**TINY, **first, **changes}).resolved())
    for key in ("name", "runs_dir"):
        expected.pop(key), old.pop(key), new.pop(key)
    expected["data"]["data_path"] = old["data"]["data_path"]  # as the studio resolved it in its data folder
    assert new == expected and two != one
    assert {k for k in new if new[k] != old[k]} >= {k for k in changes if k not in ("seed",)}


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "under data"])
def test_start_training_like_a_run_whose_data_lies_outside_takes_the_data_path_given(studio, nested):
    client, ctx, tmp = studio
    image_folder(tmp / "data" / "like-scans", 20)
    outside = config.to_record(settings_io.from_settings({**TINY, "dataset": "folder", "data_path": "/scans"}))
    source = runs.Run.create(ctx.runs_dir, "like-outside", outside)
    source.set_status("stopped")
    path = {"data": {"data_path": "like-scans"}} if nested else {"data_path": "like-scans"}
    run_id = client.predict({"like": source.name, **path}, api_name="/start_training")
    ctx.jobs.stop(run_id)
    new = json.loads((ctx.jobs.find(run_id) / "config.json").read_text())
    assert new["data"]["data_path"] == str((tmp / "data" / "like-scans").resolve())
    assert (new["data"]["dataset"], new["epochs"]) == ("folder", 1)


@pytest.mark.parametrize(
    ("like", "extra", "message"),
    [
        ("no-such-run", {}, "no-such-run"),
        ("../studio", {}, "no run"),
        (5, {}, '"like" takes the id of a run'),
        ("", {}, '"like" takes the id of a run'),
        ("{run}", {"epochs": "many"}, "setting 'epochs' must be int"),
        ("{run}", {"runs_dir": "/tmp/elsewhere"}, "'runs_dir' is set by the studio"),
        ("{outside}", {}, 'data_path is outside this studio\'s data folder; give "data_path" as well'),
    ],
)
def test_start_training_like_no_run_or_with_bad_changes_is_refused_and_makes_no_run(studio, like, extra, message):
    client, ctx, tmp = studio
    run = runs.Run.create(ctx.runs_dir, "like-source", config.to_record(settings_io.from_settings(TINY).resolved()))
    run.set_status("stopped")
    outside = config.to_record(settings_io.from_settings({**TINY, "dataset": "medmnist", "data_path": "/m.npz"}))
    outside_run = runs.Run.create(ctx.runs_dir, "like-outside", outside)
    outside_run.set_status("stopped")
    like = like.format(run=run.name, outside=outside_run.name) if isinstance(like, str) else like
    before = set(p.name for p in ctx.runs_dir.iterdir())
    with pytest.raises(Exception, match=message):
        client.predict({"like": like, **extra}, api_name="/start_training")
    assert set(p.name for p in ctx.runs_dir.iterdir()) == before


def image_folder(root: Path, per_class: int) -> Path:
    """A readable class-per-folder tree of small PNGs under `root`."""
    for label, shift in (("a", 0), ("b", 9)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(np.full((16, 16), (25 * i + shift) % 256, np.uint8)).save(root / label / f"{i}.png")
    return root


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "under data"])
@pytest.mark.parametrize(
    "path,message",
    [
        ("../secret", "outside the data folder"),
        ("/etc/passwd", "not an absolute path"),
        (None, "not an absolute path"),  # a readable image folder outside: only the confinement can refuse it
        ("missing.npz", "does not exist"),
    ],
)
def test_start_training_refuses_paths_outside_the_data_root(studio, path, message, nested, tmp_path):
    """The data's settings may come flat or under "data", and both are confined: under "data", an absolute path
    once started a run on a folder outside the data root."""
    client, ctx, _ = studio
    data = {"dataset": "medmnist", "data_path": path, "image_size": 28}
    if path is None:
        data = {"dataset": "folder", "data_path": str(image_folder(tmp_path / "outside", 20)), "image_size": 16}
    before = set(p.name for p in ctx.runs_dir.iterdir()) if ctx.runs_dir.exists() else set()
    with pytest.raises(Exception, match=message):
        client.predict({**TINY, **({"data": data} if nested else data)}, api_name="/start_training")
    assert set(p.name for p in ctx.runs_dir.iterdir()) == before


def unfit_weights(path: Path) -> str:
    """A safetensors file of weights no layer of a ResNet-18 takes."""
    import torch
    from safetensors.torch import save_file

    save_file({"encoder.weight": torch.zeros(3, 3)}, str(path))
    return path.name


@pytest.mark.parametrize(
    "dataset,make,message",
    [
        ("medmnist", lambda d: (d / "notes.npz").write_text("hello") and "notes.npz", "notes.npz is not a .npz file"),
        ("medmnist", lambda d: str(write_medmnist(d / "noval.npz", n=(30, 0, 10)).name), "validation split is empty"),
        ("medmnist", lambda d: str(write_medmnist(d / "one.npz", classes=1).name), "at least two classes"),
        ("folder", lambda d: str(image_folder(d / "tiny", 3).name), "validation split is empty .* one image from 4"),
        ("folder", lambda d: (d / "nothing").mkdir() or "nothing", "nothing: no scans found"),
        # weights to start from, with the demo data
        ("pretrained", lambda d: "resnet18.pth", "'resnet18.pth' does not exist in the data folder"),
        ("pretrained", lambda d: (d / "w.pth").write_text("x") and "w.pth", "not a weight file this studio can load"),
        ("pretrained", lambda d: unfit_weights(d / "other.safetensors"), "none of its weights fit this architecture"),
    ],
)
def test_start_training_refuses_data_or_weights_it_cannot_train_on_and_makes_no_run(studio, dataset, make, message):
    """Each of these once made a run that failed in its trainer a moment later (a tiny folder only after its
    first epoch, with "Dimension out of range"); the data's listing and labels say so before Start makes one."""
    client, ctx, _ = studio
    ctx.data_root.mkdir(parents=True, exist_ok=True)
    path = make(ctx.data_root)
    before = set(p.name for p in ctx.runs_dir.iterdir()) if ctx.runs_dir.exists() else set()
    given = {"pretrained": path} if dataset == "pretrained" else {"dataset": dataset, "data_path": path}
    with pytest.raises(Exception, match=message):
        client.predict({**TINY, **given}, api_name="/start_training")
    assert (set(p.name for p in ctx.runs_dir.iterdir()) if ctx.runs_dir.exists() else set()) == before


def test_a_data_path_under_data_is_found_in_the_data_root_as_a_flat_one_is(studio):
    client, ctx, _ = studio
    folder = image_folder(ctx.data_root / "nested-scans", 20)
    run_id = client.predict(
        {**TINY, "data": {"dataset": "folder", "data_path": "nested-scans", "image_size": 16}},
        api_name="/start_training",
    )
    status = ended(client, run_id)
    assert status["status"] == "done", status
    run = ctx.jobs.find(run_id)
    saved = json.loads((run / "config.json").read_text())["data"]
    assert saved["data_path"] == str(folder.resolve()) and saved["resize"] == "lanczos"
    assert json.loads((run / "model.json").read_text())["resize"] == "lanczos"  # Diagnose resizes as training did


def test_diagnose_takes_a_model_file_from_the_models_folder_by_name_and_nothing_outside_it(studio, tiny_run):
    from core.export import export_run

    client, ctx, _ = studio
    ctx.models_dir.mkdir(parents=True, exist_ok=True)
    export_run(tiny_run, ctx.models_dir)
    name = f"{tiny_run.name}.safetensors"
    assert name in [value for _, value in ctx.model_choices()]
    *_, details = client.predict([handle_file(str(EXAMPLES / "demo-ring.png"))], name, api_name="/diagnose")
    assert isinstance(details[0]["in_distribution"], bool) and set(details[0]["probabilities"]) == {
        "normal",
        "nodule",
        "mass",
        "ring",
    }
    for bad in (
        f"../models/{name}",
        str(ctx.models_dir / name),
        f"{tiny_run.name}.ood.safetensors",
        "none.safetensors",
    ):
        with pytest.raises(Exception, match="no such model file in the models folder"):
            client.predict([handle_file(str(EXAMPLES / "demo-ring.png"))], bad, api_name="/diagnose")


def test_a_model_file_exported_before_its_run_finished_is_not_offered_and_refused_by_name(studio, tiny_run, tmp_path):
    """As an unfinished run is: its model was never calibrated or checked against its training data."""
    import shutil

    from core import runs
    from core.export import export_model

    client, ctx, _ = studio
    run = Path(shutil.copytree(tiny_run, tmp_path / tiny_run.name))
    runs.write_json(run / "status.json", {**runs.Run(run).status(), "status": "stopped", "epoch": 1, "epochs": 3})
    ctx.models_dir.mkdir(parents=True, exist_ok=True)
    export_model(run, ctx.models_dir / "early.safetensors")
    export_model(tiny_run, ctx.models_dir / "finished.safetensors")
    offered = [value for _, value in ctx.model_choices()]
    assert "finished.safetensors" in offered and "early.safetensors" not in offered
    with pytest.raises(Exception, match=r"early.safetensors was exported before its run finished: run .* \(stopped"):
        client.predict([handle_file(str(EXAMPLES / "demo-ring.png"))], "early.safetensors", api_name="/diagnose")


def test_run_status_of_an_unknown_run_is_a_clear_error(studio):
    client, _, _ = studio
    with pytest.raises(Exception, match="no run named"):
        client.predict("../../etc", api_name="/run_status")


def test_the_recipes_fill_the_form_from_the_config_and_the_preset():
    from core.train import PRESETS
    from ui.train import RECIPE_FIELDS, recipe_values

    stable = dict(zip(RECIPE_FIELDS, recipe_values("studio default (stable)"), strict=True))
    paper = dict(zip(RECIPE_FIELDS, recipe_values("paper (Liu et al. 2025, exactly)"), strict=True))
    assert stable["kd_scaling"] == "nontarget" and stable["kd_warmup"] == 10 and stable["t_nontarget"] == 0.4
    assert paper == {f: PRESETS["paper"][f] for f in RECIPE_FIELDS}
    assert {f for f in RECIPE_FIELDS if stable[f] != paper[f]} == {"kd_scaling", "kd_warmup"}


PAPER = "paper (Liu et al. 2025, exactly)"


@pytest.mark.parametrize(
    ("recipe", "started_from", "preset"),
    [(None, None, None), (None, "quick", "quick"), (PAPER, None, "paper"), (PAPER, "quick", "paper")],
)
def test_the_form_records_the_preset_its_values_came_from_as_the_cli_does(recipe, started_from, preset):
    """The quick button's run is the CLI's `--preset quick` run, preset name and every setting alike; before,
    the studio recorded no preset for it. The recipe switch names its own preset, and wins."""
    from dataclasses import asdict

    from core import config
    from core import settings as settings_io
    from core.train import parse_args
    from ui.train import FORM_FIELD, form_settings

    quick = {FORM_FIELD.get(k, k): v for k, v in config.QUICK.items()} if started_from else {}
    form = form_values(started_from=started_from, **quick) | ({"recipe": recipe} if recipe else {})
    settings, _ = form_settings(form)
    assert settings.get("preset") == preset
    if preset == "quick":
        cli = settings_io.from_args(parse_args(["--preset", "quick", "--device", "cpu"])).resolved()
        assert asdict(settings_io.from_settings(settings).resolved()) == asdict(cli)


@pytest.mark.parametrize(
    ("status", "shown", "refreshed"),
    [
        (None, None, False),  # nothing watched
        ({"run": "a", "status": "running"}, None, False),  # its speed is counted once it ends
        ({"run": "a", "status": "done"}, ["a", "running"], True),  # it has just ended
        ({"run": "a", "status": "stopped"}, None, True),  # a page opened on an ended run
        ({"run": "a", "status": "failed"}, ["a", "running"], True),
        ({"run": "a", "status": "done"}, ["a", "done"], False),  # counted already
        ({"run": "b", "status": "done"}, ["a", "done"], True),  # another run picked
    ],
)
def test_the_estimate_is_made_again_when_the_watched_run_ends(tmp_path, status, shown, refreshed):
    from core.jobs import JobManager
    from ui.context import Studio
    from ui.train import estimate_after_run

    jobs = JobManager(tmp_path / "runs", poll_s=0.2)
    ctx = Studio(data_root=tmp_path, runs_dir=tmp_path / "runs", jobs=jobs)
    try:
        text, quick, now = estimate_after_run(ctx, form_values(), status, shown)
        assert now == ([status["run"], status["status"]] if status else None)
        assert isinstance(text, str) == refreshed and ("visible" in quick) == refreshed  # else gr.skip()s
        if refreshed:
            assert text.startswith("Estimated time:"), text
    finally:
        jobs.close()


@pytest.mark.parametrize(("seconds", "text"), [(40.4, "40 s"), (59.6, "1 min"), (725, "12 min"), (7260, "2 h 1 min")])
def test_time_left_reads_as_people_say_it(seconds, text):
    from ui.watch import duration

    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("method", "epochs", "warmup", "note"),
    [
        ("tss-kd", 5, 10, "the KD warm-up (10 epochs) is longer than the run (5), so the KD weight reaches only 50%"),
        ("kd", 2, 8, "reaches only 25% of its value"),
        ("tss-kd", 10, 10, ""),  # full weight in the last epoch
        ("tss-kd", 5, 0, ""),  # no warm-up (the quick preset and the sweep)
        ("ce", 5, 10, ""),  # no KD term
        ("ps-kd", 5, 10, ""),  # PS-KD has no warm-up
    ],
)
def test_a_kd_warmup_the_run_never_finishes_is_pointed_out(method, epochs, warmup, note):
    from core.config import TrainConfig
    from ui.train import warmup_note

    text = warmup_note(TrainConfig(method=method, epochs=epochs, kd_warmup=warmup).resolved())
    assert (note in text and text.startswith(" Note:")) if note else text == ""


def form_values(**changed) -> dict:
    """The Train form's values by field name, as a new page shows them, with `changed` applied."""
    from dataclasses import asdict

    from core.config import TrainConfig

    cfg = asdict(TrainConfig().resolved())
    values = {k: cfg[k] for k in ("method", "t_target", "t_nontarget", "kd_weight", "kd_scaling", "kd_warmup")}
    values |= {k: cfg[k] for k in ("rga", "arch", "epochs", "batch_size", "lr", "optimizer", "seed", "ps_alpha")}
    values |= dict(source="demo data", data_path="", image_size=32, demo_images=5000, processes=1, device="cpu")
    values |= dict(name="", stop_on_collapse=False, recipe="studio default (stable)")
    return values | changed


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        ({"source": "MedMNIST .npz", "data_path": "m.npz"}, "on cpu for 37 training images an epoch"),
        ({"source": "MedMNIST .npz"}, "Estimated time: once the data path is given."),
        ({"source": "MedMNIST .npz", "data_path": "../outside.npz"}, "not known: '../outside.npz' is outside the data"),
        ({"source": "image folder or CSV", "data_path": "nothing"}, "not known: 'nothing' does not exist in the data"),
    ],
)
def test_the_train_form_counts_its_data_before_start_and_names_a_wrong_path(tmp_path, changed, expected):
    from helpers import write_medmnist

    from core.jobs import JobManager
    from ui.context import Studio
    from ui.train import estimate_text

    (tmp_path / "data").mkdir()
    write_medmnist(tmp_path / "data" / "m.npz", n=(37, 5, 5))
    write_medmnist(tmp_path / "outside.npz")
    jobs = JobManager(tmp_path / "runs", poll_s=0.2)
    ctx = Studio(data_root=tmp_path / "data", runs_dir=tmp_path / "runs", jobs=jobs)
    try:
        text, quick = estimate_text(ctx, form_values(**changed))
        assert expected in text and quick["visible"] is False
    finally:
        jobs.close()


@pytest.mark.parametrize(
    "emptied,label",
    [
        ("demo_images", "Demo training images"),
        ("processes", "GPUs"),
        ("epochs", "Epochs"),  # it fell back to 100 epochs, unseen
        ("lr", "Learning rate"),
        ("image_size", "Image size (px)"),
        ("batch_size", "Batch size"),
        ("seed", "Seed"),
        ("sweep epochs", "Epochs per run"),
        ("sweep size", "Image size"),
        ("sweep warmup", "KD warm-up"),
        ("sweep images", "Training images per run"),
        ("sweep batch", "Batch size"),
    ],
)
def test_a_whole_number_field_left_empty_is_named_not_a_bare_error(tmp_path, emptied, label):
    """A cleared number field arrives as None; int(None) stopped Start with Gradio's bare "Error"."""
    import gradio as gr

    from core.errors import StudioError
    from core.jobs import JobManager
    from ui.context import Studio
    from ui.temperatures import make_sweep
    from ui.train import form_settings

    jobs = JobManager(tmp_path / "runs", poll_s=0.2)
    ctx = Studio(data_root=tmp_path, runs_dir=tmp_path / "runs", jobs=jobs)
    sweep = dict(epochs=1, device="cpu", image_size=16, scaling="nontarget", warmup=0, images=64, batch=32)
    try:
        with pytest.raises((StudioError, gr.Error), match=f"{re.escape(label)}.*: give a number"):
            if emptied.startswith("sweep "):
                key = {"size": "image_size"}.get(emptied.split()[1], emptied.split()[1])
                make_sweep(ctx)("2", "0.4", *(sweep | {key: None}).values())
            else:
                form_settings(form_values(**{emptied: None}))
        assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    finally:
        jobs.close()


@pytest.mark.parametrize("source", ["MedMNIST .npz", "image folder or CSV"])
def test_the_train_forms_start_without_a_data_path_says_so_and_makes_no_run(tmp_path, source):
    """The form as a user leaves it: a source picked, its path empty. Start once queued a run whose trainer
    then failed ("the medmnist dataset needs --data-path"), leaving a failed run behind."""
    from core.errors import StudioError
    from core.jobs import JobManager
    from ui.context import Studio
    from ui.train import form_settings, start_run

    (tmp_path / "data").mkdir()
    jobs = JobManager(tmp_path / "runs", poll_s=0.2)
    ctx = Studio(data_root=tmp_path / "data", runs_dir=tmp_path / "runs", jobs=jobs)
    try:
        settings, processes = form_settings(form_values(source=source, data_path=""))
        with pytest.raises(StudioError, match="data needs its path, .*the path inside the data folder"):
            start_run(ctx, settings, processes)
        assert not list((tmp_path / "runs").glob("*"))
    finally:
        jobs.close()


def test_the_demo_model_is_the_one_the_command_line_names_and_its_absence_is_said(tmp_path, monkeypatch):
    import core.model
    from core.errors import StudioError
    from core.jobs import JobManager
    from ui.context import Studio

    jobs = JobManager(tmp_path / "runs", poll_s=0.2)
    ctx = Studio(data_root=tmp_path, runs_dir=tmp_path / "runs", jobs=jobs)
    try:
        for choice in (None, "", "demo"):
            assert ctx.model_path(choice) == core.model.DEMO_MODEL
        monkeypatch.setattr(core.model, "DEMO_MODEL", tmp_path / "gone.safetensors")
        with pytest.raises(StudioError, match="the demo model is missing from assets/"):
            ctx.predictor("demo")
    finally:
        jobs.close()


@pytest.mark.parametrize("status", ["running", "stopped", "failed"])
def test_diagnose_offers_and_takes_only_finished_runs(tiny_run, tmp_path, status):
    """A run still training (or stopped, or failed) has a model, but uncalibrated and without its
    out-of-distribution check: Diagnose does not offer it, refuses it by id with the reason, and takes it
    once the run is done."""
    import shutil

    from core import runs
    from core.errors import StudioError
    from core.jobs import JobManager
    from ui.context import Studio

    run = Path(shutil.copytree(tiny_run, tmp_path / "runs" / tiny_run.name))
    runs.write_json(run / "status.json", {**runs.Run(run).status(), "status": status, "epoch": 1, "epochs": 2})
    jobs = JobManager(tmp_path / "runs", poll_s=0.2)
    ctx = Studio(data_root=tmp_path, runs_dir=tmp_path / "runs", jobs=jobs)
    try:
        assert [value for _, value in ctx.model_choices()] == ["demo"]
        with pytest.raises(StudioError, match=rf"has not finished \({status}, 1 of 2 epochs trained\).*resume this"):
            ctx.predictor(run.name)
        runs.write_json(run / "status.json", {**runs.Run(run).status(), "status": "done"})
        assert [value for _, value in ctx.model_choices()] == ["demo", run.name]
        assert ctx.predictor(run.name).card()["unfinished"] is None
    finally:
        jobs.close()


def test_the_models_folder_lists_its_model_files_with_what_they_are_and_a_new_version_is_loaded(tiny_run, tmp_path):
    """Model files in --models-dir are offered after the runs, labelled from their JSON (a model that did not
    learn says so before it is picked; a JSON that cannot be read says that), and a file replaced under the same
    name is loaded again, not served from the cache."""
    import json
    import os

    from core.export import export_run
    from core.jobs import JobManager
    from ui.context import Studio

    models = tmp_path / "models"
    models.mkdir()
    export_run(tiny_run, models)
    assert {f.name for f in models.iterdir()} == {
        f"{tiny_run.name}{s}" for s in (".safetensors", ".json", ".ood.safetensors", "-config.json")
    }
    (models / ".hidden.safetensors").write_bytes(b"x")
    (models / "sub").mkdir()
    (models / "sub" / "inner.safetensors").write_bytes(b"x")  # the folder itself only
    (models / "broken.safetensors").write_bytes(b"x")
    (models / "broken.json").write_text("{not json")
    (models / "listed.safetensors").write_bytes(b"x")
    (models / "listed.json").write_text('[{"metrics": 1}]')  # JSON, but not a model's description
    meta = json.loads((models / f"{tiny_run.name}.json").read_text())
    unlearned = {**meta, "warnings": [{"kind": "collapse", "epoch": 1, "message": "m"}], "metrics": {"val_auc": 0.5}}
    (models / "flat.json").write_text(json.dumps(unlearned))
    os.link(models / f"{tiny_run.name}.safetensors", models / "flat.safetensors")
    jobs = JobManager(tmp_path / "runs", poll_s=0.2)
    ctx = Studio(data_root=tmp_path, runs_dir=tmp_path / "runs", jobs=jobs, models_dir=models)
    try:
        choices = ctx.model_choices()
        assert [value for _, value in choices] == [
            "demo",
            "broken.safetensors",
            "flat.safetensors",
            "listed.safetensors",
            f"{tiny_run.name}.safetensors",
        ]
        labels = [label for label, _ in choices]
        assert labels[1] == "broken (model file; its JSON description cannot be read)"
        assert labels[2] == "flat (model file, tss-kd, val AUC 0.500, DID NOT LEARN)"
        assert labels[3] == "listed (model file; its JSON description cannot be read)"
        assert labels[4].startswith(f"{tiny_run.name} (model file, tss-kd, val AUC ")
        first = ctx.predictor(f"{tiny_run.name}.safetensors")
        assert ctx.predictor(f"{tiny_run.name}.safetensors") is first  # loaded once
        path = models / f"{tiny_run.name}.json"
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a new version
        assert ctx.predictor(f"{tiny_run.name}.safetensors") is not first
        with pytest.raises(Exception, match="broken.json: not a valid model description"):
            ctx.predictor("broken.safetensors")
        no_folder = Studio(data_root=tmp_path, runs_dir=tmp_path / "runs", jobs=jobs)
        assert [value for _, value in no_folder.model_choices()] == ["demo"]
        with pytest.raises(Exception, match="this studio has no models folder"):
            no_folder.predictor("flat.safetensors")
    finally:
        jobs.close()


def test_comparing_no_run_or_only_deleted_ones_draws_no_empty_panels(tmp_path):
    from core import runs
    from core.jobs import JobManager
    from ui.context import Studio
    from ui.runs import compare

    jobs = JobManager(tmp_path / "runs", poll_s=0.2)
    ctx = Studio(data_root=tmp_path, runs_dir=tmp_path / "runs", jobs=jobs)
    try:
        run = runs.Run.create(tmp_path / "runs", "r", {"method": "ce"})
        runs.append_metrics(run.path, {"epoch": 1, "train_loss": 1.0, "val_acc": 0.5, "val_auc": 0.6})
        assert compare(ctx, []) is None and compare(ctx, ["gone-20260101-000000", "../x"]) is None
        assert len(compare(ctx, [run.name]).data) == 3  # one trace per panel
    finally:
        jobs.close()


def test_a_users_mistake_is_one_log_line_and_a_message_never_a_traceback(caplog):
    import gradio as gr

    from core.errors import StudioError
    from ui.context import user_error

    @user_error
    def handler(x):
        raise StudioError(f"{x}: no such file.")

    with caplog.at_level("INFO", logger="ui"), pytest.raises(gr.Error) as e:
        handler("scan.png")
    assert e.value.message == "scan.png: no such file." and e.value.print_exception is False
    assert [r.getMessage() for r in caplog.records] == ["handler: scan.png: no such file."]


def test_the_runs_tab_says_how_to_start_while_there_are_no_runs_and_acts_only_on_a_picked_run(tmp_path):
    from core import runs
    from core.jobs import JobManager
    from ui.context import Studio
    from ui.runs import NO_RUNS, follow, run_actions

    jobs = JobManager(tmp_path / "runs", poll_s=0.2)
    ctx = Studio(data_root=tmp_path, runs_dir=tmp_path / "runs", jobs=jobs)
    try:
        rows, _, _, last, hint = follow(ctx, None, [], None)
        assert rows == [] and hint == NO_RUNS and "Train" in hint
        assert all(update["interactive"] is False for update in run_actions(None))
        run = runs.Run.create(tmp_path / "runs", "first", {"method": "tss-kd"})
        run.set_status("done")
        rows, _, one, _, hint = follow(ctx, last, [], None)
        assert len(rows) == 1 and hint == "" and one["choices"] == [run.name]
        assert all(update["interactive"] is True for update in run_actions(run.name))
        # the model pickers say which models did not learn, before one is picked
        run.write_model_meta({"metrics": {}})
        (run.path / runs.MODEL).write_bytes(b"")
        run.add_warning({"kind": "collapse", "epoch": 2, "message": "collapsed"})
        assert ctx.model_choices()[-1] == (f"{run.name} (tss-kd, DID NOT LEARN)", run.name)
    finally:
        jobs.close()


def test_a_poll_never_puts_back_the_pick_it_read_when_a_start_has_set_another_since(tmp_path):
    """A picker poll reads the value the page had when its tick began; a Start returning meanwhile sets the
    new run. The poll must send only the choices then (sending back what it read undid the Start: the
    sweep picker went blank and its progress never came), and clear a pick only when that run is gone."""
    from core import runs
    from core.jobs import JobManager
    from ui.context import Studio, models_update
    from ui.runs import follow
    from ui.temperatures import sweep_choices
    from ui.watch import follow_runs

    root = tmp_path / "runs"
    jobs = JobManager(root, poll_s=0.2)
    ctx = Studio(data_root=tmp_path, runs_dir=root, jobs=jobs)
    A, B = "sweep20261127-100000", "sweep20261127-100001"  # the sweep picked before, and the one queued
    try:
        old = runs.Run.create(root, f"{A}-T2-t0.4", {"method": "tss-kd"})
        old.set_status("done")
        known_runs, known_sweeps = follow_runs(ctx, None, None)[1], sweep_choices(ctx, None, None)[1]
        known_models = models_update(ctx, None, ["demo"])[-1]
        new = runs.Run.create(root, f"{B}-T2-t0.4", {"method": "tss-kd"})  # the Start, while the tick ran
        new.set_status("done")
        new.write_model_meta({"metrics": {}})
        (new.path / runs.MODEL).write_bytes(b"")
        for read in (None, old.name):  # what the tick read: nothing picked, or the run picked before
            picker, _ = follow_runs(ctx, read, known_runs)
            assert new.name in picker["choices"] and "value" not in picker
            picker, _ = sweep_choices(ctx, read and A, known_sweeps)
            assert sorted(picker["choices"]) == [A, B] and "value" not in picker
            table, chosen, one, _, hint = follow(ctx, None, [read] if read else [], read)
            assert hint == ""  # runs exist: no hint
            assert "value" not in chosen and "value" not in one and new.name in one["choices"]
        picker, _ = models_update(ctx, known_models, ["demo"])
        assert "value" not in picker and new.name in [v for _, v in picker["choices"]]
        old.delete()  # a picked run that was deleted is let go, everywhere
        assert follow_runs(ctx, old.name, None)[0]["value"] is None
        assert sweep_choices(ctx, A, None)[0]["value"] is None
        _, chosen, one, _, _ = follow(ctx, None, [old.name, new.name], old.name)
        assert chosen["value"] == [new.name] and one["value"] is None
        assert models_update(ctx, None, [old.name])[0]["value"] == "demo"
    finally:
        jobs.close()


DEVICES = [("CPU (2 cores)", "cpu")]


@pytest.fixture
def form_ctx(tmp_path):
    """A studio context on `tmp_path/data` and `tmp_path/runs`, for the Train form's functions."""
    from core.jobs import JobManager
    from ui.context import Studio

    (tmp_path / "data").mkdir()
    jobs = JobManager(tmp_path / "runs", poll_s=0.2)
    yield Studio(data_root=(tmp_path / "data").resolve(), runs_dir=(tmp_path / "runs").resolve(), jobs=jobs)
    jobs.close()


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"preset": "quick"},
        {"preset": "paper", "epochs": 3},
        {"method": "ce", "lr": 0.05, "seed": 7},
        {"method": "ps-kd", "ps_alpha": 0.5, "rga": False},
        {"method": "tss-kd", "t_target": 2.0, "t_nontarget": 1.0, "kd_warmup": 3, "stop_on_collapse": True},
        {"dataset": "medmnist", "data_path": "m.npz", "image_size": 28},
        {"dataset": "folder", "data_path": "scans", "batch_size": 16},
        {"synthetic_train": 300, "image_size": 48, "optimizer": "adam", "lr": 0.002},
    ],
    ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "defaults",
)
def test_use_its_settings_fills_the_form_with_a_run_that_starts_the_same_run_again(form_ctx, tmp_path, settings):
    """The Train tab's "Use its settings": the form it fills, started, is the watched run again (its name
    aside), whichever way that run was started, so that a user changes one thing and compares."""
    from helpers import class_folders, write_medmnist

    from core.config import to_record
    from core.settings import from_settings
    from ui.train import confined, form_from_run, form_settings

    ctx = form_ctx
    write_medmnist(tmp_path / "data" / "m.npz")
    class_folders(tmp_path / "data" / "scans", {"a": 6, "b": 6})

    def recorded(given: dict) -> dict:  # as the job manager records a run started with these settings
        cfg = confined(ctx, from_settings(given, base=TrainConfig(runs_dir=str(ctx.runs_dir)))).resolved()
        return to_record(cfg)

    first = recorded({**settings, "device": "cpu"})
    run = runs.Run.create(ctx.runs_dir, first["name"], first)
    values, missed = form_from_run(ctx, run.name, DEVICES)
    assert missed == []
    again, _ = form_settings(values)
    assert {**recorded(again), "name": None} == {**first, "name": None}


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"momentum": 0.8}, "momentum 0.8 (the form's run: 0.9)"),
        ({"gamma_min": 0.3}, "gamma_min 0.3 (the form's run: 0.5)"),
        ({"synthetic_val": 50}, "synthetic_val 50"),
        ({"device": "cuda:3"}, "its device (cuda:3), which this studio does not offer"),
        ({"dataset": "medmnist", "data_path": "{outside}"}, "outside this studio's data folder"),
        ({"dataset": "medmnist", "data_path": "{outside}", "momentum": 0.8}, "momentum 0.8"),  # both said
        ({"device": "cuda:3", "weight_decay": 0.0}, "weight_decay 0.0 (the form's run: 0.0001)"),
    ],
)
def test_use_its_settings_says_what_of_the_run_the_form_cannot_hold(form_ctx, tmp_path, settings, said):
    """Settings given on the command line or through the API that the form has no field for: a run started
    from the form would not repeat them, and the user is told which, not left to find out from the results."""
    from helpers import write_medmnist

    from core.config import to_record
    from core.settings import from_settings
    from ui.train import form_from_run

    write_medmnist(tmp_path / "outside.npz")
    outside = str(tmp_path / "outside.npz")
    given = {k: v.format(outside=outside) if isinstance(v, str) else v for k, v in settings.items()}
    record = to_record(from_settings({"device": "cpu", **given}, base=TrainConfig()).resolved())
    run = runs.Run.create(form_ctx.runs_dir, "r", record)
    values, missed = form_from_run(form_ctx, run.name, DEVICES)
    assert any(said in m for m in missed), missed
    assert values["device"] == "cpu"  # a device the studio has, for a run that can start


def test_use_its_settings_of_no_run_or_an_unreadable_one_says_so(form_ctx):
    from ui.train import form_from_run

    with pytest.raises(StudioError, match="choose a run whose settings to take"):
        form_from_run(form_ctx, None, DEVICES)
    broken = runs.Run.create(form_ctx.runs_dir, "broken", {"method": "ce"})
    (broken.path / "config.json").write_text("{not json")
    with pytest.raises(StudioError, match="has no settings to take"):
        form_from_run(form_ctx, broken.name, DEVICES)
    partial = runs.Run.create(form_ctx.runs_dir, "partial", {"method": "ce"})  # a config.json cut short
    incomplete = r"settings are incomplete or no longer valid: Image size \(px\): give a number"
    with pytest.raises(StudioError, match=incomplete):
        form_from_run(form_ctx, partial.name, DEVICES)
