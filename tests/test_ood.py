"""The out-of-distribution guard: fitted on a run's training split, stored beside the model, and answering
for every scan whether it is like the training data; the demo model flags scans of other kinds."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import ood
from core.errors import StudioError
from core.infer import Predictor, redraw, scan_hw
from core.trust import COLOUR_MESSAGE, OOD_MESSAGE

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo-model.safetensors"
EXAMPLES = sorted((DEMO.parent / "examples").glob("*.png"))


def gaussian_features(n: int, shift: float = 0.0, seed: int = 0) -> tuple[dict, torch.Tensor]:
    """Every layer's features for three well-separated classes; `shift` moves every point off the data."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = {
        "penultimate": torch.eye(3, 16) * 6,
        "mid": torch.eye(3, 8) * 4,
        "early": torch.eye(3, 12) * 5,
        "input": torch.eye(3, 17) * 5,
    }
    assert set(centres) == set(ood.LAYERS)
    feats = {k: (c[labels] + torch.randn(n, c.shape[1], generator=g) + shift).double() for k, c in centres.items()}
    return feats, labels


def test_the_threshold_flags_about_one_in_a_hundred_like_the_data_and_every_far_point():
    train, labels = gaussian_features(3000)
    val, _ = gaussian_features(2000, seed=1)
    det = ood.fit(train, labels, val)
    fresh, _ = gaussian_features(4000, seed=2)
    rate = ood.flagged(det, fresh)
    assert 0.003 < rate < 0.03, rate  # the conformal rank of the validation scores: 1 in 100
    far, _ = gaussian_features(50, shift=4.0, seed=3)
    assert ood.flagged(det, far) == 1.0


@pytest.mark.parametrize(("n", "rank"), [(1, 1), (50, 50), (98, 98), (99, 99), (100, 100), (200, 199), (1000, 991)])
def test_the_threshold_is_the_conformal_rank_of_the_validation_scores(n, rank):
    scores = torch.randperm(n, generator=torch.Generator().manual_seed(n)).double() + 1  # 1..n in any order
    assert ood.conformal_threshold(scores) == rank  # the ceil((n + 1) 0.99)-th smallest, at most the largest


def test_a_new_score_like_the_validation_ones_passes_the_threshold_one_time_in_a_hundred():
    """The promise the threshold keeps whatever the validation split's size: averaged over validation splits
    of a quick run's 200 scans, 1 in 100 new scans like them is flagged (uniform scores: the threshold's
    complement is the rate). The plain 99th percentile gives 1.5 in 100 here."""
    g = torch.Generator().manual_seed(0)
    rates = [1 - ood.conformal_threshold(torch.rand(200, generator=g, dtype=torch.float64)) for _ in range(4000)]
    assert 0.009 < float(np.mean(rates)) < 0.011, np.mean(rates)  # 2 / 201 = 0.995%


@pytest.mark.parametrize("layer", ood.LAYERS)
def test_a_scan_odd_in_any_one_layer_alone_is_flagged(layer):
    train, labels = gaussian_features(2000)
    val, _ = gaussian_features(1000, seed=1)
    det = ood.fit(train, labels, val)
    odd, _ = gaussian_features(20, seed=4)
    odd[layer] = odd[layer] * 5  # unlike the data in this layer only
    assert ood.flagged(det, odd) == 1.0


def _demo_images(n: int, size: int, seed: int) -> torch.Tensor:
    from core.synthetic import render

    return render(n, size=size, seed=seed)[0]


NOISE = ("noise-64.png", "noise-256.png", "noise-gaussian-128.png")
BLANK = ("blank-black.png", "blank-grey.png", "blank-white.png")


def _scans_at(size: int) -> dict[str, torch.Tensor]:
    """The noise, blank and one photograph of `_outlier_arrays` as a model of `size` px sees them (resized
    as Diagnose resizes), uint8 (1, 1, S, S), in that order."""
    from core.imageio import Scan, to_model_array

    arrays = _outlier_arrays()
    return {
        k: torch.from_numpy(to_model_array(Scan(arrays[k], {}), size=size, channels=1)[None])
        for k in (*NOISE, *BLANK, "photo-camera.png")
    }


def test_the_input_statistics_tell_noise_and_blank_scans_from_scans_of_any_kind():
    from core.augment import eval_transform

    x = eval_transform(torch.cat([_demo_images(4, 32, 0), *_scans_at(32).values()]))
    stats = ood.input_statistics(x)
    assert stats.shape == (len(x), 2 * 3 + len(ood.INPUT_QUANTILES) + 4) and torch.isfinite(stats).all()
    neighbours = stats[:, -4:]
    assert (neighbours[:4] > 0.6).all()  # demo scans: neighbouring pixels alike
    assert (neighbours[4:7].abs() < 0.45).all()  # noise: they are not, even resized (which smooths it)
    assert (neighbours[7:10] == 0).all() and (stats[7:10, 3:6] < 1e-5).all()  # blank: no spread, no NaN
    assert (neighbours[10] > 0.8).all()  # a photograph: alike again
    alone = ood.input_statistics(x[:1])  # each scan's statistics are its own, whatever else is in the batch
    assert torch.allclose(alone, stats[:1], atol=1e-6)


