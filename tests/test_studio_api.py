"""The studio through its API, as gradio_client sees it: every API name, and a training followed to done."""

import json
import time

import numpy as np
import pytest
from gradio_client import Client, handle_file
from helpers import IDENTIFIERS, write_dicom
from PIL import Image

from core.synthetic import render


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
    write_dicom(d / "IM0001", images[1, 0].numpy().astype(np.uint16) * 16, window=(2000, 4000))
    return d


def test_the_api_lists_exactly_the_documented_names(studio):
    client, _, _ = studio
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/diagnose", "/augment_preview", "/start_training", "/run_status"} <= names


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "eigencam", "layercam"])  # scorecam: test_evaluate
def test_diagnose_png_and_extensionless_dicom(studio, scans, method):
    client, _, _ = studio
    probs, overlay, slider, table, gallery, details = client.predict(
        [handle_file(str(scans / "scan.png")), handle_file(str(scans / "IM0001"))],
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
    assert len(table["data"]) == 2 and len(gallery) == 2
    read_as = [row[5] for row in table["data"]]
    assert all(row[3].startswith("calibrated") for row in table["data"])  # the demo model carries a calibration
    assert read_as[0].startswith("PNG") and read_as[1].startswith("DICOM, modality CT, window 2000/4000")
    text = json.dumps(details) + json.dumps(table)
    for value in IDENTIFIERS.values():
        assert value not in text


def test_diagnose_a_bad_file_is_a_clear_error_and_the_server_keeps_serving(studio, scans, tmp_path):
    client, _, _ = studio
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"definitely not a png")
    with pytest.raises(Exception, match="broken.png"):
        client.predict([handle_file(str(bad))], "demo", "gradcam", "predicted class", 0.5, api_name="/diagnose")
    probs, *_ = client.predict(
        [handle_file(str(scans / "scan.png"))], "demo", "gradcam", "predicted class", 0.5, api_name="/diagnose"
    )
    assert probs["label"] in ("normal", "nodule", "mass", "ring")


def image_path(item: dict) -> str:
    """A gallery item's file, however this gradio_client version spells it."""
    image = item["image"]
    return image if isinstance(image, str) else image["path"]


def test_augment_preview_matches_its_parameters_and_seed(studio):
    from core.augment import RegionalGamma

    client, _, _ = studio
    args = dict(
        upload=None,
        example="demo-nodule.png",
        demo_index=0,
        mode="random",
        gamma_min=0.5,
        gamma_max=2.0,
        max_side=0.71,
        seed=7,
        count=4,
        gamma=2.0,
        top=0.25,
        left=0.25,
        bottom=0.75,
        right=0.75,
        view_size=64,
    )
    samples, views = client.predict(*args.values(), api_name="/augment_preview")
    again, _ = client.predict(*args.values(), api_name="/augment_preview")
    assert [s["caption"] for s in samples] == [s["caption"] for s in again]
    first = np.asarray(Image.open(image_path(samples[0])))
    assert np.array_equal(first, np.asarray(Image.open(image_path(again[0]))))
    # the caption states exactly what was applied: recompute it from the source
    source = np.asarray(Image.open("assets/examples/demo-nodule.png"), dtype=np.float64) / 255
    p = RegionalGamma(gamma_range=(0.5, 2.0), max_side=0.71).sample(
        4, *source.shape, generator=__import__("torch").Generator().manual_seed(7)
    )
    y0, x0, y1, x1 = (int(v) for v in p.boxes[0])
    assert samples[0]["caption"] == f"gamma {float(p.gamma[0]):.3f}, box {(y0, x0, y1, x1)}"
    want = source.copy()
    want[y0:y1, x0:x1] **= float(p.gamma[0])
    assert np.abs(first.astype(float) - np.round(want * 255)).max() <= 1
    assert len(views) == 2 and views[0]["caption"].startswith("view 1 (teacher)")
    explicit, _ = client.predict(*{**args, "mode": "explicit"}.values(), api_name="/augment_preview")
    assert explicit[0]["caption"] == "gamma 2.000, box (32, 32, 96, 96)"


