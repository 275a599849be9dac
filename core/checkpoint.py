"""Resume checkpoints: a run's whole training state (model, optimizer, augmentation RNG, loop position and
partial metric sums) in one safetensors file, ``last.safetensors`` of core.runs, written atomically after
every epoch and on stop. No pickles: the optimizer's layout goes to the file's metadata as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from core.engine import State
from core.model import write_safetensors


def save_last(path: Path, state: State) -> None:
    """Model, optimizer, RNG and loop position in one safetensors file (no pickles)."""
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in state.model.state_dict().items()}
    opt = state.optimizer.state_dict()
    for pid, slots in opt["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value.detach().contiguous().cpu()
    tensors["rng.aug"] = state.generator.get_state().cpu()
    if state.past_probs is not None:
        tensors["state.past_probs"] = state.past_probs.detach().cpu()
    if state.sums is not None:
        tensors["state.sums"] = state.sums.detach().cpu()
    meta = {
        "epoch": state.epoch,
        "step": state.step,
        "best_score": state.best_score,
        "best_epoch": state.best_epoch,
        "param_groups": [
            {k: float(v) if isinstance(v, torch.Tensor) else v for k, v in group.items()}
            for group in opt["param_groups"]
        ],
    }
    write_safetensors(path, tensors, metadata={"resume": json.dumps(meta)})


def load_last(path: Path, state: State) -> None:
    device = state.sums.device
    with safe_open(path, framework="pt") as f:
        meta = json.loads(f.metadata()["resume"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    state.model.load_state_dict(model_state, strict=True)
    opt_state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = v
    graphed = any(isinstance(g["lr"], torch.Tensor) for g in state.optimizer.param_groups)
    state.optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    if graphed:
        lr_to_tensors(state.optimizer, device)
    match_param_layout(state.optimizer)
    state.generator.set_state(tensors["rng.aug"])
    if "state.past_probs" in tensors and state.past_probs is not None:
        state.past_probs.copy_(tensors["state.past_probs"].to(device))
    if "state.sums" in tensors:  # a checkpoint from before logit_spread and view_gap holds fewer sums
        saved = tensors["state.sums"].to(device)
        state.sums.zero_()[: len(saved)].copy_(saved)
    state.epoch, state.step = int(meta["epoch"]), int(meta["step"])
    state.best_score, state.best_epoch = float(meta["best_score"]), int(meta["best_epoch"])


def lr_to_tensors(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Put each group's learning rate back into a device tensor (loading a checkpoint makes it a float)."""
    for group in optimizer.param_groups:
        group["lr"] = torch.tensor(float(group["lr"]), device=device)


def match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (momentum, Adam's moments) its parameter's memory layout.
    Checkpoints store them contiguous, while the model's convolution weights are channels-last, and the
    fused optimizers refuse parameters and buffers of different layouts."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            slots = optimizer.state.get(p, {})
            for name, value in slots.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    slots[name] = torch.empty_like(p, dtype=value.dtype).copy_(value)
