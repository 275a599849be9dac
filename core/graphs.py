"""Whole training steps as CUDA graphs: each batch size is captured once and then replayed.

At 32 px a ResNet-18 step of batch 128 is bound by kernel launches, not arithmetic: the GPU waits
for the host to issue several hundred small kernels. A replayed graph issues the whole step at once:
the batch gather, both augmented views, the teacher and student passes, the backward pass, the
optimizer step and the metric sums.

What makes `core.train.train_step` capturable, and keeps it so:
- the training data sits on the GPU, and the batch is gathered inside the graph from a static index
  buffer that each replay refills;
- nothing in the step waits for the host: metrics are summed on the device, and the learning rate,
  PS-KD's alpha and the KD warm-up's share are device tensors written before each replay;
- the augmentation generator is registered with every graph, so replay i draws exactly what eager
  step i would have drawn;
- the optimizer reads its learning rate from a tensor (`core.train.make_optimizer(graphs=True)`);
- autocast runs without its weight cache, whose entries would live in the graph's memory.

Each batch size is run eagerly `warmup` times first (cuDNN chooses its algorithms, the optimizer makes
its buffers), on a side stream as the PyTorch documentation asks, then captured and replayed from the
next step on. The graphs are self-contained: parameters, optimizer state, batch-norm statistics and
the metric sums live outside the graphs' memory, so the graphs of all batch sizes share one pool.
One process only: under torchrun the engine steps eagerly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from core.device import pick_device
from core.errors import StudioError


def check_graphable(device: torch.device, world: int) -> None:
    """Refuse CUDA graphs where they cannot run, before anything is written."""
    if device.type != "cuda":
        raise StudioError("CUDA graphs need a CUDA GPU; drop --cuda-graphs or train with --device cuda.")
    if world > 1:
        raise StudioError("CUDA graphs run in one process; drop --cuda-graphs under torchrun.")


def training_device(name: str, cuda_graphs: bool, world: int = 1) -> torch.device:
    """The device a run (or a grid of runs) trains on, `core.device.pick_device`'s, refused before anything is
    written where it is not here or cannot run the CUDA graphs asked for."""
    device = pick_device(name)
    if cuda_graphs:
        check_graphable(device, world)
    return device


class GraphedSteps:
    """Call with a batch's indices (a device tensor) and the step's scalars by name; runs
    `step(indices, **scalars)` through CUDA graphs.

    `step` must be capturable (see the module text) and take, for each name in `scalars`, the 0-d device
    tensor this object owns under that name (PS-KD's alpha, the warm-up's share of the KD weight); each
    call writes the values it is given into them before the step runs.
    """

    def __init__(
        self,
        step: Callable[..., None],
        generator: torch.Generator,
        *,
        scalars: tuple[str, ...] = ("alpha",),
        warmup=2,
    ):
        self.device = generator.device
        check_graphable(self.device, 1)
        self.step, self.generator, self.warmup = step, generator, warmup
        self.scalars = {name: torch.zeros((), device=self.device) for name in scalars}
        self.stream = torch.cuda.Stream(self.device)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.eager_runs: dict[int, int] = {}
        self.pool = None

    def __call__(self, idx: torch.Tensor, **values: float) -> None:
        for name, value in values.items():
            self.scalars[name].fill_(value)
        n = idx.numel()
        if n in self.graphs:
            graph, static_idx = self.graphs[n]
            static_idx.copy_(idx, non_blocking=True)
            graph.replay()
            return
        current = torch.cuda.current_stream(self.device)
        if self.eager_runs.get(n, 0) < self.warmup:
            self.eager_runs[n] = self.eager_runs.get(n, 0) + 1
            self.stream.wait_stream(current)
            with torch.cuda.stream(self.stream):
                self.step(idx, **self.scalars)
            current.wait_stream(self.stream)
            return
        static_idx = idx.clone()  # outside the pool: it must outlive the capture
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self.generator)
        torch.cuda.synchronize(self.device)
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            self.step(static_idx, **self.scalars)
        self.pool = graph.pool()
        self.graphs[n] = (graph, static_idx)
        graph.replay()  # capture records the step without running it

    @property
    def captured(self) -> list[int]:
        """The batch sizes replayed from graphs so far."""
        return sorted(self.graphs)