def test_start_training_follows_a_tiny_run_to_done(studio):
    client, ctx, _ = studio
    run_id = client.predict(
        "demo data",
        "",
        16,
        "tss-kd",
        4.0,
        0.4,
        1.0,
        True,
        "resnet18",
        1,
        16,
        0.01,
        "sgd",
        "cpu",
        0,
        "api-tiny",
        256,
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
    assert status["latest"]["logit_spread"] > 0 and status["latest"]["kd_weight"] == pytest.approx(0.1)
    # one epoch of 256 images learns nothing yet: the finished run says so instead of looking fine
    assert [w["kind"] for w in status["warnings"]] in ([], ["chance"])
    cfg = json.loads((ctx.jobs.find(run_id) / "config.json").read_text())
    assert (cfg["kd_scaling"], cfg["kd_warmup"], cfg["preset"]) == ("nontarget", 10, None)


@pytest.mark.parametrize(
    ("recipe", "scaling", "warmup", "preset"),
    [("paper (Liu et al. 2025, exactly)", "paper", 0, "paper"), ("studio default (stable)", "nontarget", 3, None)],
)
def test_start_training_records_the_recipe_scaling_and_warm_up(studio, recipe, scaling, warmup, preset):
    client, ctx, _ = studio
    args = ["demo data", "", 16, "tss-kd", 4.0, 0.4, 1.0, True, "resnet18", 1, 16, 0.01, "sgd", "cpu", 0, "recipe"]
    run_id = client.predict(*args, 64, 1, scaling, warmup, True, recipe, api_name="/start_training")
    cfg = json.loads((ctx.jobs.find(run_id) / "config.json").read_text())
    assert (cfg["kd_scaling"], cfg["kd_warmup"], cfg["preset"], cfg["stop_on_collapse"]) == (
        scaling,
        warmup,
        preset,
        True,
    )
    ctx.jobs.stop(run_id)


def test_start_training_refuses_an_unknown_scaling_and_makes_no_run(studio):
    client, ctx, _ = studio
    before = set(p.name for p in ctx.runs_dir.iterdir())
    args = ["demo data", "", 16, "tss-kd", 4.0, 0.4, 1.0, True, "resnet18", 1, 16, 0.01, "sgd", "cpu", 0, ""]
    with pytest.raises(Exception, match="hinton is not in the list of choices"):
        client.predict(*args, 64, 1, "hinton", 0, False, "studio default (stable)", api_name="/start_training")
    assert set(p.name for p in ctx.runs_dir.iterdir()) == before


@pytest.mark.parametrize(
    "path,message",
    [
        ("../secret", "outside the data folder"),
        ("/etc/passwd", "not an absolute path"),
        ("missing.npz", "does not exist"),
    ],
)
def test_start_training_refuses_paths_outside_the_data_root(studio, path, message):
    client, ctx, _ = studio
    before = set(p.name for p in ctx.runs_dir.iterdir()) if ctx.runs_dir.exists() else set()
    with pytest.raises(Exception, match=message):
        client.predict(
            "MedMNIST .npz",
            path,
            28,
            "tss-kd",
            4.0,
            0.4,
            1.0,
            True,
            "resnet18",
            1,
            16,
            0.01,
            "sgd",
            "cpu",
            0,
            "",
            api_name="/start_training",
        )
    assert set(p.name for p in ctx.runs_dir.iterdir()) == before


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


@pytest.mark.parametrize(("seconds", "text"), [(40.4, "40 s"), (59.6, "1 min"), (725, "12 min"), (7260, "2 h 1 min")])
def test_time_left_reads_as_people_say_it(seconds, text):
    from ui.train import duration

    assert duration(seconds) == text
