"""Train a classifier with TSS-KD (or a baseline) and `python -m core.train`.

One step, as in DESIGN.md: two independently augmented views v1, v2 of the batch; the teacher logits
are the same network on v1 under no_grad (train mode), the student logits the network on v2; loss =
CE + weight * distillation term; one optimizer step. Data sits on the training device as uint8 and is
augmented there in batches. Metrics are summed on the device and read once per epoch.

A run writes its directory (see core.runs) and never overwrites another. SIGINT/SIGTERM finish the
current step, save ``last.safetensors`` and mark the run ``stopped``; ``--resume RUN`` continues
from the saved step with the same data order and augmentation draws.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from core import calibration, config, distributed, health, ood, runs
from core.augment import TrainAugment
from core.config import OPTIMIZERS, PRESETS, DataConfig, TrainConfig  # noqa: F401 - re-exported
from core.data import load_dataset
from core.dataset import Dataset
from core.device import pick_device, precision
from core.errors import StudioError
from core.evaluate import auc, classification_metrics, predict_probs
from core.losses import METHODS, compute_loss, kd_curvature, kd_warmup_factor, ps_kd_alpha
from core.model import ModelSpec, build_model, save_model

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


def _lr_to_tensors(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Put each group's learning rate back into a device tensor (loading a checkpoint makes it a float)."""
    for group in optimizer.param_groups:
        group["lr"] = torch.tensor(float(group["lr"]), device=device)


