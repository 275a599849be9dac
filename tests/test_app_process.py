"""The studio as `make run` starts it, as a process: it leaves no scan images behind when it is stopped."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_studio_removes_its_scan_images(tmp_path, sig):
    from gradio_client import Client, handle_file

    temp = tmp_path / "temp"
    temp.mkdir()
    port = free_port()
    env = {**os.environ, "TMPDIR": str(temp), "GRADIO_TEMP_DIR": str(temp / "gradio")}
    cmd = [sys.executable, "app.py", "--port", str(port), "--data-root", str(tmp_path / "data")]
    proc = subprocess.Popen(
        [*cmd, "--runs-dir", str(tmp_path / "runs")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_up(url, proc)
        client = Client(url, verbose=False, download_files=False)
        result = client.predict(files=[handle_file(str(EXAMPLE))], api_name="/diagnose")
        assert result[1]["label"] == "mass"  # the demo model on its own example scan
        client.close()
        images = list(temp.glob("tsskd-studio-images-*/*.png"))
        assert images, "the diagnosis wrote no overlay"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert not list(temp.glob("tsskd-studio-images-*")), "the studio left its images behind"
