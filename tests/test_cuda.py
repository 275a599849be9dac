"""The engine on a CUDA GPU: bf16 training, device-resident data, resume, and inference. Skipped without one."""

import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, set before CUDA starts

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
    assert "CUDA graphs on" in (run / "train.log").read_text()  # the default on one GPU


def test_no_cuda_graphs_steps_eagerly(tmp_path):
    run = run_training(gpu_config(tmp_path, epochs=1, cuda_graphs=False))
    assert "CUDA graphs off" in (run / "train.log").read_text()
    assert json.loads((run / "status.json").read_text())["status"] == "done"


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


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_diagnose_on_the_gpu_answers_as_on_the_cpu(method):
    """The studio's `--diagnose-device cuda`: the demo model's answers, trust flags and lesion maps on the GPU
    are the CPU's (ScoreCAM's masked passes in bf16 there), and the note of ScoreCAM's cost says it is faster."""
    from pathlib import Path

    from core.infer import Predictor

    examples = sorted((Path(__file__).resolve().parents[1] / "assets" / "examples").glob("demo-*.png"))[:2]
    cpu, gpu = Predictor("demo"), Predictor("demo", device="cuda")
    assert gpu.device.type == "cuda" and next(gpu.model.parameters()).is_cuda
    for path in examples:
        on_cpu, on_gpu = cpu.diagnose(path, method=method), gpu.diagnose(path, method=method)
        assert on_gpu["predicted"] == on_cpu["predicted"] and on_gpu["warnings"] == on_cpu["warnings"]
        for name, p in on_cpu["probabilities"].items():
            assert on_gpu["probabilities"][name] == pytest.approx(p, abs=0.01)
        assert on_gpu["in_distribution"] == on_cpu["in_distribution"]
        assert np.corrcoef(on_gpu["cam"].ravel(), on_cpu["cam"].ravel())[0, 1] > 0.95
    if method == "scorecam":  # 512 masked passes a scan: what the GPU is for
        assert gpu.cam_seconds(method) < cpu.cam_seconds(method)


@pytest.fixture
def deterministic():
    """Deterministic kernels and no cuDNN autotuning while the test runs: the same inputs give the same bits."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True


def graph_test_state(method: str, optimizer: str, *, graphs: bool):
    from core.config import TrainConfig
    from core.dataset import Split
    from core.engine import make_stepper, new_state
    from core.model import ModelSpec
    from core.synthetic import CLASSES, render

    cfg = TrainConfig(data=DataConfig(image_size=32), method=method, optimizer=optimizer, device="cuda").resolved()
    images, labels, _ = render(512, size=32, seed=0)
    train = Split(images.cuda(), labels.cuda())
    device = torch.device("cuda", torch.cuda.current_device())
    spec = ModelSpec(classes=list(CLASSES), image_size=32, channels=1)
    state, sampler = new_state(cfg, spec, train, device, graphs=graphs)
    torch.backends.cudnn.benchmark = False  # autotuning may pick another kernel for each state
    step = make_stepper(state, cfg, cfg.augment(32), train, amp=None, sampler=sampler, graphs=graphs)
    return cfg, state, step


@pytest.mark.parametrize(
    "method,optimizer", [("tss-kd", "sgd"), ("kd", "sgd"), ("cs-kd", "sgd"), ("ps-kd", "adam"), ("ce", "adam")]
)
def test_graphed_steps_train_like_eager_steps(deterministic, method, optimizer):
    """Two batch sizes, each run eagerly twice, captured, then replayed, with alpha and the KD warm-up's
    share changing every step: under deterministic algorithms the same random draws, and the same weights
    and sums as eager steps to float32 round-off, for every method. (With cuDNN autotuning and atomics the
    two differ by kernel-order noise, which TSS-KD's gradient amplifies: bench/graph_parity.py measures it.)"""
    from core.engine import set_lr

    order = torch.randperm(512, generator=torch.Generator().manual_seed(0)).cuda()
    sizes = [128, 96, 128, 96, 128, 96, 128, 128, 96, 128]
    results = []
    for graphs in (False, True):
        cfg, state, step = graph_test_state(method, optimizer, graphs=graphs)
        state.model.train()
        for i, n in enumerate(sizes):
            set_lr(state.optimizer, cfg, i, len(sizes))
            step(order[(i % 4) * 128 : (i % 4) * 128 + n], alpha=0.1 * i, kd_scale=0.1 * (i + 1))
        torch.cuda.synchronize()
        results.append((state, step))
    (eager, _), (graphed, stepper) = results
    assert stepper.captured == [96, 128]
    assert torch.equal(eager.generator.get_state(), graphed.generator.get_state())
    torch.testing.assert_close(graphed.sums, eager.sums, rtol=1e-5, atol=1e-5)
    for (name, a), b in zip(eager.model.state_dict().items(), graphed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


def test_a_graphed_bf16_run_stops_resumes_and_finishes(tmp_path):
    cfg = gpu_config(tmp_path, epochs=3, cuda_graphs=True)
    cfg = replace(cfg, data=replace(cfg.data, synthetic_train=1000))  # 7 full batches and one of 104
    run = run_training(cfg, stop=StopAfter(19))  # stops in epoch 3, after both batch sizes were captured
    assert json.loads((run / "status.json").read_text())["status"] == "stopped"
    run_training(replace(cfg), resume=str(run))
    rows = runs.read_metrics(run)
    assert json.loads((run / "status.json").read_text())["status"] == "done"
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(np.isfinite(r["train_loss"]) for r in rows)
    assert rows[-1]["train_acc"] > 0.3  # it learns: chance is 0.25


def test_a_temperature_grid_trains_on_the_gpu_in_one_process_with_cuda_graphs(tmp_path):
    from core import config
    from core.grid import load_grid, train_grid
    from core.sweep import temperature_grid

    paths = []
    for cfg in temperature_grid(gpu_config(tmp_path, epochs=2), [2.0, 4.0], [0.4, 4.0], tag="gpu"):
        run = runs.Run.create(tmp_path, cfg.name, config.to_record(cfg))
        runs.set_status(run.path, "queued", device="cuda")
        paths.append(run.path)
    assert train_grid(load_grid(paths)) == {p.name: "done" for p in paths}
    for p in paths:
        rows = runs.read_metrics(p)
        assert len(rows) == 2 and all(np.isfinite(r["train_loss"]) for r in rows)
        assert "CUDA graphs on" in (p / "train.log").read_text()
    assert len({runs.Run(p).status()["pid"] for p in paths}) == 1