@pytest.mark.parametrize("size", [16, 32])
def test_the_input_statistics_alone_flag_noise_and_blank_scans_and_pass_the_data(size):
    """The layer that needs no trained model: fitted on demo scans, it passes fresh demo scans at about the
    rate the threshold allows and flags noise and blank scans, whatever model it sits beside."""
    from core.augment import eval_transform
    from core.synthetic import render

    def feats(images: torch.Tensor) -> dict:
        x = eval_transform(images)
        return {"penultimate": torch.zeros(len(x), 1).double(), "input": ood.input_statistics(x).double()}

    train, train_labels, _ = render(1000, size=size, seed=0)
    val, fresh = _demo_images(500, size, 1), _demo_images(500, size, 2)
    det = ood.fit(feats(train), torch.as_tensor(train_labels), feats(val), layers=("input",))
    assert ood.flagged(det, feats(fresh)) <= 0.04
    for name, scan in _scans_at(size).items():
        if not name.startswith("photo"):  # a photograph's statistics can pass; the model's layers flag it
            assert ood.flagged(det, feats(scan)) == 1.0, name


def test_a_weak_models_check_still_flags_noise_and_blank_scans(tiny_run, outliers):
    """A model trained for two epochs on 64 images has features too spread to set noise apart; the input
    statistics do not depend on them (the model's three layers alone scored such scans below 1)."""
    predictor = Predictor(tiny_run)
    assert predictor.detector.layers == ood.LAYERS
    for name in (*NOISE, *BLANK):
        r = predictor.predict(outliers[name])
        assert r["in_distribution"] is False and r["ood_score"] > 1, (name, r["ood_score"])


def test_a_class_missing_from_the_training_split_does_not_break_the_fit():
    train, labels = gaussian_features(300)
    keep = labels != 2
    det = ood.fit({k: v[keep] for k, v in train.items()}, labels[keep], gaussian_features(100, seed=1)[0])
    assert det.means["penultimate"].shape == (2, 16) and np.isfinite(det.threshold)


def test_too_few_images_is_a_clear_error():
    train, labels = gaussian_features(1)
    with pytest.raises(StudioError, match="needs training and validation images"):
        ood.fit(train, labels, gaussian_features(5)[0])


def test_a_finished_run_carries_its_check_as_safetensors_and_json(tiny_run):
    meta = json.loads((tiny_run / "model.json").read_text())
    rec = meta["ood"]
    assert rec["file"] == "model.ood.safetensors" and (tiny_run / rec["file"]).is_file()
    assert rec["threshold_from"] == "val" and rec["quantile"] == 0.99 and rec["threshold"] > 0
    assert rec["threshold_rule"] == "conformal"
    assert rec["fitted_on"] == {"split": "train", "images": 64}
    assert 0 <= rec["flagged_val"] <= 0.05 and rec["flagged_test"] is not None
    head = (tiny_run / rec["file"]).read_bytes()[:8]
    assert not head.startswith(b"\x80")  # a safetensors header length, never a pickle opcode
    det = ood.load(tiny_run, meta)
    assert det.threshold == pytest.approx(rec["threshold"])


def test_every_answer_says_whether_the_scan_is_like_the_training_data(tiny_run, tmp_path):
    scan = tmp_path / "scan.png"
    from core.synthetic import render

    images, _, _ = render(1, size=16, seed=5)
    Image.fromarray(images[0, 0].numpy()).save(scan)
    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(blank)
    predictor = Predictor(tiny_run)
    for path in (scan, blank):
        r = predictor.predict(path)
        assert isinstance(r["in_distribution"], bool) and r["ood_score"] > 0
        assert (OOD_MESSAGE in r["warnings"]) == (not r["in_distribution"])


def test_a_model_saved_before_the_check_says_it_has_none(tiny_run, tmp_path):
    from core.export import export_model

    out = export_model(tiny_run, tmp_path / "old.safetensors")
    assert (tmp_path / "old.ood.safetensors").is_file()  # export carries the check along
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["ood"]["file"] == "old.ood.safetensors"
    del meta["ood"]
    out.with_suffix(".json").write_text(json.dumps(meta))
    r = Predictor(out).predict(EXAMPLES[0])
    assert r["in_distribution"] is None and r["ood_score"] is None
    assert Predictor(out).card()["ood"] is None


@pytest.mark.parametrize(
    ("layers", "recorded"),
    [(ood.FIRST_LAYERS, None), (ood.MODEL_LAYERS, list(ood.MODEL_LAYERS))],
    ids=["before the early layer", "before the input statistics"],
)
def test_a_check_saved_with_fewer_layers_still_answers_with_those(tiny_run, tmp_path, layers, recorded):
    from core.export import export_model

    out = export_model(tiny_run, tmp_path / "m.safetensors")
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["ood"]["layers"] == ["penultimate", "mid", "early", "input"]
    new = ood.load(out, meta)
    old = ood.Detector(*({k: part[k] for k in layers} for part in (new.means, new.precisions, new.scales)), 1.0)
    # as older models hold it: the first check recorded no layers
    meta["ood"] = ood.save(old, out, {**meta["ood"], "layers": recorded, "scales": old.scales})
    out.with_suffix(".json").write_text(json.dumps(meta))
    assert ood.load(out, meta).layers == layers
    r = Predictor(out).predict(EXAMPLES[0])
    assert r["ood_score"] >= 0 and r["in_distribution"] == (r["ood_score"] <= 1)
    meta["ood"]["layers"] = ["penultimate", "deepest"]  # a record this studio cannot read
    out.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(StudioError, match="cannot be read.*unknown layers"):
        Predictor(out)


