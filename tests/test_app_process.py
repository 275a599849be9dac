"""The studio as `make run` starts it, as a process: stopped, it leaves no scan behind, neither the upload in
gradio's cache nor the images drawn from it."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import torch
from studio_server import free_port

pytestmark = pytest.mark.slow  # a whole studio process

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "assets" / "examples" / "demo-mass.png"


def wait_until_up(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the studio did not answer at {url} within {seconds} s")


def start_studio(tmp_path: Path) -> tuple[subprocess.Popen, str, Path]:
    """`python app.py` as `make run` starts it, with its own temp folder (`tmp_path/temp`); returns the process,
    once it answers, its address and that temp folder."""
    temp = tmp_path / "temp"
    temp.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"} | {"TMPDIR": str(temp)}
    cmd = [sys.executable, "app.py", "--port", str(port), "--data-root", str(tmp_path / "data")]
    proc = subprocess.Popen(
        [*cmd, "--runs-dir", str(tmp_path / "runs"), "--models-dir", str(tmp_path / "models")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(url, proc)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return proc, url, temp


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_studio_leaves_no_scan_or_image_behind(tmp_path, sig):
    from gradio_client import Client, handle_file

    proc, url, temp = start_studio(tmp_path)
    try:
        client = Client(url, verbose=False, download_files=False)
        result = client.predict(files=[handle_file(str(EXAMPLE))], api_name="/diagnose")
        assert result[1]["label"] == "mass"  # the demo model on its own example scan
        client.close()
        images = list(temp.glob("tsskd-studio-images-*/*.png"))
        assert images, "the diagnosis wrote no overlay"
        (cache,) = temp.glob("tsskd-studio-cache-*")  # gradio's cache: the studio's own, not /tmp/gradio
        assert cache.stat().st_mode & 0o777 == 0o700  # other users of the machine cannot read the scans
        assert [f.name for f in cache.rglob("*.png")].count("demo-mass.png") == 1  # the upload, cached
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    # its address and who can open it, once up; not gradio's advice to publish it with share=True
    assert f"* TSS-KD Studio: {url.rstrip('/')} (this machine only). Ctrl-C stops it." in out, out
    assert "share=True" not in out + err and "public link" not in out + err
    # and its end in its own words: gradio's said "Keyboard interruption in main thread" after a plain kill
    assert "* TSS-KD Studio stopped." in out and "Keyboard interruption" not in out + err, out
    left = [str(f.relative_to(temp)) for f in temp.rglob("*") if f.is_file()]
    assert left == [], f"the uploaded scan or images drawn from it stayed behind: {left}"


def test_a_studio_stopped_during_a_diagnosis_exits_cleanly(tmp_path):
    """The diagnosis runs on a server thread, inside torch, when SIGTERM comes. The interpreter's own ending
    would stop that thread where it stands and abort the process ("terminate called without an active
    exception", exit status 134); the studio exits 0 instead, its temporary files removed."""
    from gradio_client import Client, handle_file

    study = tmp_path / "study.zip"  # a study as a PACS exports it: its scans unpacked while they are answered
    with zipfile.ZipFile(study, "w") as z:
        for k in range(4):
            z.write(EXAMPLE, f"DOE^JOHN/SE1/IM{k}.png")
    proc, url, temp = start_studio(tmp_path)
    assert (tmp_path / "models").is_dir()  # made at start, as the Diagnose picker names it
    try:
        client = Client(url, verbose=False, download_files=False)
        client.submit(files=[handle_file(str(study))], method="scorecam", api_name="/diagnose")
        time.sleep(4)  # ScoreCAM: the model once per feature map, seconds per scan on a CPU
        assert list(temp.glob("tsskd-studio-unpack-*/*/*/IM*.png"))  # stopped while its scans are unpacked
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and "terminate called" not in err, err[-2000:]
    assert [f for f in temp.rglob("*") if f.is_file()] == []  # the upload, its unpacked scans, the images


def refused_start(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`python app.py ARGS` with its folders under `tmp_path`, expected to refuse to start (exit status 2)."""
    folders = ["--data-root", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs")]
    cmd = [sys.executable, "app.py", *args, *folders, "--models-dir", str(tmp_path / "models")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    return done


def test_a_second_studio_on_a_port_in_use_says_so_and_changes_nothing(tmp_path):
    """`make run` while a studio already runs: one line saying what to do, not the server's traceback after a
    minute of start-up, and no folder made."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = refused_start(tmp_path, "--port", str(port))
    assert f"127.0.0.1:{port} is in use: is the studio already running" in done.stderr
    assert f"make run PORT={port + 1}" in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())


NO_GPU = "this machine has no CUDA GPU; use --diagnose-device cpu."
HAS_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


@pytest.mark.parametrize(
    ("device", "said"),
    [
        pytest.param("cuda", NO_GPU, marks=HAS_GPU),
        pytest.param("cuda:3", NO_GPU, marks=HAS_GPU),
        ("gpu0", "unknown device 'gpu0'; use auto, cpu, cuda or cuda:N."),
        ("mps", "unsupported device 'mps'; use auto, cpu, cuda or cuda:N."),
    ],
)
def test_a_diagnose_device_that_is_not_here_is_said_at_start_and_changes_nothing(tmp_path, device, said):
    """`app.py --diagnose-device` puts Diagnose's models on a GPU; one this machine lacks is one line naming the
    option, before a minute of start-up, and no folder is made."""
    done = refused_start(tmp_path, "--port", str(free_port()), "--diagnose-device", device)
    assert done.stderr.startswith("error: ") and said in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())
