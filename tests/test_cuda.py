"""The engine on a CUDA GPU: bf16 training, device-resident data, resume, and inference. Skipped without one."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image

from core import runs
from core.augment import TrainAugment, regional_gamma
from core.data import DataConfig
from core.train import StopFlag, run_training

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def gpu_config(tmp_path, **kw):
    data = DataConfig(image_size=32, synthetic_train=1024, synthetic_val=256, synthetic_test=256)
    return tiny_config(tmp_path, data=data, device="cuda", batch_size=128, eval_batch_size=512, **kw)


@pytest.mark.parametrize("method", ["tss-kd", "cs-kd", "ps-kd"])
def test_bf16_training_on_the_gpu_writes_a_complete_run(tmp_path, method):
    run = run_training(gpu_config(tmp_path, method=method, epochs=2))
    rows = runs.read_metrics(run)
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "done" and status["device"].startswith("cuda")
    assert len(rows) == 2 and all(np.isfinite(r["train_loss"]) for r in rows)
    assert all(r["peak_mem_mb"] > 0 for r in rows)


def test_gpu_augmentation_matches_the_cpu():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    aug = TrainAugment(size=32)
    params = aug.sample(16, 32, 32, generator=torch.Generator().manual_seed(0))
    cpu = aug.apply(x, params)
    moved = type(params)(
        params.crop.cuda(),
        params.flip.cuda(),
        type(params.rga)(params.rga.gamma.cuda(), params.rga.boxes.cuda()),
        params.contrast.cuda(),
        params.saturation.cuda(),
        params.saturation_first.cuda(),
    )
    gpu = aug.apply(x.cuda(), moved)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)
    g = torch.rand(16, device="cuda")
    boxes = params.rga.boxes.cuda()
    torch.testing.assert_close(
        regional_gamma(x.cuda().float() / 255, gamma=g + 0.5, boxes=boxes).cpu(),
        regional_gamma(x.float() / 255, gamma=g.cpu() + 0.5, boxes=boxes.cpu()),
    )


class StopAfter(StopFlag):
    def __init__(self, n):
        self.n, self.reads = n, 0

    @property
    def requested(self):
        self.reads += 1
        return self.reads > self.n


def test_gpu_stop_and_resume(tmp_path):
    cfg = gpu_config(tmp_path, epochs=2)
    run = run_training(cfg, stop=StopAfter(10))  # 8 steps an epoch: stops in epoch 2
    assert json.loads((run / "status.json").read_text())["status"] == "stopped"
    run_training(replace(cfg), resume=str(run))
    assert json.loads((run / "status.json").read_text())["status"] == "done"
    assert [r["epoch"] for r in runs.read_metrics(run)] == [1, 2]


def test_gpu_prediction_and_lesion_map(tmp_path):
    from core.infer import Predictor
    from core.synthetic import render

    run = run_training(gpu_config(tmp_path, epochs=1))
    images, _, _ = render(1, size=64, seed=5)
    Image.fromarray(images[0, 0].numpy()).save(tmp_path / "scan.png")
    predictor = Predictor(run, device="cuda")
    result = predictor.predict(tmp_path / "scan.png")
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    from core.imageio import read_scan

    lesion = predictor.lesion_map(read_scan(tmp_path / "scan.png"))
    assert lesion.overlay.shape == (64, 64, 3)
