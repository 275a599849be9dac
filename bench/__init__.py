"""Benchmarks: each measures our code against a baseline in the same run and writes its results here."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
# Debian's chromium as the browser tests and benches drive it (never `playwright install`).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def machine_label(device) -> str:
    """The machine in a few words, for tables: the GPU's name, or the CPU's cores; with the torch version."""
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{os.cpu_count()}-core {cpu_name()}, torch {torch.__version__}"


def cpu_name() -> str:
    """The CPU's model and its widest vector units, e.g. 'AMD EPYC 7B13 (AVX2)' (Linux; else the machine)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"CPU ({platform.machine()})"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    units = [name for flag, name in (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in flags]
    return f"{model or 'CPU'} ({units[0] if units else platform.machine()})"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """A process's resident memory in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_studio(runs_dir: Path, data_root: Path):
    """`app.py` as its own process on a free port, quiet; returns (process, url) once it answers."""
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    argv = ["app.py", "--port", str(port), "--runs-dir", str(runs_dir), "--data-root", str(data_root)]
    server = subprocess.Popen(
        [sys.executable, *argv],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return server, url
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.terminate()
                raise SystemExit("the studio did not start") from None
            time.sleep(1)


def write_result(path: Path, result: dict) -> Path:
    """Write a benchmark's JSON (creating its folder) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return path


@dataclass
class Trained:
    """A run a benchmark trained: its config, folder, model.json, seconds and validation accuracy per epoch."""

    cfg: object
    run: Path
    meta: dict
    seconds: float
    curve: list[float]


def trained(data, method: str, *, epochs: int, device, runs_dir, **settings) -> Trained:
    """Train `method` on `data` in this process, with RGA for every method but plain cross-entropy (as the
    paper compares them); `settings` are further TrainConfig fields."""
    from core import runs
    from core.config import TrainConfig
    from core.train import run_training

    cfg = TrainConfig(
        data=data, method=method, rga=method != "ce", epochs=epochs, device=str(device), runs_dir=runs_dir, **settings
    )
    t0 = time.perf_counter()
    run = run_training(cfg)
    seconds = time.perf_counter() - t0
    folder = runs.Run(run)
    return Trained(cfg, run, folder.model_meta(), seconds, [r["val_acc"] for r in folder.metrics()])


@contextlib.contextmanager
def job_manager(runs_dir, *, per_device: int):
    """The studio's job manager for a benchmark's runs. On leaving (finished, failed, Ctrl-C, or SIGTERM: the
    `timeout` each step of bench/gpu_session.sh runs under) it stops whatever is still training, which the
    studio itself never does on close: a benchmark ended by its timeout left its trainers training into the
    next step's measurement."""
    import signal
    import threading

    from core.errors import StudioError
    from core.jobs import JobManager
    from core.process import sigterm_as_ctrl_c

    main = threading.current_thread() is threading.main_thread()  # where a signal's handler can be set
    previous = sigterm_as_ctrl_c() if main else None
    manager = JobManager(runs_dir, per_device=per_device)
    try:
        yield manager
    finally:
        for name in manager.active():
            with contextlib.suppress(StudioError):  # it ended meanwhile
                manager.stop(name)
        manager.close()
        if main:
            signal.signal(signal.SIGTERM, previous)
