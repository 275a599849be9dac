"""The training loop's parts, the torchvision way: the state (`State`, `new_state`), one step
(`train_step`, `make_stepper`), one epoch (`train_one_epoch`) and validation (`validate`); core.train's
`fit` strings them together and core.checkpoint saves and restores the state.

One step, as in DESIGN.md: the method (core.methods) draws its views and teacher logits, computes its loss,
and one optimizer step follows. Data sits on the training device as uint8 and is augmented there in
batches. Metrics are summed on the device and read once per epoch.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from core import distributed, health
from core.augment import TrainAugment
from core.config import TrainConfig
from core.dataset import Dataset
from core.evaluate import auc, predict_probs
from core.methods import Batch, ClassSampler, get_method
from core.model import ModelSpec, build_model
from core.ood import features

log = logging.getLogger("core.train")


# What `train_step` adds up on the device over an epoch, in this order; each but `correct` and `seen`
# is weighted by the batch's image count, so dividing by `seen` gives the epoch's mean.
SUMS = ("loss", "ce", "kd", "correct", "seen", "logit_spread", "view_gap")


@dataclass
class State:
    """What changes during training and is saved for resume."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # augmentation draws, on the training device
    epoch: int = 0  # the epoch in progress (0-based)
    step: int = 0  # the next step within it
    best_score: float = -math.inf
    best_epoch: int = 0
    past_probs: torch.Tensor | None = None  # PS-KD: each training image's last prediction (N, C)
    sums: torch.Tensor | None = None  # SUMS in this epoch so far
    net: torch.nn.Module | None = None  # what a step calls: the model, or DDP around it under torchrun
    group: distributed.Group = field(default_factory=distributed.Group)


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it after each step."""

    def __init__(self):
        self.requested = False

    def install(self) -> None:
        def handler(signum, frame):
            self.requested = True
            signal.signal(signum, signal.SIG_DFL)  # a second signal ends the process at once

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


def batches_per_epoch(n: int, batch_size: int, *, ranks: int = 1) -> list[tuple[int, int]]:
    """(start, stop) slices over a shuffled epoch. Under torchrun each slice is cut to a multiple of the
    number of ranks, and a slice that would leave a rank fewer than two images is dropped (batch norm)."""
    size = min(batch_size, n)
    out = []
    for a in range(0, n, size):
        b = min(a + size, n)
        b -= (b - a) % ranks
        if b - a >= 2 * ranks:
            out.append((a, b))
    return out


def epoch_order(n: int, *, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The data order of one epoch, from (seed, epoch) alone, so a resumed run sees the same order."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


def set_lr(optimizer: torch.optim.Optimizer, cfg: TrainConfig, it: int, total: int) -> float:
    """Polynomial decay per iteration: lr * (1 - it / total) ** power. A learning rate held in a tensor
    (see `make_optimizer`) is overwritten in place, so a captured step reads the new value."""
    lr = cfg.lr * (1 - it / total) ** cfg.poly_power
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
    return lr


def make_optimizer(
    model: torch.nn.Module, cfg: TrainConfig, device: torch.device, *, graphs: bool = False
) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's) or Adam. With `graphs`, and always on CUDA, the learning rate lives
    in a device tensor that the optimizer reads without the host: fused SGD or fused, capturable Adam. A
    GPU run then steps with the same kernels eagerly as in a graph, so the two train alike; Adam in
    particular turns round-off differences between implementations into different weights."""
    if graphs or device.type == "cuda":
        lr = torch.tensor(cfg.lr, device=device)
        if cfg.optimizer == "adam":
            return torch.optim.Adam(
                model.parameters(), lr=lr, weight_decay=cfg.weight_decay, fused=True, capturable=True
            )
        sgd = {"momentum": cfg.momentum, "weight_decay": cfg.weight_decay}
        return torch.optim.SGD(model.parameters(), lr=lr, fused=True, **sgd)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def train_step(
    state: State,
    cfg: TrainConfig,
    aug: TrainAugment,
    train,
    idx,
    *,
    amp,
    alpha,
    sampler,
    kd_scale=1.0,
    autocast_cache=True,
) -> None:
    """One optimizer step on the global batch `train.images[idx]`; adds to `state.sums` (see `SUMS`)
    without syncing.

    Under torchrun every rank augments the whole global batch with the shared generator (so the views
    are those one process would draw) and trains on its slice ``[rank::world]``. `alpha` (PS-KD) and
    `kd_scale` (the warm-up's share of the KD weight) are floats or device tensors. Nothing here waits
    for the host, so the step can be captured in a CUDA graph (core.graphs), with `autocast_cache=False`.
    """
    net = state.net if state.net is not None else state.model  # a compiled module has no truth value
    g, grp = state.generator, state.group
    method = get_method(cfg.method)
    device = state.sums.device
    # Scalars as 0-d float32 tensors (fills, not host copies), eagerly as in a graph: Python floats would
    # take part in the arithmetic with more precision, and Adam turns that last bit into other weights.
    alpha, kd_scale = (
        v if isinstance(v, torch.Tensor) else torch.full((), v, device=device) for v in (alpha, kd_scale)
    )
    mine = slice(grp.rank, None, grp.world)
    x = train.images[idx].to(device, non_blocking=True)
    y = train.labels[idx].to(device, non_blocking=True)[mine]

    def same_class():
        partner = sampler(train.labels[idx].to(sampler.order.device), g)
        return train.images[partner].to(device, non_blocking=True)

    batch = Batch(x, lambda images: aug(images, generator=g)[mine], same_class if sampler is not None else None)
    autocast = torch.autocast(
        device.type, dtype=amp or torch.float32, enabled=amp is not None, cache_enabled=autocast_cache
    )
    with autocast:
        z, teacher = method.forward(net, batch)
    past = state.past_probs[idx[mine]] if state.past_probs is not None else None
    parts = method.loss(
        z,
        y,
        teacher_logits=teacher,
        past_probs=past,
        t_target=cfg.t_target,
        t_nontarget=cfg.t_nontarget,
        kd_weight=cfg.kd_weight * kd_scale,
        alpha=alpha,
        kd_scaling=cfg.kd_scaling,
    )
    state.optimizer.zero_grad(set_to_none=True)
    parts["loss"].backward()
    state.optimizer.step()
    if state.past_probs is not None:  # every rank keeps every image's last prediction
        order = torch.cat([idx[r :: grp.world] for r in range(grp.world)])
        state.past_probs[order] = distributed.gather_rows(grp, torch.softmax(z.detach().float(), dim=1))
    b = y.numel()
    with torch.no_grad():
        zf = z.detach().float()
        correct = (zf.argmax(1) == y).sum()
        spread = zf.std(dim=0).mean()  # across the batch: near 0 when the output no longer depends on the image
        gap = (teacher.float() - zf).abs().mean() if method.teacher == "view" else torch.zeros_like(spread)
        state.sums += torch.stack(
            [
                parts["loss"].detach() * b,
                parts["ce"].detach() * b,
                parts["kd"].detach() * b,
                correct.float(),
                torch.full((), float(b), device=device),  # a fill, not a copy from the host
                spread * b,
                gap * b,
            ]
        )


