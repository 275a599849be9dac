"""Training methods as objects: each owns its teacher (what the network is compared with), its loss, the
settings it uses and how it describes itself, so a training step calls one thing and a new method is one
class here.

Teachers: ``none`` (plain cross-entropy), ``view`` (the same network on another augmented view of the same
images, under no_grad), ``class`` (the network on another image of the same class, CS-KD), ``history`` (the
network's own predictions of each image from the previous epoch, PS-KD). Every loss returns
``{"loss", "ce", "kd"}`` as in core.losses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.errors import StudioError
from core.losses import kd_curvature, kd_loss, soft_cross_entropy, tss_kd_loss, wide

# The settings that belong to one method or another (core.config); each method says which it uses.
KD_SETTINGS = ("t_target", "kd_weight", "kd_warmup")


@dataclass(frozen=True)
class LossSettings:
    """The settings a loss reads. `kd_weight` and `alpha` may be device tensors, so that a step captured in
    a CUDA graph reads their current values."""

    t_target: float = 4.0
    t_nontarget: float = 0.4
    kd_weight: float | torch.Tensor = 1.0
    alpha: float | torch.Tensor = 0.0
    kd_scaling: str = "paper"


@dataclass(frozen=True)
class Batch:
    """What a method's forward pass draws on in one step.

    `images` is the global batch (uint8, on the training device). `view(images)` is one augmented view of
    some images, cut to this process's share under torchrun; views are drawn from one generator, so the
    order of the calls is part of the method. `same_class()` (CS-KD only) draws, for each image, another
    training image of its class.
    """

    images: torch.Tensor
    view: Callable[[torch.Tensor], torch.Tensor]
    same_class: Callable[[], torch.Tensor] | None = None


class Method:
    """A training objective. Subclasses set the class attributes and override `forward` and `objective`."""

    name: str = ""
    teacher: str = "none"
    citation: str = ""
    uses: tuple[str, ...] = ()  # the method settings of core.config it reads
    t_target: float = 4.0  # published defaults, filled in by TrainConfig.resolved
    t_nontarget: float | None = None
    kd_weight: float = 1.0
    ps_alpha: float | None = None

    def forward(self, net: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(student logits with gradient, teacher logits or None) for one step."""
        return net(batch.view(batch.images)), None

    def loss(
        self,
        z: torch.Tensor,
        y: torch.Tensor,
        *,
        teacher_logits: torch.Tensor | None = None,
        past_probs: torch.Tensor | None = None,
        **settings,
    ) -> dict[str, torch.Tensor]:
        """The objective for one batch as ``{"loss", "ce", "kd"}``; `settings` are `LossSettings` fields."""
        ce = F.cross_entropy(wide(z), y)
        return self.objective(z, y, ce, teacher_logits, past_probs, LossSettings(**settings))

    def objective(self, z, y, ce, teacher_logits, past_probs, s: LossSettings) -> dict[str, torch.Tensor]:
        """What the method minimises, given the cross-entropy `ce` with the hard labels."""
        return {"loss": ce, "ce": ce, "kd": torch.zeros_like(ce)}

    def curvature(self, cfg) -> float | None:
        """The distillation term's curvature relative to classic KD's (core.losses.kd_curvature), or None
        for a method that does not distil from logits."""
        return None

    def describe(self, cfg) -> str:
        """The method's own settings of a resolved config, for the run's log."""
        return ""


class CrossEntropy(Method):
    name, citation = "ce", "Plain cross-entropy; no distillation."


