"""Privacy and safety: identifiers never leave a DICOM, uploads are not kept, paths stay inside their roots,
the file route serves nothing else, and authentication is enforced inside the handlers."""

import uuid

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from helpers import IDENTIFIERS, write_dicom
from PIL import Image

from core.data import DataConfig
from core.errors import StudioError
from core.paths import confine
from core.train import TrainConfig, run_training

pytestmark = pytest.mark.slow  # the studio server and training: `make test-fast` leaves them out


def identifiers_in(text: str) -> list[str]:
    pieces = [v for v in IDENTIFIERS.values()] + [IDENTIFIERS["PatientName"].split("^")[0]]
    return [p for p in pieces if p in text]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    from studio_server import start

    tmp = tmp_path_factory.mktemp("secure")
    url, app, ctx = start(tmp)
    yield url, Client(url, verbose=False), ctx
    app.close()
    ctx.jobs.close()


def test_diagnose_shows_no_identifiers_and_uploads_expire(studio, tmp_path):
    url, client, ctx = studio
    name = f"privacy-{uuid.uuid4().hex}.dcm"
    pixels = (np.add.outer(np.arange(64), np.arange(64)) * 30).astype(np.uint16)
    write_dicom(tmp_path / name, pixels)
    result = client.predict(
        [handle_file(str(tmp_path / name))], "demo", "gradcam", "predicted class", 0.5, api_name="/diagnose"
    )
    assert not identifiers_in(repr(result))
    overlay = Image.open(result[2])
    assert set(overlay.info) <= {"dpi", "gamma"}  # no text chunks, no EXIF
    from app import build_app

    # Gradio's cache cleanup: every minute, uploads older than five minutes are deleted.
    assert build_app(ctx).delete_cache == (60, 300)


def test_training_on_identifier_laden_dicoms_keeps_no_identifier(tmp_path, capsys):
    for c in ("benign", "malignant"):
        (tmp_path / "scans" / c).mkdir(parents=True)
        for i in range(8):
            base = 100 if c == "benign" else 3000
            write_dicom(tmp_path / "scans" / c / f"{i:03d}", np.full((24, 24), base + 10 * i, np.uint16))
    cfg = TrainConfig(
        data=DataConfig(dataset="folder", data_path=str(tmp_path / "scans"), image_size=16),
        epochs=1,
        batch_size=4,
        device="cpu",
        runs_dir=str(tmp_path / "runs"),
    )
    run = run_training(cfg)
    out = capsys.readouterr()
    for f in run.iterdir():
        assert not identifiers_in(f.read_bytes().decode("latin-1")), f.name
    assert not identifiers_in(out.out + out.err)


@pytest.mark.parametrize(
    "route",
    [
        "/gradio_api/file=/etc/passwd",
        "/file=/etc/passwd",
        "/gradio_api/file=../../../../etc/passwd",
        "/gradio_api/file=%2Fetc%2Fpasswd",
        "/gradio_api/file=/proc/self/environ",
    ],
)
def test_the_file_route_serves_nothing_outside_its_allowed_paths(studio, route):
    url, _, _ = studio
    response = httpx.get(url.rstrip("/") + route, follow_redirects=True, timeout=10)
    assert response.status_code in (403, 404, 400) or "root:" not in response.text
    assert "root:x:0:0" not in response.text


def test_the_file_route_does_not_serve_run_files(studio):
    url, _, ctx = studio
    ctx.runs_dir.mkdir(parents=True, exist_ok=True)
    secret = ctx.runs_dir / "secret.json"
    secret.write_text('{"secret": "do-not-serve"}')
    response = httpx.get(f"{url.rstrip('/')}/gradio_api/file={secret}", timeout=10)
    assert "do-not-serve" not in response.text


@pytest.mark.parametrize(
    "path,message",
    [("../x", "outside"), ("/etc", "absolute"), ("~/x", "absolute"), ("link/passwd", "outside"), ("", "give a path")],
)
def test_paths_from_the_browser_stay_inside_the_data_root(tmp_path, path, message):
    root = tmp_path / "data"
    root.mkdir()
    (root / "link").symlink_to("/etc")
    with pytest.raises(StudioError, match=message):
        confine(root, path)
    (root / "inside.npz").write_bytes(b"x")
    assert confine(root, "inside.npz") == (root / "inside.npz").resolve()