def new_state(cfg: TrainConfig, spec: ModelSpec, train, device: torch.device, *, graphs: bool = False):
    """A fresh training state for `cfg` on `device`, and CS-KD's class sampler (None for other methods):
    the model (seeded, channels-last), its optimizer, the augmentation generator and the metric sums."""
    torch.manual_seed(cfg.seed)
    model = build_model(spec, pretrained=cfg.pretrained).to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = model.to(memory_format=torch.channels_last)  # faster convolutions on GPUs and on oneDNN CPUs
    optimizer = make_optimizer(model, cfg, device, graphs=graphs)
    state = State(model, optimizer, torch.Generator(device=device).manual_seed(cfg.seed))
    state.sums = torch.zeros(len(SUMS), device=device)
    teacher = get_method(cfg.method).teacher
    if teacher == "history":
        state.past_probs = torch.nn.functional.one_hot(train.labels, len(spec.classes)).float().to(device)
    return state, (ClassSampler(train.labels) if teacher == "class" else None)


def make_stepper(state: State, cfg: TrainConfig, aug: TrainAugment, train, *, amp, sampler, graphs: bool = False):
    """`step(idx, alpha=...)`: one training step on `train.images[idx]`, eager or replayed from CUDA graphs."""
    if not graphs:
        return lambda idx, alpha=0.0, kd_scale=1.0: train_step(
            state, cfg, aug, train, idx, amp=amp, alpha=alpha, kd_scale=kd_scale, sampler=sampler
        )
    from core.graphs import GraphedSteps

    def capturable(idx, alpha, kd_scale):
        train_step(
            state, cfg, aug, train, idx, amp=amp, alpha=alpha, kd_scale=kd_scale, sampler=sampler, autocast_cache=False
        )

    return GraphedSteps(capturable, state.generator, scalars=("alpha", "kd_scale"))