class ViewKD(Method):
    """Classic KD from the same network on a second view of the batch (the teacher under no_grad)."""

    name, teacher, uses = "kd", "view", KD_SETTINGS
    citation = "Hinton, Vinyals, Dean. Distilling the knowledge in a neural network. arXiv:1503.02531, 2015."

    def forward(self, net, batch):
        v1, v2 = batch.view(batch.images), batch.view(batch.images)
        with torch.no_grad():
            teacher = net(v1)
        return net(v2), teacher

    def term(self, z, teacher_logits, y, *, t_target, t_nontarget, kd_scaling) -> torch.Tensor:
        """The distillation term before weighting."""
        return kd_loss(z, teacher_logits, temperature=t_target)

    def objective(self, z, y, ce, teacher_logits, past_probs, s):
        kd = self.term(z, teacher_logits, y, t_target=s.t_target, t_nontarget=s.t_nontarget, kd_scaling=s.kd_scaling)
        return {"loss": ce + s.kd_weight * kd, "ce": ce, "kd": kd}

    def temperatures(self, cfg) -> tuple[float, float]:
        """(target, non-target) temperature of the term: one temperature for classic KD."""
        return cfg.t_target, cfg.t_target

    def curvature(self, cfg):
        t, nt = self.temperatures(cfg)  # with one temperature both scalings are classic KD's T**2
        return kd_curvature(t, nt, kd_weight=cfg.kd_weight, scaling=cfg.kd_scaling)

    def describe(self, cfg):
        t, nt = self.temperatures(cfg)
        return (
            f", T_target {t:g}, T_nontarget {nt:g}, KD weight {cfg.kd_weight:g}, {cfg.kd_scaling} scaling "
            f"(s = {self.curvature(cfg):.3g}), KD warm-up {cfg.kd_warmup} epochs"
            + (", preset " + cfg.preset if cfg.preset else "")
        )


class ClassKD(ViewKD):
    """CS-KD: the teacher is the network on another training image of the same class."""

    name, teacher = "cs-kd", "class"
    citation = "Yun, Park, Lee, Shin. Regularizing class-wise predictions via self-knowledge distillation. CVPR 2020."

    def forward(self, net, batch):
        v1 = batch.view(batch.same_class())  # the partners are drawn first, then their view, then the batch's
        v2 = batch.view(batch.images)
        with torch.no_grad():
            teacher = net(v1)
        return net(v2), teacher


class TemperatureScalingKD(ViewKD):
    """TSS-KD: the target class softened with t_target, the others with t_nontarget (core.losses)."""

    name, uses, t_nontarget = "tss-kd", (*KD_SETTINGS, "t_nontarget", "kd_scaling"), 0.4
    citation = (
        "Liu et al. Be your own doctor: temperature scaling self-knowledge distillation for medical image "
        "classification. Neurocomputing 638 (2025) 130115."
    )

    def term(self, z, teacher_logits, y, *, t_target, t_nontarget, kd_scaling):
        return tss_kd_loss(z, teacher_logits, y, t_target=t_target, t_nontarget=t_nontarget, scaling=kd_scaling)

    def temperatures(self, cfg):
        return cfg.t_target, cfg.t_nontarget


class ProgressiveKD(Method):
    """PS-KD: cross-entropy with the one-hot label mixed with the network's previous-epoch prediction."""

    name, teacher, uses, ps_alpha = "ps-kd", "history", ("ps_alpha",), 0.8
    citation = "Kim, Ji, Yoon, Hwang. Self-knowledge distillation with progressive refinement of targets. ICCV 2021."

    def objective(self, z, y, ce, teacher_logits, past_probs, s):
        soft = soft_cross_entropy(z, past_probs)
        # (1 - a) * CE(onehot) + a * CE(past) == CE((1 - a) * onehot + a * past), PS-KD's target.
        return {"loss": (1 - s.alpha) * ce + s.alpha * soft, "ce": ce, "kd": soft}

    def describe(self, cfg):
        return f" (final alpha {cfg.ps_alpha})"


METHODS: dict[str, Method] = {
    m.name: m for m in (CrossEntropy(), ViewKD(), ClassKD(), ProgressiveKD(), TemperatureScalingKD())
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise StudioError(f"unknown method '{name}'; choose one of {', '.join(METHODS)}.")
    return METHODS[name]


def compute_loss(method: str, student_logits: torch.Tensor, targets: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
    """The objective of `method` for one batch, as ``{"loss", "ce", "kd"}`` (see `Method.loss`):
    `teacher_logits` for kd, cs-kd and tss-kd; `past_probs` (B, C) and `alpha` for ps-kd; `kd_scaling`
    (core.losses.kd_scale) matters to tss-kd only."""
    return get_method(method).loss(student_logits, targets, **kwargs)


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