def _match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (momentum, Adam's moments) its parameter's memory layout.
    Checkpoints store them contiguous, while the model's convolution weights are channels-last, and the
    fused optimizers refuse parameters and buffers of different layouts."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            slots = optimizer.state.get(p, {})
            for name, value in slots.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    slots[name] = torch.empty_like(p, dtype=value.dtype).copy_(value)


class ClassSampler:
    """CS-KD's partner draw: for each label, a random training image of the same class."""

    def __init__(self, labels: torch.Tensor):
        self.order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels)
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts

    def __call__(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(y.shape, generator=generator, device=y.device)
        offset = (u * self.counts[y]).long().clamp_max(self.counts[y] - 1)
        return self.order[self.starts[y] + offset]


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
    net, g, grp = state.net or state.model, state.generator, state.group
    method = METHODS[cfg.method]
    device = state.sums.device
    # Scalars as 0-d float32 tensors (fills, not host copies), eagerly as in a graph: Python floats would
    # take part in the arithmetic with more precision, and Adam turns that last bit into other weights.
    alpha, kd_scale = (
        v if isinstance(v, torch.Tensor) else torch.full((), v, device=device) for v in (alpha, kd_scale)
    )
    mine = slice(grp.rank, None, grp.world)
    x = train.images[idx].to(device, non_blocking=True)
    y = train.labels[idx].to(device, non_blocking=True)[mine]
    teacher = None
    autocast = torch.autocast(
        device.type, dtype=amp or torch.float32, enabled=amp is not None, cache_enabled=autocast_cache
    )
    with autocast:
        if method.teacher == "view":
            v1, v2 = aug(x, generator=g)[mine], aug(x, generator=g)[mine]
            with torch.no_grad():
                teacher = net(v1)
            z = net(v2)
        elif method.teacher == "class":
            partner = sampler(train.labels[idx].to(sampler.order.device), g)
            v1 = aug(train.images[partner].to(device, non_blocking=True), generator=g)[mine]
            v2 = aug(x, generator=g)[mine]
            with torch.no_grad():
                teacher = net(v1)
            z = net(v2)
        else:
            z = net(aug(x, generator=g)[mine])
    past = state.past_probs[idx[mine]] if state.past_probs is not None else None
    parts = compute_loss(
        cfg.method,
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
    teacher = METHODS[cfg.method].teacher
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


# ---- checkpoints for resume -------------------------------------------------------------------------


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
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, tmp, metadata={"resume": json.dumps(meta)})
    tmp.replace(path)


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
        _lr_to_tensors(state.optimizer, device)
    _match_param_layout(state.optimizer)
    state.generator.set_state(tensors["rng.aug"])
    if "state.past_probs" in tensors and state.past_probs is not None:
        state.past_probs.copy_(tensors["state.past_probs"].to(device))
    if "state.sums" in tensors:  # a checkpoint from before logit_spread and view_gap holds fewer sums
        saved = tensors["state.sums"].to(device)
        state.sums.zero_()[: len(saved)].copy_(saved)
    state.epoch, state.step = int(meta["epoch"]), int(meta["step"])
    state.best_score, state.best_epoch = float(meta["best_score"]), int(meta["best_epoch"])


# ---- the loop --------------------------------------------------------------------------------------


def _place(data: Dataset, device: torch.device) -> Dataset:
    """Put the whole dataset on the GPU when it takes under half the free memory; else keep it in RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if data.nbytes() < free // 2:
            return data.to(device)
        log.info("dataset (%.1f GB) kept in host memory; batches are copied to the GPU", data.nbytes() / 1e9)
    return data


def _validate(model, data: Dataset, cfg: TrainConfig, amp) -> tuple[float, float | None, float]:
    """Validation accuracy, macro AUC, and the share of the validation images given the most often
    predicted class (1.0: one answer for everything)."""
    probs = predict_probs(model, data.val.images, batch_size=cfg.eval_batch_size, amp_dtype=amp)
    labels = data.val.labels.to(probs.device)
    if not len(labels):
        return float("nan"), None, float("nan")
    pred = probs.argmax(1)
    acc = float((pred == labels).float().mean())
    top_share = float(torch.bincount(pred, minlength=probs.shape[1]).max()) / len(pred)
    return acc, auc(probs.cpu().numpy(), labels.cpu().numpy()), top_share


def model_extra(cfg: TrainConfig, run: Path, epoch: int, metrics: dict) -> dict:
    """What model.json says beyond the architecture: how the model was trained and how well it did."""
    return {
        "method": cfg.method,
        "temperatures": {"t_target": cfg.t_target, "t_nontarget": cfg.t_nontarget},
        "kd_weight": cfg.kd_weight,
        "rga": cfg.rga,
        "run": run.name,
        "epoch": epoch,
        "metrics": metrics,
        "config": config.to_record(cfg),
    }


def fit(
    cfg: TrainConfig,
    run: Path,
    data: Dataset,
    device: torch.device,
    *,
    stop: StopFlag,
    resume: bool,
    group: distributed.Group | None = None,
) -> str:
    """Train into `run`; return the final status ('done' or 'stopped'). Only rank 0 writes files."""
    group = group or distributed.Group()
    amp, why = precision(device, cfg.amp)
    log.info("precision: %s", why)
    if group.main:
        runs.set_status(
            run, "running", precision={"autocast": str(amp).removeprefix("torch.") if amp else None, "why": why}
        )
    spec = ModelSpec(arch=cfg.arch, classes=list(data.classes), image_size=data.image_size, channels=data.channels)
    data = _place(data, device)
    train = data.train
    graphs = cfg.cuda_graphs is not False and train.images.is_cuda and group.world == 1
    if cfg.cuda_graphs and not graphs:
        log.warning("CUDA graphs off: the training data is not in GPU memory, so batches come from the host")
    if device.type == "cuda":
        log.info("CUDA graphs %s", "on: each batch size is captured once, then replayed" if graphs else "off")
    state, sampler = new_state(cfg, spec, train, device, graphs=graphs)
    model = state.model
    state.group = group
    last = runs.Run(run).last_path
    if resume and last.is_file():
        load_last(last, state)
        if not group.main:
            state.sums.zero_()  # rank 0 carries the whole group's partial sums of an interrupted epoch
        log.info("resumed at epoch %d, step %d", state.epoch + 1, state.step)
    state.net = distributed.wrap(model, group, device)
    history: list[dict] = []
    if group.main:
        runs.truncate_metrics(run, state.epoch)
        history = runs.read_metrics(run)
    majority = health.majority_rate(data.val.labels)

    aug = cfg.augment(data.image_size)
    step = make_stepper(state, cfg, aug, train, amp=amp, sampler=sampler, graphs=graphs)
    slices = batches_per_epoch(len(train), cfg.batch_size, ranks=group.world)
    total = cfg.epochs * len(slices)
    model.train()
    while state.epoch < cfg.epochs:
        epoch = state.epoch
        order = epoch_order(len(train), seed=cfg.seed, epoch=epoch, device=train.images.device)
        alpha = ps_kd_alpha(epoch, cfg.epochs, alpha_final=cfg.ps_alpha)
        warm = kd_warmup_factor(epoch, cfg.kd_warmup)
        if state.step == 0:
            state.sums.zero_()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        seen_before = int(state.sums[4].item())
        stopping = False
        bar = tqdm(
            total=len(slices),
            initial=state.step,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=not (group.main and sys.stderr.isatty()),
            unit="batch",
        )
        while state.step < len(slices):
            a, b = slices[state.step]
            lr = set_lr(state.optimizer, cfg, epoch * len(slices) + state.step, total)
            step(order[a:b], alpha=alpha, kd_scale=warm)
            state.step += 1
            bar.update(1)
            stopping = distributed.any_(group, stop.requested)  # all ranks stop after the same step
            if stopping:
                break
        bar.close()
        if stopping and state.step < len(slices):
            distributed.sum_(group, state.sums)
            if group.main:
                save_last(last, state)
            log.info(
                "stopped at epoch %d, step %d/%d; resume with --resume %s", epoch + 1, state.step, len(slices), run
            )
            return "stopped"
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - t0
        distributed.sum_(group, state.sums)
        if not group.main:  # rank 0 validates and writes; the others go on to the next epoch
            state.epoch, state.step = epoch + 1, 0
            if stopping:
                return "stopped" if state.epoch < cfg.epochs else "done"
            continue
        sums = dict(zip(SUMS, state.sums.tolist(), strict=True))
        seen = max(sums["seen"], 1)
        loss, ce, kd = sums["loss"] / seen, sums["ce"] / seen, sums["kd"] / seen
        val_acc, val_auc, val_top_share = _validate(model, data, cfg, amp)
        row = {
            "epoch": epoch + 1,
            "train_loss": loss,
            "train_ce": ce,
            "train_kd": kd,
            "train_acc": sums["correct"] / seen,
            "val_acc": val_acc,
            "val_auc": val_auc,
            "lr": lr,
            "kd_weight": cfg.kd_weight * warm if METHODS[cfg.method].teacher in ("view", "class") else None,
            "val_top_class_share": val_top_share,
            "logit_spread": sums["logit_spread"] / seen,
            "view_gap": sums["view_gap"] / seen if METHODS[cfg.method].teacher == "view" else None,
            "images_per_s": (sums["seen"] - seen_before) / max(train_seconds, 1e-9),
            "seconds": time.perf_counter() - t0,
        }
        if device.type == "cuda":
            row["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        score = val_auc if val_auc is not None else val_acc
        if score > state.best_score:
            state.best_score, state.best_epoch = score, epoch + 1
            save_model(
                model,
                spec,
                runs.Run(run).model_path,
                extra=model_extra(cfg, run, epoch + 1, {"val_acc": val_acc, "val_auc": val_auc}),
            )
        state.epoch, state.step = epoch + 1, 0
        save_last(last, state)
        runs.append_metrics(run, row)
        runs.set_status(run, "running", epoch=epoch + 1, epochs=cfg.epochs, chance_acc=majority)
        history.append(row)
        _check_health(run, cfg, history, majority, len(data.val.labels))
        log.info(
            "epoch %d/%d  loss %.4f (ce %.4f, kd %.4f)  val acc %.4f auc %s  %.0f img/s  %.1fs",
            epoch + 1,
            cfg.epochs,
            loss,
            ce,
            kd,
            val_acc,
            "n/a" if val_auc is None else f"{val_auc:.4f}",
            row["images_per_s"],
            row["seconds"],
        )
        if stopping:
            return "stopped" if state.epoch < cfg.epochs else "done"
    return "done"


class CollapseError(StudioError):
    """A run ended by --stop-on-collapse."""


def _check_health(run: Path, cfg: TrainConfig, history: list[dict], majority: float, n_val: int) -> None:
    """Warn (status.json and the log) the first time the run looks collapsed; with `stop_on_collapse`,
    end it as failed with that reason."""
    warning = health.collapse_warning(history, majority, n_val)
    if warning is None:
        return
    if runs.add_warning(run, warning):
        log.warning("%s (epoch %d)", warning["message"], warning["epoch"])
    if cfg.stop_on_collapse:
        raise CollapseError(f"stopped on collapse at epoch {warning['epoch']}: {warning['message']}")


def finish(run: Path, data: Dataset, device: torch.device, cfg: TrainConfig) -> dict:
    """Score the best checkpoint on the test split, fit its calibration on the validation split and its
    out-of-distribution check on the training split, and record them in model.json; return the test metrics
    (uncalibrated). One float32 pass over each of val and test serves all three."""
    from core.model import load_model

    model, _, meta = load_model(run, device=device)
    splits = {"val": data.val, "test": data.test}
    passes = {k: ood.features(model, v.images, batch_size=cfg.eval_batch_size) for k, v in splits.items()}
    logits = {k: p["logits"] for k, p in passes.items()}
    labels = {k: v.labels.cpu() for k, v in splits.items()}
    test = classification_metrics(torch.softmax(logits["test"], 1).numpy(), labels["test"].numpy(), data.classes)
    meta["metrics"].update(
        test_acc=test["accuracy"],
        test_auc=test["auc"],
        test_balanced_accuracy=test["balanced_accuracy"],
        test_ece=test["ece"],
    )
    meta["calibration"] = calibration.calibration_record(logits, labels)  # temperature scaling on val
    try:  # the out-of-distribution check of Diagnose, fitted on train, its threshold on val
        meta["ood"] = ood.fit_and_save(model, run, data, passes["val"], passes["test"], batch_size=cfg.eval_batch_size)
    except StudioError as e:
        log.warning("no out-of-distribution check for this model: %s", e)
    runs.Run(run).write_model_meta(meta)
    return test


def _logging_to(run: Path) -> logging.Handler:
    handler = logging.FileHandler(runs.Run(run).log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.setLevel(logging.INFO)
    logging.getLogger("core").addHandler(handler)  # core.train and the data loaders propagate here, once
    return handler


def _resume_config(path: str, device: str | None) -> tuple[TrainConfig, Path]:
    run = Path(path)
    saved = runs.Run(run).config()
    if saved is None:
        raise StudioError(f"{run.name}: not a run folder (no readable config.json).")
    cfg = TrainConfig.from_dict(saved)
    return (replace(cfg, device=device) if device else cfg), run


def _check_resumable(run: Path) -> None:
    status = runs.Run(run).status()
    if status.get("status") == "done":
        raise StudioError(f"{run.name} has already finished; start a new run instead.")
    if status.get("status") == "running" and runs.pid_alive(status.get("pid")):
        raise StudioError(f"{run.name} is still running (process {status.get('pid')}).")


def run_training(cfg: TrainConfig, *, resume: str | None = None, stop: StopFlag | None = None) -> Path:
    """Validate, load the data, create (or reopen) the run directory and train. Returns the run path.

    User errors found before training (bad value, missing data) raise `StudioError` and leave no run
    directory behind. Errors during training mark the run `failed` with the reason and re-raise.
    Under torchrun every rank calls this; rank 0 alone checks and writes the run directory.
    """
    stop = stop or StopFlag()
    run = None
    if resume:
        cfg, run = _resume_config(resume, None if cfg.device == "auto" else cfg.device)
    cfg = cfg.resolved()
    pick_device(cfg.device)  # refuse a device that is not here before joining a group
    group = distributed.init(cfg.device)
    try:
        device = pick_device(distributed.rank_device(group, cfg.device))
        if cfg.cuda_graphs:
            from core.graphs import check_graphable

            check_graphable(device, group.world)
        if cfg.batch_size < 2 * group.world:
            raise StudioError(f"the batch size must be at least {2 * group.world} for {group.world} processes.")
        data = load_dataset(cfg.data)  # every rank, the same data

        def prepare() -> Path:
            if resume:
                _check_resumable(run)
                return run
            return runs.Run.create(cfg.runs_dir, cfg.name, config.to_record(cfg)).path

        run = distributed.share_outcome(group, prepare)
        return _train_in(run, cfg, data, device, stop=stop, resume=bool(resume), group=group)
    finally:
        distributed.finish(group)


def _method_settings(cfg: TrainConfig) -> tuple[str, float | None]:
    """The method's own settings for the log, and the KD term's curvature s when it distils (KD and CS-KD
    use one temperature, t_target)."""
    teacher = METHODS[cfg.method].teacher
    if teacher == "history":
        return f" (final alpha {cfg.ps_alpha})", None
    if teacher == "none":
        return "", None
    t_nontarget = cfg.t_nontarget if cfg.method == "tss-kd" else cfg.t_target
    s = kd_curvature(cfg.t_target, t_nontarget, kd_weight=cfg.kd_weight, scaling=cfg.kd_scaling)
    text = (
        f", T_target {cfg.t_target:g}, T_nontarget {t_nontarget:g}, KD weight {cfg.kd_weight:g}, "
        f"{cfg.kd_scaling} scaling (s = {s:.3g}), KD warm-up {cfg.kd_warmup} epochs"
        + (", preset " + cfg.preset if cfg.preset else "")
    )
    return text, s


def _train_in(run: Path, cfg: TrainConfig, data, device, *, stop, resume: bool, group) -> Path:
    main = group.main
    if main:
        runs.set_status(
            run, "running", pid=os.getpid(), epoch=0, epochs=cfg.epochs, device=str(device), processes=group.world
        )
    handler = _logging_to(run) if main else None
    try:
        settings, s = _method_settings(cfg)
        log.info(
            "run %s on %s%s: method %s%s, RGA %s",
            run.name,
            device,
            f" and {group.world - 1} more processes" if group.active else "",
            cfg.method,
            settings,
            "on" if cfg.rga else "off",
        )
        if s is not None and s > 10:
            log.warning(
                "the KD term's curvature is s = %.3g times classic KD's; trained from scratch such a run "
                "usually collapses to a constant output (the stable default is --kd-scaling nontarget)",
                s,
            )
        log.info("data: %s", json.dumps(data.summary()))
        for reason in data.skipped:
            log.warning("skipped unreadable file: %s", reason)
        outcome = fit(cfg, run, data, device, stop=stop, resume=resume, group=group)
        if not main:
            return run
        if outcome == "done":
            test = finish(run, data, device, cfg)
            meta = runs.Run(run).model_meta()
            warning = health.chance_warning(
                test["accuracy"],
                health.majority_rate(data.test.labels),
                len(data.test.labels),
                epoch=meta.get("epoch") or cfg.epochs,
            )
            if warning and runs.add_warning(run, warning):
                log.warning("%s", warning["message"])
            runs.set_status(
                run,
                "done",
                best_epoch=meta.get("epoch"),
                **{k: meta.get("metrics", {}).get(k) for k in ("val_acc", "val_auc", "test_acc", "test_auc")},
            )
            log.info("done: test accuracy %.4f, AUC %s", test["accuracy"], test["auc"])
        else:
            runs.set_status(run, "stopped")
    except BaseException as e:
        reason = (
            "out of GPU memory; lower --batch-size"
            if isinstance(e, torch.OutOfMemoryError)
            else (str(e) or type(e).__name__)
        )
        if main:
            log.error("failed: %s\n%s", reason, traceback.format_exc())
            runs.set_status(run, "failed", error=reason)
        raise
    finally:
        if handler is not None:
            logging.getLogger("core").removeHandler(handler)
            handler.close()
    return run


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default after its help; options whose default depends on others (None) say it in
    their own words instead of "(default: None)", and switches that are off unless given need none."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def get_args_parser() -> argparse.ArgumentParser:
    """The command line: one option per setting of `core.config`, and --resume."""
    ap = argparse.ArgumentParser(
        prog="python -m core.train",
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    config.add_arguments(ap)
    start = ap.add_mutually_exclusive_group()
    start.add_argument(
        "--resume", default=None, metavar="RUN", help="continue a stopped or killed run folder (its settings apply)"
    )
    start.add_argument(  # not --run: torchrun would take that for an abbreviation of its --run-path
        "--prepared",
        default=None,
        metavar="RUN",
        help="start a run folder the studio prepared (its settings apply)",
    )
    return ap


config_from_args = config.from_args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with `--preset NAME`'s settings as defaults: flags given explicitly still win."""
    ap = get_args_parser()
    args = ap.parse_args(argv)
    if args.preset:
        ap.set_defaults(**PRESETS[args.preset])
        args = ap.parse_args(argv)
    return args


def given_settings(argv: list[str] | None) -> dict:
    """The settings named on the command line, by field name, and nothing else (no defaults)."""
    ap = get_args_parser()
    for action in ap._actions:  # no defaults: only what was typed reaches the namespace
        action.default = argparse.SUPPRESS
    given = vars(ap.parse_args(argv))
    given.pop("resume", None)
    given.pop("prepared", None)
    return given


def resume_conflicts(run: str, given: dict) -> list[str]:
    """Flags given with --resume whose value differs from the run's own settings (--device may change:
    the same run can continue on another device). A resumed run keeps its settings, so these are refused."""
    saved = runs.Run(run).config()
    if not isinstance(saved, dict):
        return []  # run_training says the folder is not a run
    data_names = {f.name for f in fields(DataConfig)} - {"seed"}
    out = []
    for name, value in given.items():
        if name == "device":
            continue
        old = (saved.get("data") or {}).get(name) if name in data_names else saved.get(name)
        if value != old:
            out.append(f"--{name.replace('_', '-')} {value} (the run has {old})")
    return out


def check_prepared(path: str) -> None:
    """--prepared starts a prepared run: a folder with its config that has not trained yet."""
    run = runs.Run(path)
    if not run.exists():
        raise StudioError(f"{run.name}: not a run folder (no readable config).")
    if run.last_path.exists() or run.status().get("status") not in (None, "queued"):
        raise StudioError(f"{run.name} has started before; continue it with --resume.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.prepared:
        try:
            check_prepared(args.prepared)
        except StudioError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        args.resume = args.prepared  # the same path from here: the run's own settings, its folder
    if args.resume:
        changed = resume_conflicts(args.resume, given_settings(argv))
        if changed:
            print(
                "error: a resumed run keeps its own settings; these differ and would not apply: "
                + "; ".join(changed)
                + ". Start a new run to change them (--device may change).",
                file=sys.stderr,
            )
            return 2
    main_rank = os.environ.get("RANK", "0") == "0"
    if main_rank:  # under torchrun, rank 0 speaks for the group
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(console)
    log.setLevel(logging.INFO)
    stop = StopFlag()
    stop.install()
    try:
        run = run_training(config_from_args(args), resume=args.resume, stop=stop)
    except StudioError as e:
        if main_rank:
            print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # already recorded in the run's status.json and train.log
        if main_rank:
            print(f"error: training failed: {e}", file=sys.stderr)
        return 1
    if not main_rank:
        return 0
    status = runs.Run(run).status()
    print(
        json.dumps(
            {
                "run": str(run),
                "status": status.get("status"),
                **{k: status.get(k) for k in ("best_epoch", "val_auc", "test_acc", "test_auc")},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
