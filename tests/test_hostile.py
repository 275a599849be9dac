"""Hostile and odd files through every entry point: correct handling or one clear message naming the file;
the server keeps serving and nothing is written."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from hostile import build

from core import imageio
from core.data import DataConfig, load_dataset
from core.errors import StudioError
from core.imageio import read_scan
from core.predict import main as predict_main

pytestmark = pytest.mark.slow  # the studio server on a corpus of hostile files: `make test-fast` leaves them out

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo-model.safetensors"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    from studio_server import start

    tmp = tmp_path_factory.mktemp("hostile-studio")
    url, app, ctx = start(tmp, max_file_size="2mb")
    client = Client(url, verbose=False)
    yield client, ctx, tmp
    app.close()
    ctx.jobs.close()


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_read_scan_on_every_file(corpus):
    for name, path, expected in corpus:
        if expected == "ok":
            scan = read_scan(path)
            assert scan.pixels.dtype == np.uint8 and scan.pixels.shape[:2] == (48, 64), name
        else:
            with pytest.raises(StudioError) as e:
                read_scan(path)
            assert name in str(e.value) and expected in str(e.value), (name, str(e.value))


def test_file_over_the_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(imageio, "MAX_FILE_BYTES", 1000)
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * 5000)
    with pytest.raises(StudioError, match="big.png: the file is too big"):
        read_scan(big)


def test_predict_cli_on_every_file(corpus, capsys, tmp_path):
    before = snapshot(tmp_path)
    code = predict_main(["--model", str(DEMO), *[str(p) for _, p, _ in corpus]])
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert code == 2 and "Traceback" not in err
    for (name, _, expected), row in zip(corpus, rows, strict=True):
        if expected == "ok":
            assert sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-5), name
        else:
            assert name in row["error"] and expected in row["error"], row
    assert snapshot(tmp_path) == before


def test_folder_with_one_bad_file_among_good_ones(corpus, tmp_path):
    good = [(n, p) for n, p, e in corpus if e == "ok"]
    for i, (name, path) in enumerate(good * 2):
        dest = tmp_path / "scans" / ("a" if i % 2 else "b") / f"{i}-{name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest)
    bad_name, bad_path, _ = next(c for c in corpus if c[0] == "truncated.png")
    shutil.copy(bad_path, tmp_path / "scans" / "a" / bad_name)
    cfg = DataConfig(dataset="folder", data_path=str(tmp_path / "scans"), image_size=16)
    with pytest.raises(StudioError, match=r"1 of \d+ files could not be read:\n  truncated.png"):
        load_dataset(cfg)
    from dataclasses import replace

    data = load_dataset(replace(cfg, skip_bad_files=True))
    assert len(data.train) + len(data.val) + len(data.test) == 2 * len(good)


def test_diagnose_and_augment_api_on_every_file(corpus, studio):
    client, ctx, tmp = studio
    before = snapshot(tmp)
    for name, path, expected in corpus:
        if expected == "ok":
            _, probs, *_ = client.predict(
                [handle_file(str(path))], "demo", "gradcam", "predicted class", 0.5, api_name="/diagnose"
            )
            assert probs["label"] in ("normal", "nodule", "mass", "ring"), name
            samples, views = client.predict(
                handle_file(str(path)),
                None,
                0,
                "random",
                0.5,
                2.0,
                0.71,
                1,
                2,
                2.0,
                0.2,
                0.2,
                0.8,
                0.8,
                32,
                api_name="/augment_preview",
            )
            assert len(samples) == 2 and len(views) == 2, name
        else:
            with pytest.raises(Exception) as e:
                client.predict(
                    [handle_file(str(path))], "demo", "gradcam", "predicted class", 0.5, api_name="/diagnose"
                )
            assert name in str(e.value) and expected in str(e.value), (name, str(e.value))
            with pytest.raises(Exception, match=expected):
                client.predict(
                    handle_file(str(path)),
                    None,
                    0,
                    "random",
                    0.5,
                    2.0,
                    0.71,
                    1,
                    2,
                    2.0,
                    0.2,
                    0.2,
                    0.8,
                    0.8,
                    32,
                    api_name="/augment_preview",
                )
    assert snapshot(tmp) == before  # no run, no file in the data root or runs folder


def test_upload_over_the_size_limit_is_refused_and_the_server_keeps_serving(studio, corpus, tmp_path):
    client, _, _ = studio
    big = tmp_path / "huge.png"
    big.write_bytes(b"\x89PNG" + np.random.default_rng(0).bytes(3 * 2**20))
    with pytest.raises(Exception, match="(?i)size|large|413"):
        client.predict([handle_file(str(big))], "demo", "gradcam", "predicted class", 0.5, api_name="/diagnose")
    ok = next(p for n, p, e in corpus if e == "ok")
    _, probs, *_ = client.predict(
        [handle_file(str(ok))], "demo", "gradcam", "predicted class", 0.5, api_name="/diagnose"
    )
    assert probs["label"]
