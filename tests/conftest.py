import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

# The temp folder of this test session and of every process it starts (studios, trainers, chromium): gradio's
# cache, gradio_client's downloads (which leave one empty folder per file behind) and the studio's images all
# land in one folder that is removed when the session ends, so a day of test runs cannot fill the disk.
# pytest's own tmp_path folders stay where they were (kept for failed tests only; see pyproject.toml).
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
SCRATCH = tempfile.mkdtemp(prefix="tsskd-tests-")
os.environ["TMPDIR"] = tempfile.tempdir = SCRATCH
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from core.data import DataConfig  # noqa: E402
from core.train import TrainConfig, run_training  # noqa: E402


def tiny_config(tmp_path: Path, **overrides) -> TrainConfig:
    """A run small enough for a 2-core CPU: 16 px demo data, a few dozen images."""
    data = overrides.pop("data", None) or DataConfig(
        image_size=16, synthetic_train=48, synthetic_val=24, synthetic_test=24, seed=overrides.get("seed", 0)
    )
    base = dict(data=data, epochs=1, batch_size=16, eval_batch_size=64, device="cpu", runs_dir=str(tmp_path / "runs"))
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One finished TSS-KD run on demo data, shared by the tests that only read it."""
    tmp = tmp_path_factory.mktemp("tiny")
    cfg = tiny_config(
        tmp, epochs=2, data=DataConfig(image_size=16, synthetic_train=64, synthetic_val=32, synthetic_test=32)
    )
    return run_training(cfg)


def pytest_unconfigure(config):
    shutil.rmtree(SCRATCH, ignore_errors=True)