def place(data: Dataset, device: torch.device) -> Dataset:
    """Put the whole dataset on the GPU when it takes under half the free memory; else keep it in RAM.
    Data already on the GPU stays where it is (a grid places it once for all its runs)."""
    if device.type == "cuda" and not data.train.images.is_cuda:
        free, _ = torch.cuda.mem_get_info(device)
        if data.nbytes() < free // 2:
            return data.to(device)
        log.info("dataset (%.1f GB) kept in host memory; batches are copied to the GPU", data.nbytes() / 1e9)
    return data


def validate(model, data: Dataset, cfg: TrainConfig, amp) -> tuple[tuple[float, float | None, float], dict | None]:
    """Validation accuracy, macro AUC, and the share of the validation images given the most often
    predicted class (1.0: one answer for everything); and, for a float32 pass, the pass itself
    (`core.ood.features`: the logits and the out-of-distribution check's features), which a run's end
    (`core.fit.finish`) reuses for the best epoch's model instead of a second pass over the split."""
    if amp is None:
        kept = features(model, data.val.images, batch_size=cfg.eval_batch_size)
        probs = torch.softmax(kept["logits"], dim=1) if len(kept["logits"]) else kept["logits"]
    else:  # the end scores in float32: this pass is not one it could use
        kept = None
        probs = predict_probs(model, data.val.images, batch_size=cfg.eval_batch_size, amp_dtype=amp)
    if not bool(torch.isfinite(probs).all()):
        raise health.Diverged("its outputs on the validation images are no longer finite numbers")
    labels = data.val.labels.to(probs.device)
    if not len(labels):
        return (float("nan"), None, float("nan")), kept
    pred = probs.argmax(1)
    acc = float((pred == labels).float().mean())
    top_share = float(torch.bincount(pred, minlength=probs.shape[1]).max()) / len(pred)
    return (acc, auc(probs.cpu().numpy(), labels.cpu().numpy()), top_share), kept


def train_one_epoch(
    state: State, step, slices: list[tuple[int, int]], order: torch.Tensor, cfg: TrainConfig, *, alpha, warm, stop
) -> tuple[float, bool]:
    """The rest of epoch `state.epoch` from step `state.step`: one `step` per slice of the shuffled `order`
    with the polynomial learning rate. Stops early, after the same step on every rank, when `stop` is
    requested. Returns (the last learning rate, whether it stopped early)."""
    epoch, total = state.epoch, cfg.epochs * len(slices)
    lr, stopping = float("nan"), False
    bar = tqdm(
        total=len(slices),
        initial=state.step,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        leave=False,
        disable=not (state.group.main and sys.stderr.isatty()),
        unit="batch",
    )
    while state.step < len(slices) and not stopping:
        a, b = slices[state.step]
        lr = set_lr(state.optimizer, cfg, epoch * len(slices) + state.step, total)
        step(order[a:b], alpha=alpha, kd_scale=warm)
        state.step += 1
        bar.update(1)
        stopping = distributed.any_(state.group, stop.requested)  # all ranks stop after the same step
    bar.close()
    return lr, stopping


def epoch_row(state: State, cfg: TrainConfig, *, lr: float, warm: float, val: tuple, images_per_s: float) -> dict:
    """The epoch's line of metrics.jsonl from the step sums (`SUMS`) and the validation result."""
    sums = dict(zip(SUMS, state.sums.tolist(), strict=True))
    seen = max(sums["seen"], 1)
    method = get_method(cfg.method)
    val_acc, val_auc, val_top_share = val
    return {
        "epoch": state.epoch + 1,
        "train_loss": sums["loss"] / seen,
        "train_ce": sums["ce"] / seen,
        "train_kd": sums["kd"] / seen,
        "train_acc": sums["correct"] / seen,
        "val_acc": val_acc,
        "val_auc": val_auc,
        "lr": lr,
        "kd_weight": cfg.kd_weight * warm if "kd_weight" in method.uses else None,
        "val_top_class_share": val_top_share,
        "logit_spread": sums["logit_spread"] / seen,
        "view_gap": sums["view_gap"] / seen if method.teacher == "view" else None,
        "images_per_s": images_per_s,
    }
