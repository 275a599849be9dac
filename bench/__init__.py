"""Benchmarks: each measures our code against a baseline in the same run and writes its results here."""

from __future__ import annotations

import contextlib
import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine_label(device) -> str:
    """The machine in a few words, for tables: the GPU's name, or the CPU's cores; with the torch version."""
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{os.cpu_count()}-core CPU ({platform.machine()}), torch {torch.__version__}"


def write_result(path: Path, result: dict) -> Path:
    """Write a benchmark's JSON (creating its folder) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return path


@contextlib.contextmanager
def job_manager(runs_dir, *, per_device: int):
    """The studio's job manager for a benchmark's runs. On leaving (finished, failed or Ctrl-C) it stops
    whatever is still training, which the studio itself never does on close."""
    from core.jobs import JobManager

    manager = JobManager(runs_dir, per_device=per_device)
    try:
        yield manager
    finally:
        for name in manager.active():
            manager.stop(name)
        manager.close()