def test_a_runs_download_answers_elsewhere_as_the_run_does_with_its_check(tiny_run, tmp_path):
    """The Runs tab's download, moved to another folder (another machine's studio, core.predict), loads as it is
    and gives the run's answers, out-of-distribution check included; before, it named a check file it lacked."""
    import shutil

    from core.export import export_run

    files = export_run(tiny_run, tmp_path / "download")
    name = tiny_run.name
    assert [f.name for f in files] == [
        f"{name}.safetensors",
        f"{name}.json",
        f"{name}.ood.safetensors",
        f"{name}-config.json",
    ]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for f in files:
        shutil.copy(f, elsewhere)
    shutil.rmtree(tmp_path / "download")
    moved, own = Predictor(elsewhere / f"{name}.safetensors"), Predictor(tiny_run)
    assert moved.detector is not None
    for scan in EXAMPLES:
        a, b = moved.predict(scan), own.predict(scan)
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)
        assert (
            a["ood_score"] == pytest.approx(b["ood_score"], rel=1e-6) and a["in_distribution"] == b["in_distribution"]
        )
    assert json.loads((elsewhere / f"{name}-config.json").read_text()) == json.loads(
        (tiny_run / "config.json").read_text()
    )


def test_a_download_of_a_run_without_a_model_yet_holds_its_config_only(tmp_path):
    from core import runs
    from core.export import export_run

    run = runs.Run.create(tmp_path / "runs", "r", {"method": "tss-kd"})
    (tmp_path / "d").mkdir()
    assert [f.name for f in export_run(run.path, tmp_path / "d")] == [f"{run.path.name}-config.json"]


def test_a_damaged_check_file_is_a_clear_error(tiny_run, tmp_path):
    from core.export import export_model

    out = export_model(tiny_run, tmp_path / "m.safetensors")
    (tmp_path / "m.ood.safetensors").write_bytes(b"garbage")
    with pytest.raises(StudioError, match="m.ood.safetensors: the out-of-distribution check cannot be read"):
        Predictor(out)