def test_authentication_guards_the_api_and_the_handlers(tmp_path):
    from studio_server import start

    from ui.train import make_api

    url, app, ctx = start(tmp_path, auth=[("doctor", "correct horse")])
    try:
        with pytest.raises(Exception):  # noqa: B017 - refused at login, whatever the client's error type
            Client(url, verbose=False).predict("x", api_name="/run_status")
        client = Client(url, auth=("doctor", "correct horse"), verbose=False)
        tiny = {"method": "ce", "image_size": 16, "epochs": 1, "batch_size": 16, "device": "cpu"}
        run_id = client.predict({**tiny, "synthetic_train": 256, "name": "authed"}, api_name="/start_training")
        assert run_id.startswith("authed-")
        assert client.predict(run_id, api_name="/stop_training")["status"] == "stopped"
        import gradio as gr

        from ui.train import make_run_api

        with pytest.raises(gr.Error, match="log in"):  # the handler itself checks, login page or not
            make_api(ctx)({**tiny, "name": "sneaky"}, request=None)
        for handler in make_run_api(ctx):  # nor stopped or resumed by one not logged in
            with pytest.raises(gr.Error, match="log in"):
                handler(run_id, request=None)
        assert ctx.jobs.status(run_id)["status"] == "stopped"
        from ui.temperatures import make_sweep_api

        start_sweep, stop_sweep = make_sweep_api(ctx)  # nor a sweep queued or stopped
        before = sorted(p.name for p in ctx.runs_dir.iterdir())
        with pytest.raises(gr.Error, match="log in"):
            start_sweep({**tiny, "method": "tss-kd", "t_targets": [2], "t_nontargets": [0.4]}, request=None)
        with pytest.raises(gr.Error, match="log in"):
            stop_sweep("sweep1", request=None)
        assert sorted(p.name for p in ctx.runs_dir.iterdir()) == before
    finally:
        app.close()
        ctx.jobs.close()


def test_credentials_come_from_a_file_or_the_environment_never_the_command_line(tmp_path, monkeypatch):
    from app import read_auth

    (tmp_path / "users").write_text("alice:pw1\nbob:pw:2\n")
    assert read_auth(str(tmp_path / "users")) == [("alice", "pw1"), ("bob", "pw:2")]
    monkeypatch.setenv("TSSKD_AUTH", "carol:pw3")
    assert read_auth(None) == [("carol", "pw3")]
    monkeypatch.delenv("TSSKD_AUTH")
    assert read_auth(None) is None
    import app

    with pytest.raises(SystemExit):
        app.main(["--password", "x"])  # there is no such flag


def test_share_warns_about_patient_data(capsys):
    from app import warn_if_shared

    warn_if_shared(False)
    assert capsys.readouterr().err == ""
    warn_if_shared(True)
    assert "patient data" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "auth", "warned"),
    [
        ("127.0.0.1", False, False),
        ("localhost", False, False),
        ("::1", False, False),
        ("127.0.0.2", False, False),
        ("0.0.0.0", False, True),
        ("::", False, True),
        ("192.168.1.20", False, True),
        ("studio.example.org", False, True),
        ("0.0.0.0", True, False),
    ],
)
def test_a_studio_other_machines_can_open_without_a_password_says_so(capsys, host, auth, warned):
    from app import warn_if_shared

    warn_if_shared(False, host, auth)
    err = capsys.readouterr().err
    assert (f"--host {host} lets other machines on the network open this studio" in err) is warned
    assert ("--auth-file" in err) is warned


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("127.0.0.1", "http://127.0.0.1:7860 (this machine only)"),
        ("::1", "http://[::1]:7860 (this machine only)"),
        (
            "0.0.0.0",
            "http://127.0.0.1:7860 (listening on every address of this machine: other machines open it at its address)",
        ),
        ("10.0.0.5", "http://10.0.0.5:7860 (listening on the network)"),
    ],
)
def test_the_ready_line_names_the_address_and_who_can_open_it(host, shown):
    from app import ready_message

    line = ready_message(host, 7860)
    assert line == f"* TSS-KD Studio: {shown}. Ctrl-C stops it." and "share" not in line
