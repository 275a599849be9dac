"""What makes a training step capturable in a CUDA graph, checked on the CPU: the step asks nothing of
the host (no value read back, no tensor made from host data), a learning rate and a PS-KD alpha held
in tensors train exactly as floats do, checkpoints keep them, and graphs are refused where they cannot
run. The capture itself is tested in test_cuda.py."""

import json

import pytest
import torch
from safetensors import safe_open
from torch.utils._python_dispatch import TorchDispatchMode

from core.checkpoint import load_last, save_last
from core.config import TrainConfig
from core.data import DataConfig
from core.dataset import Split
from core.engine import State, new_state, set_lr, train_step
from core.errors import StudioError
from core.graphs import GraphedSteps, check_graphable
from core.methods import ClassSampler
from core.model import ModelSpec
from core.synthetic import CLASSES, render

# Operators that cannot be captured in a CUDA graph: reading a value back to the host (item, nonzero and
# other data-dependent shapes) or making a tensor from host data (a copy to the GPU on each call).
HOST_BOUND = {
    "aten._local_scalar_dense",
    "aten.nonzero",
    "aten.is_nonzero",
    "aten.equal",
    "aten.lift_fresh",
    "aten.masked_select",
    "aten._unique2",
    "aten.unique_dim",
    "aten.bincount",
    "aten.index(bool)",  # a boolean mask: its result's shape depends on the data
}


class OpRecorder(TorchDispatchMode):
    """Every ATen operator that runs while it is active, by name without overload."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name == "aten.index" and any(i is not None and i.dtype == torch.bool for i in args[1]):
            name = "aten.index(bool)"
        self.ops.append(name)
        return func(*args, **(kwargs or {}))


SPLIT = Split(*render(64, size=16, seed=0)[:2])


def make_state(cfg: TrainConfig, *, graphs: bool) -> State:
    spec = ModelSpec(classes=list(CLASSES), image_size=16, channels=1)
    return new_state(cfg, spec, SPLIT, torch.device("cpu"), graphs=graphs)[0]


def train(cfg: TrainConfig, state: State, *, steps: int, alpha, amp=None, sampler=None) -> None:
    order = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    for i in range(steps):
        set_lr(state.optimizer, cfg, i, steps)  # changes every step, as training does
        idx = order[(i % 4) * 16 : (i % 4 + 1) * 16]
        train_step(state, cfg, cfg.augment(16), SPLIT, idx, amp=amp, alpha=alpha, sampler=sampler)


@pytest.mark.parametrize("method", ["ce", "kd", "cs-kd", "ps-kd", "tss-kd"])
@pytest.mark.parametrize("amp", [None, pytest.param(torch.bfloat16, marks=pytest.mark.slow)])  # bf16: emulated here
def test_a_graph_ready_step_asks_nothing_of_the_host(method, amp):
    cfg = config(method)
    state = make_state(cfg, graphs=True)
    alpha = torch.tensor(0.3)
    sampler = ClassSampler(SPLIT.labels) if method == "cs-kd" else None  # built before the recording
    train(cfg, state, steps=1, alpha=alpha, amp=amp, sampler=sampler)  # makes the optimizer's buffers
    with OpRecorder() as recorder:
        train(cfg, state, steps=1, alpha=alpha, amp=amp, sampler=sampler)
    ops = set(recorder.ops)
    assert {"aten.grid_sampler_2d", "aten.convolution_backward", "aten._fused_sgd_"} <= ops  # the whole step
    assert not ops & HOST_BOUND, sorted(ops & HOST_BOUND)


@pytest.mark.parametrize(
    "bad",
    [
        lambda x: x * torch.tensor([1.0, 2.0]).mean(),  # host data made into a tensor
        lambda x: x * float(x.sum()),  # a value read back
        lambda x: x[x > 0],  # a shape that depends on the data
    ],
)
def test_the_recorder_sees_host_bound_operators(bad):
    with OpRecorder() as recorder:
        bad(torch.ones(2))
    assert set(recorder.ops) & HOST_BOUND


def config(method="tss-kd", optimizer="sgd") -> TrainConfig:
    data = DataConfig(image_size=16)
    return TrainConfig(data=data, method=method, optimizer=optimizer, batch_size=16).resolved()


@pytest.mark.parametrize("method", ["tss-kd", "ps-kd"])
def test_graph_ready_state_trains_like_the_eager_one(method):
    """Fused SGD reading a tensor learning rate, and alpha as a tensor: the same weights and sums."""
    cfg = config(method)
    eager, ready = make_state(cfg, graphs=False), make_state(cfg, graphs=True)
    assert isinstance(ready.optimizer.param_groups[0]["lr"], torch.Tensor)
    train(cfg, eager, steps=6, alpha=0.4)
    train(cfg, ready, steps=6, alpha=torch.tensor(0.4))
    assert float(ready.optimizer.param_groups[0]["lr"]) == pytest.approx(eager.optimizer.param_groups[0]["lr"])
    for (name, a), b in zip(eager.model.state_dict().items(), ready.model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(ready.sums, eager.sums, rtol=1e-5, atol=1e-5)
    assert float(eager.sums[4]) == 6 * 16
    if method == "ps-kd":
        torch.testing.assert_close(ready.past_probs, eager.past_probs)


def test_a_checkpoint_of_a_graph_ready_run_keeps_its_tensor_learning_rate(tmp_path):
    cfg = config()
    state = make_state(cfg, graphs=True)
    train(cfg, state, steps=2, alpha=torch.tensor(0.0))
    set_lr(state.optimizer, cfg, 1, 4)
    save_last(tmp_path / "last.safetensors", state)
    with safe_open(tmp_path / "last.safetensors", framework="pt") as f:
        saved = json.loads(f.metadata()["resume"])["param_groups"][0]["lr"]
    assert saved == pytest.approx(cfg.lr * (3 / 4) ** cfg.poly_power)
    again = make_state(cfg, graphs=True)
    load_last(tmp_path / "last.safetensors", again)
    lr = again.optimizer.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and float(lr) == pytest.approx(saved)
    for pa, pb in zip(state.model.parameters(), again.model.parameters(), strict=True):
        torch.testing.assert_close(pb, pa)
        a, b = state.optimizer.state[pa]["momentum_buffer"], again.optimizer.state[pb]["momentum_buffer"]
        torch.testing.assert_close(b, a)
        # the checkpoint stores buffers contiguous; the fused kernels on a GPU need the parameter's layout
        assert b.stride() == pb.stride(), pb.shape
    assert any(p.dim() == 4 and not p.is_contiguous() for p in again.model.parameters())  # channels-last convs
    train(cfg, again, steps=1, alpha=torch.tensor(0.0))  # and it steps on from there


@pytest.mark.parametrize(
    "device,world,message",
    [("cpu", 1, "need a CUDA GPU"), ("cuda", 2, "one process"), ("cuda:1", 4, "one process")],
)
def test_graphs_are_refused_where_they_cannot_run(device, world, message):
    with pytest.raises(StudioError, match=message):
        check_graphable(torch.device(device), world)


def test_graphed_steps_refuse_a_cpu_generator():
    with pytest.raises(StudioError, match="need a CUDA GPU"):
        GraphedSteps(lambda idx, alpha: None, torch.Generator())