def test_the_cli_fits_the_check_for_a_saved_model(tiny_run, tmp_path, capsys):
    from core.export import export_model

    out = export_model(tiny_run, tmp_path / "m.safetensors")
    meta = json.loads(out.with_suffix(".json").read_text())
    del meta["ood"]
    out.with_suffix(".json").write_text(json.dumps(meta))
    (tmp_path / "m.ood.safetensors").unlink()
    assert ood.main(["--model", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["file"] == "m.ood.safetensors" and printed["threshold"] > 0
    assert Predictor(out).detector is not None
    assert ood.main(["--model", str(tmp_path / "missing.safetensors")]) == 2


def test_the_ood_bench_judges_the_stored_check_and_refits_side_by_side(tiny_run, tmp_path):
    """bench/ood.py: the stored check against real outliers, and the same check refitted on fewer training
    images; refitted on all of them (64 here) it is the stored check, figure for figure, and so is the
    refit with all four layers beside the one with the model's three layers alone (the check as it was)."""
    from bench import ood as ood_bench

    out = tmp_path / "ood.json"
    args = ["--model", str(tiny_run), "--out", str(out), "--fit-sizes", "16,64,1000", "--fresh", "500"]
    assert ood_bench.main(args) == 0
    result = json.loads(out.read_text())
    assert result["fresh"] == "500 new demo scans (seed + 1,000,003)"
    assert set(result["fit_sizes"]) == {"16", "64"}  # 1000 is more than the split holds: all 64, once
    refit, stored = result["fit_sizes"]["64"], result["mahalanobis"]
    assert refit["missed"] == stored["missed"] and refit["flagged"] == pytest.approx(stored["flagged"])
    assert refit["auroc"] == pytest.approx(stored["auroc"])
    assert refit["flagged_in_distribution"] == pytest.approx(stored["flagged_in_distribution"])
    both = result["layer_sets"]
    assert both["model layers + input statistics"] == result["fit_sizes"]["64"]
    assert set(both) == {"model layers (before)", "model layers + input statistics"}
    assert result["test_accuracy"] == json.loads((tiny_run / "model.json").read_text())["metrics"]["test_acc"]
    for judged in (result["mahalanobis"], result["energy"], *result["fit_sizes"].values(), *both.values()):
        assert 0 <= judged["auroc"] <= 1 and 0 <= judged["flagged_in_distribution"] <= 1
        assert 0 <= judged["flagged_fresh"] <= 1
        assert set(judged["flagged"]) == {"dicom", "photo", "noise", "blank"}
    assert result["outliers"]["noise"] == 6
    model, _, _, data = ood_bench.load_trained(str(tiny_run))  # the energy baseline's threshold is set as the
    energies = ood_bench.energy(ood.features(model, data.val.images))  # check's own
    assert result["energy"]["threshold"] == pytest.approx(ood.conformal_threshold(energies))
    rules = result["threshold_rules"]  # a quick run's 200 validation scans and this run's 32, of 500 fresh
    assert [r["validation_scans"] for r in rules] == [32, 200] and all(r["splits"] == 1000 for r in rules)
    for r in rules:  # on the same draws the conformal rank never sits below the 99th percentile
        before, now = r["all scans, 99th percentile (before)"], r["all scans, conformal rank (now)"]
        assert 0 <= now["p05"] <= now["p95"] <= 1 and 0 <= now["mean"] <= before["mean"] <= 1
    diagnose = result["diagnose"]  # the check's verdict and the colour rule: it misses what both miss
    assert set(diagnose["in_colour"]) >= {"coffee", "astronaut", "chelsea", "retina", "rocket"}
    assert not {"camera", "moon", "page", "text"} & set(diagnose["in_colour"])  # greyscale photographs
    assert set(diagnose["missed"]) == set(stored["missed"]) - set(diagnose["in_colour"])
    assert all(diagnose["flagged"][g] >= stored["flagged"][g] for g in stored["flagged"])


def test_the_ood_bench_reads_its_outliers_without_a_c_librarys_noise_and_keeps_stderr(capfd):
    """One of pydicom's JPEG 2000 test files makes openjpeg print to the process's stderr before its read fails
    (a file the bench leaves out); the bench's output stays its own, and stderr works again after."""
    import sys

    from bench.ood import outlier_scans

    groups = outlier_scans()
    print("after", file=sys.stderr)
    err = capfd.readouterr().err
    assert "Invalid number of tiles" not in err and "marker segment" not in err and err.strip() == "after"
    assert {g: len(v) for g, v in groups.items()} == {"dicom": 57, "photo": 11, "noise": 6, "blank": 5}


def test_the_ood_benchs_fresh_scans_are_the_models_kind_and_in_none_of_its_splits(tiny_run):
    """The false alarms are counted on demo scans drawn anew, like the model's data but none of them."""
    from bench.ood import fresh_scans
    from core.data import DataConfig, load_dataset

    config = json.loads((tiny_run / "model.json").read_text())["config"]["data"]
    data = load_dataset(DataConfig(**config))
    fresh = fresh_scans(config, 200)
    assert fresh.shape == (200, *data.train.images.shape[1:]) and fresh.dtype == data.train.images.dtype
    seen = {bytes(x.numpy()) for split in (data.train, data.val, data.test) for x in split.images}
    assert not seen & {bytes(x.numpy()) for x in fresh}
    assert fresh_scans({**config, "dataset": "medmnist"}, 200) is None and fresh_scans(config, 0) is None


# The shipped demo model, tried as a clinician would: its own kind of scan passes, anything else is flagged.


def _outlier_arrays() -> dict[str, np.ndarray]:
    """Images of other kinds than the demo data, by file name: photographs, noise, blank images."""
    from skimage import data as photos

    rng = np.random.default_rng(0)
    return {
        "photo-astronaut.png": photos.astronaut(),
        "photo-retina.jpg": photos.retina()[::4, ::4],
        "photo-camera.png": photos.camera(),
        "noise-64.png": rng.integers(0, 256, (64, 64), dtype=np.uint8),
        "noise-256.png": rng.integers(0, 256, (256, 256), dtype=np.uint8),
        "noise-gaussian-128.png": np.clip(rng.normal(128, 40, (128, 128)), 0, 255).astype(np.uint8),
        "blank-black.png": np.zeros((64, 64), np.uint8),
        "blank-grey.png": np.full((64, 64), 128, np.uint8),
        "blank-white.png": np.full((64, 64), 255, np.uint8),
    }


def _outliers(tmp: Path) -> dict[str, Path]:
    """`_outlier_arrays` as files, and two of pydicom's DICOM slices."""
    from pydicom.data import get_testdata_file

    out = {}
    for name, a in _outlier_arrays().items():
        out[name] = tmp / name
        Image.fromarray(a).save(out[name])
    for name in ("CT_small.dcm", "MR_small.dcm"):
        out[name] = Path(get_testdata_file(name))
    return out


OUTLIERS = [
    "CT_small.dcm",
    "MR_small.dcm",
    "photo-astronaut.png",
    "photo-retina.jpg",
    "photo-camera.png",
    "noise-64.png",
    "noise-256.png",
    "blank-black.png",
    "blank-grey.png",
    "blank-white.png",
]


@pytest.fixture(scope="module")
def demo():
    return Predictor(DEMO)


@pytest.fixture(scope="module")
def outliers(tmp_path_factory):
    return _outliers(tmp_path_factory.mktemp("outliers"))


@pytest.mark.parametrize("name", OUTLIERS)
def test_the_demo_model_flags_scans_unlike_its_training_data(demo, outliers, name):
    r = demo.predict(outliers[name])
    assert r["in_distribution"] is False and r["ood_score"] > 1, (name, r["ood_score"])
    assert r["warnings"][0] == OOD_MESSAGE


@pytest.mark.parametrize("name", ["CT_small.dcm", "photo-astronaut.png", "noise-64.png", "blank-grey.png"])
def test_a_scan_unlike_the_training_data_gets_its_map_but_no_lesion_box(demo, outliers, name):
    """A box says "the lesion is here": Diagnose draws none over a scan the check flags, while the map still
    shows where the model looked; the same pass over the demo's own scans draws it (next tests)."""
    r = demo.diagnose(outliers[name], target="mass")
    assert r["in_distribution"] is False and r["lesion_box"] is None and r["cam"].max() > 0
    assert np.array_equal(r["overlay"], redraw(r["image"], r["cam"], None, 0.5, scan_hw(r)))


def test_a_model_that_did_not_learn_draws_no_lesion_box(demo, tmp_path):
    import shutil

    for path in DEMO.parent.glob("demo-model.*"):
        shutil.copy(path, tmp_path / path.name)
    meta = json.loads((tmp_path / "demo-model.json").read_text())
    chance = {"kind": "chance", "epoch": 20, "message": "no better than always answering the most common class"}
    (tmp_path / "demo-model.json").write_text(json.dumps({**meta, "warnings": [chance]}))
    scan = DEMO.parent / "examples" / "demo-mass.png"
    boxed, unlearned = demo.diagnose(scan), Predictor(tmp_path / "demo-model.safetensors").diagnose(scan)
    assert boxed["lesion_box"] is not None and boxed["in_distribution"] is True
    assert unlearned["model_learned"] is False and unlearned["lesion_box"] is None
    assert np.array_equal(unlearned["cam"], boxed["cam"])  # the same map, without the claim


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_shipped_demo_scans_are_not_flagged(demo, example):
    r = demo.predict(example)  # a first look at Diagnose shows the model as it usually answers: right, unflagged
    assert r["in_distribution"] is True and r["ood_score"] < 1
    assert not r["low_confidence"] and not r["warnings"]
    assert r["predicted"] == example.stem.removeprefix("demo-")


def _coloured(kind: str) -> np.ndarray:
    """The demo mass scan (H, W) grey as RGB (H, W, 3): tinted, kept grey, or grey with coloured marks."""
    g = np.asarray(Image.open(DEMO.parent / "examples" / "demo-mass.png")).astype(int)
    tints = {"warm": (40, 0, -40), "cool": (-40, 0, 40), "grey as RGB": (0, 0, 0)}
    if kind == "sepia":
        return np.clip(g[..., None] * np.array([1.0, 0.8, 0.55]), 0, 255).astype(np.uint8)
    if kind == "red marks":  # a reader's annotation: two lines, 6% of the pixels
        a = np.repeat(g[..., None], 3, 2)
        a[4:6, 4:-4] = a[-6:-4, 4:-4] = (255, 0, 0)
        return a.astype(np.uint8)
    return np.clip(g[..., None] + np.array(tints[kind]), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kind", ["warm", "cool", "sepia"])
@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_a_colour_image_is_not_like_the_scans_of_a_greyscale_model(demo, tmp_path, kind, fmt):
    """The demo model is trained on greyscale scans and sees a scan's grey level only, which a tinted copy of
    its own kind of scan keeps: its features pass it (score under 1), the colour rule flags it."""
    path = tmp_path / f"{kind}.{fmt}"
    Image.fromarray(_coloured(kind)).save(path)
    r = demo.predict(path)
    assert r["ood_score"] < 1  # the grey level is the model's own kind of scan
    assert r["in_distribution"] is False and r["warnings"][:2] == [OOD_MESSAGE, COLOUR_MESSAGE]


@pytest.mark.parametrize("kind", ["grey as RGB", "red marks"])
def test_a_grey_scan_stored_in_rgb_or_with_coloured_marks_is_not_called_colour(demo, tmp_path, kind):
    path = tmp_path / "scan.png"
    Image.fromarray(_coloured(kind)).save(path)
    r = demo.predict(path)
    assert COLOUR_MESSAGE not in r["warnings"]
    if kind == "grey as RGB":  # exactly the grey scan
        assert r == {**demo.predict(DEMO.parent / "examples" / "demo-mass.png"), "scan": r["scan"]}


def test_a_model_of_colour_images_takes_colour_images(tiny_run, tmp_path):
    from dataclasses import replace

    predictor = Predictor(tiny_run)
    path = tmp_path / "warm.png"
    Image.fromarray(_coloured("warm")).save(path)
    assert COLOUR_MESSAGE in predictor.predict(path)["warnings"]
    predictor.spec = replace(predictor.spec, channels=3)  # as a model trained on RGB data is loaded
    assert COLOUR_MESSAGE not in predictor.predict(path)["warnings"]


@pytest.mark.parametrize(
    "pixels, share",
    [
        (np.zeros((4, 4), np.uint8), 0.0),
        (np.zeros((0, 4, 3), np.uint8), 0.0),
        (np.full((4, 4, 3), 200, np.uint8), 0.0),
        (np.stack([np.full((2, 2), 255), np.zeros((2, 2)), np.zeros((2, 2))], -1).astype(np.uint8), 1.0),
        (np.array([[[100, 100 + ood.COLOUR_CHROMA, 100], [0, 0, 0]]], np.uint8), 0.0),  # at the limit: grey
        (np.array([[[100, 101 + ood.COLOUR_CHROMA, 100], [0, 0, 0]]], np.uint8), 0.5),
    ],
)
def test_the_colour_share_counts_pixels_whose_channels_differ(pixels, share):
    assert ood.colour_share(pixels) == share


@pytest.mark.parametrize("size", [1001, 2000, 4099])
def test_a_large_scans_colour_share_is_counted_on_a_sample_of_its_pixels(size):
    """Over a million pixels the share is counted on evenly spaced ones (a 64-megapixel scan took 4.7 s)."""
    pixels = np.full((size, size, 3), 120, np.uint8)
    pixels[:, : int(size * 0.3), 0] = 250  # the left 30% in colour
    assert ood.colour_share(pixels) == pytest.approx(0.3, abs=0.01)


@pytest.mark.slow
def test_most_demo_scans_like_the_demo_models_data_are_in_distribution(demo):
    """Scans drawn anew like the demo model's data (in none of its splits; 300 rendered, not the 7,500 it
    takes to reach its test split) pass the check, as its own test split did when it was trained."""
    from bench.ood import fresh_scans

    saved = json.loads(DEMO.with_suffix(".json").read_text())
    scans = fresh_scans(saved["config"]["data"], 300)
    assert scans.shape[1:] == (1, 64, 64)
    rate = ood.flagged(demo.detector, ood.features(demo.model, scans))
    assert rate <= 0.05, rate  # the conformal threshold: about 1% (1.2% of 3,000 fresh scans)
    assert saved["ood"]["flagged_test"] <= 0.05


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_a_lesion_box_is_drawn_for_lesion_classes_only(demo, example):
    r = demo.diagnose(example)  # the map of the predicted class, as Diagnose shows it first
    normal = r["target"] == "normal"
    assert r["target_no_finding"] is normal
    assert (r["lesion_box"] is None) is normal
    plain = redraw(r["image"], r["cam"], None, 0.5, scan_hw(r))  # the overlay with no box drawn
    assert np.array_equal(r["overlay"], plain) is normal
    if normal:  # asked for a lesion class, the same scan gets its box
        lesion = demo.diagnose(example, target="mass")
        assert lesion["lesion_box"] is not None and lesion["target_no_finding"] is False


def test_a_new_opacity_redraws_the_stored_map_exactly(demo):
    r = demo.diagnose(EXAMPLES[0], opacity=0.5)
    again = demo.diagnose(EXAMPLES[0], opacity=0.8)
    assert np.array_equal(redraw(r["image"], r["cam"], r["lesion_box"], 0.8, scan_hw(r)), again["overlay"])
    with pytest.raises(StudioError, match="opacity"):
        redraw(r["image"], r["cam"], r["lesion_box"], 1.5, scan_hw(r))


@pytest.mark.parametrize(
    ("mode", "side", "kept"),
    [("L", 3000, (1024, 819)), ("RGB", 3000, (1024, 819, 3)), ("L", 500, (500, 400)), ("RGB", 40, (40, 32, 3))],
    ids=["grey-large", "colour-large", "grey-small", "colour-small"],
)
def test_the_scan_as_shown_keeps_its_channels_and_at_most_1024_px(mode, side, kept):
    """`shown`: a greyscale scan stays one channel, a colour one three; the longer side at most 1024 px."""
    from core.cam import overlay, shown

    g = np.random.default_rng(0)
    shape = (side, side * 4 // 5) + ((3,) if mode == "RGB" else ())
    pixels = g.integers(0, 256, shape, dtype=np.uint8)
    image = shown(pixels)
    assert image.shape == kept and image.dtype == np.uint8
    if side <= 1024:
        assert np.array_equal(image, pixels)  # nothing to shrink: the scan as it is
    cam = g.random((8, 8)).astype(np.float32)
    drawn = overlay(pixels, cam, opacity=0.5)
    assert drawn.shape == (*kept[:2], 3)
    as_before = image if image.ndim == 3 else np.stack([image] * 3, -1)  # grey kept in three equal channels
    assert np.array_equal(overlay(image, cam, opacity=0.5), drawn)
    assert np.array_equal(overlay(as_before, cam, opacity=0.5), drawn)  # the same overlay either way


@pytest.mark.parametrize("size", [(3000, 2400), (1100, 4000), (700, 500)], ids=["tall", "wide", "small"])
def test_an_answer_keeps_the_scan_as_shown_and_its_box_in_scan_pixels(demo, tmp_path, size):
    """A large scan's answer holds it at the overlay's size (at most 1024 px), not whole in colour; a lesion
    box stays in the scan's pixels, and a redraw at a new opacity puts it where the scan's box is."""
    from core.imageio import read_scan

    height, width = size
    path = tmp_path / "scan.png"
    Image.open(DEMO.parent / "examples" / "demo-mass.png").convert("L").resize((width, height)).save(path)
    r = demo.diagnose(path)
    # a greyscale scan kept as one channel (a third of three), drawn in colour only in its overlay
    assert r["image"].shape == r["overlay"].shape[:2] and r["image"].dtype == np.uint8 and r["overlay"].shape[2] == 3
    assert max(r["image"].shape[:2]) == min(1024, max(size))
    assert r["image"].shape[0] / r["image"].shape[1] == pytest.approx(height / width, rel=0.02)
    assert r["scan"]["size"] == [width, height]

    lesion = demo.lesion_map(read_scan(path), target="mass")  # a map of the mass, boxed whatever the trust
    assert lesion.image.shape == r["image"].shape
    y0, x0, y1, x1 = lesion.box
    assert 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width and (y1 - y0) > height / 10
    drawn = redraw(lesion.image, lesion.cam, lesion.box, 0.5, (height, width))
    plain = redraw(lesion.image, lesion.cam, None, 0.5, (height, width))
    ys, xs = np.nonzero((drawn != plain).any(-1))  # the box's outline, in the shown image's pixels
    scale = lesion.image.shape[0] / height
    assert (ys.min(), xs.min()) == pytest.approx((y0 * scale, x0 * scale), abs=2)
    assert (ys.max(), xs.max()) == pytest.approx((y1 * scale - 1, x1 * scale - 1), abs=2)
    if scale < 1:  # a box in scan pixels drawn as if in the shown image's would be elsewhere
        assert not np.array_equal(redraw(lesion.image, lesion.cam, lesion.box, 0.5, lesion.image.shape[:2]), drawn)


def test_a_new_opacity_in_the_studio_redraws_a_large_scan_as_a_new_diagnosis_would(tmp_path):
    """Diagnose's opacity slider redraws from what the studio kept of each answer (the scan as shown, its map,
    its box in scan pixels and the scan's size): the same overlay, box included, as diagnosing again."""
    import shutil

    from ui.diagnose import kept, restyle

    model = tmp_path / "model.safetensors"  # saved before the OOD check: every scan trusted, every map boxed
    shutil.copy(DEMO, model)
    meta = json.loads(DEMO.with_suffix(".json").read_text())
    meta.pop("ood")
    model.with_suffix(".json").write_text(json.dumps(meta))
    predictor = Predictor(model)
    path = tmp_path / "scan.png"
    Image.open(DEMO.parent / "examples" / "demo-mass.png").convert("L").resize((2400, 3000)).save(path)
    first = predictor.diagnose(path, opacity=0.5)
    assert first["in_distribution"] is None and first["lesion_box"] is not None
    overlay, (image, slid), gallery = restyle([kept("scan.png", first)], 0.8)
    again = predictor.diagnose(path, opacity=0.8)["overlay"]
    assert np.array_equal(overlay, again) and np.array_equal(slid, again) and np.array_equal(gallery[0][0], again)
    assert image.shape == again.shape[:2] == (1024, 819) and again.shape[2] == 3  # the grey scan in one channel


def test_one_bad_file_never_sinks_a_batch(demo, tmp_path):
    from pydicom.data import get_testdata_file

    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes()[:2000])
    results = demo.diagnose_files([EXAMPLES[0], truncated, EXAMPLES[1]])
    assert [("error" in r) for r in results] == [False, True, False]
    assert "truncated.dcm" in results[1]["error"]
    assert results[0]["predicted"] == EXAMPLES[0].stem.removeprefix("demo-")
    assert results[2]["predicted"] == EXAMPLES[1].stem.removeprefix("demo-")


def test_the_model_card_says_what_the_model_is(demo):
    card = demo.card()
    assert card["data"] == "synthetic" and card["classes"] == ["normal", "nodule", "mass", "ring"]
    assert card["image_size"] == 64 and card["method"] == "tss-kd"
    assert card["calibration"]["temperature"] > 0 and card["ood"]["threshold"] > 0
    assert card["metrics"]["test_acc"] > 0.8
    assert card["chance"] == {"balanced_accuracy": 0.25, "auc": 0.5}  # four classes answered at random
    from ui.diagnose import card_markdown

    shown = card_markdown(card, "demo")  # Diagnose's card reads each figure against it
    assert "AUC 0.988 (answering at random: balanced 25.0%, AUC 0.500)" in shown, shown
    assert "64 px (a scan of another size is resized to it with Lanczos, as in training)" in shown, shown
    assert card["ood"]["layers"] == list(ood.MODEL_LAYERS)  # the shipped check predates the input statistics
    assert "out-of-distribution check: Mahalanobis on the model's features, threshold" in shown, shown


def test_a_new_models_card_says_its_check_also_reads_the_scans_own_statistics(tiny_run):
    from ui.diagnose import card_markdown

    card = Predictor(tiny_run).card()
    assert card["ood"]["layers"] == list(ood.LAYERS)
    shown = card_markdown(card, tiny_run.name)
    assert "Mahalanobis on the model's features and the scan's own statistics" in shown, shown
    bilinear = card_markdown({**card, "resize": "bilinear"}, tiny_run.name)  # a folder model saved before
    assert "resized to it with bilinear, as in training" in bilinear, bilinear


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_a_lesion_maps_cost_is_known_before_it_runs(demo, method):
    seconds = demo.cam_seconds(method)
    assert seconds > 0
    if method == "scorecam":
        assert seconds > 50 * demo.cam_seconds("gradcam") / 3  # one pass per channel of layer4 (512)


@pytest.mark.parametrize(("n", "fitted"), [(5, 5), (2000, 2000), (5000, 2000), (123_457, 2000)])
def test_the_check_is_fitted_on_at_most_2000_evenly_spaced_training_images(n, fitted):
    keep = ood.fit_sample(n)
    assert len(keep) == fitted == len(set(keep.tolist())) and keep[0] == 0 and keep[-1] == n - 1
    gaps = keep.diff()
    assert int(gaps.max()) - int(gaps.min()) <= 1  # evenly spaced: every class of a sorted split is sampled


# A model trained on DICOM files knows their modality: a DICOM file of another one is not its kind of scan.


@pytest.mark.parametrize(
    "infos, modalities",
    [
        ([{"format": "DICOM", "modality": "CR"}] * 3, ["CR"]),
        ([{"format": "DICOM", "modality": "DX"}, {"format": "DICOM", "modality": "CR"}], ["CR", "DX"]),
        ([{"format": "DICOM", "modality": "CR"}, {"format": "PNG"}], None),  # a PNG's modality is not known
        ([{"format": "DICOM", "modality": "CR"}, {"format": "DICOM", "modality": "unknown"}], None),
        ([{"format": "PNG"}], None),
        ([], None),
    ],
)
def test_a_datasets_modalities_are_known_only_when_every_file_names_its_own(infos, modalities):
    from core.folder import dicom_modalities
    from core.imageio import Scan

    assert dicom_modalities([Scan(np.zeros((2, 2), np.uint8), info) for info in infos]) == modalities


@pytest.fixture(scope="module")
def radiograph_run(tmp_path_factory) -> Path:
    """A short run on a folder of CR radiographs stored as DICOM (demo scans in two classes)."""
    from conftest import tiny_config
    from helpers import write_dicom

    from core.data import DataConfig
    from core.synthetic import render
    from core.train import run_training

    tmp = tmp_path_factory.mktemp("radiographs")
    images, labels, _ = render(64, size=16, seed=3)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (tmp / "data" / f"class{int(label) % 2}").mkdir(parents=True, exist_ok=True)
        write_dicom(tmp / "data" / f"class{int(label) % 2}" / f"IM{i:04d}", image[0].numpy(), modality="CR")
    data = DataConfig(dataset="folder", data_path=str(tmp / "data"), image_size=16)
    return run_training(tiny_config(tmp, data=data))


def test_a_model_of_dicom_radiographs_flags_a_dicom_file_of_another_modality(radiograph_run, tmp_path):
    from helpers import write_dicom

    from core.export import export_model
    from core.synthetic import render
    from core.trust import MODALITY_MESSAGE
    from ui.diagnose import card_markdown

    assert json.loads((radiograph_run / "model.json").read_text())["ood"]["modalities"] == ["CR"]
    exported = export_model(radiograph_run, tmp_path / "exported.safetensors")  # the record travels with it
    pixels = render(1, size=16, seed=99)[0][0, 0].numpy()
    for model in (radiograph_run, exported):
        predictor = Predictor(model)
        assert predictor.card()["ood"]["modalities"] == ["CR"]
        assert "DICOM CR only (another modality is flagged)" in card_markdown(predictor.card(), "run")
        answers = {}
        for name, modality in (("cr", "CR"), ("ct", "CT"), ("mr", "MR")):
            answers[name] = predictor.predict(write_dicom(tmp_path / name, pixels, modality=modality))
        Image.fromarray(pixels).save(tmp_path / "scan.png")
        answers["png"] = predictor.predict(tmp_path / "scan.png")  # a PNG says no modality: the features judge
        for name in ("cr", "png"):
            assert answers[name]["mismatch"] is None and not any("DICOM" in w for w in answers[name]["warnings"])
        for name, modality in (("ct", "CT"), ("mr", "MR")):
            r = answers[name]
            assert r["probabilities"] == answers["cr"]["probabilities"]  # the same pixels, the same answer
            assert r["in_distribution"] is False and r["mismatch"] == f"modality {modality}"
            expected = [OOD_MESSAGE, MODALITY_MESSAGE.format(modality=modality, trained="CR")]
            assert [w for w in r["warnings"] if w in expected] == expected


def test_a_model_of_other_data_says_nothing_of_modalities(tiny_run, tmp_path):
    from helpers import write_dicom

    predictor = Predictor(tiny_run)
    assert predictor.card()["ood"]["modalities"] is None
    r = predictor.predict(write_dicom(tmp_path / "ct", np.full((16, 16), 100, np.uint8), modality="CT"))
    assert r["mismatch"] is None
